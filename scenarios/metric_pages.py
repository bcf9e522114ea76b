"""A metric history longer than one page of get_metric_history: 25,001 points. Clients since 2.x ask for
pages of 25,000 and follow page tokens; a 3.17.2 server honours that (two pages), a 2.22.5 server ignores it
(one page), and 1.x clients never page (one request). Logged with log_batch (1,000 per call); records keep
the history's size and digest."""

from mlflow.entities import Metric

from common import Window, expected_run, history_view, num, snapshot_run

REQUIRES = ()
# Costly (a write is 26 log_batch calls; each read moves 25,001 points: seconds per record and reader), so
# not in the default selection: run it with --scenarios metric_pages (or a profile that lists it).
DEFAULT = False

POINTS = 25_001  # MLflow's page size for get_metric_history is 25,000 (GET_METRIC_HISTORY_MAX_RESULTS)
BATCH = 1000  # the most metrics log_batch takes in one call
BASE_TS = 1_700_000_000_000


def history():
    return [[step, BASE_TS + step, num(step * 0.25)] for step in range(POINTS)]


def write(ctx):
    window = Window()
    client = ctx.client
    run_id = client.create_run(ctx.experiment("compat-metric-pages"), tags=ctx.tags).info.run_id
    points = history()
    for start in range(0, POINTS, BATCH):
        batch = [Metric("long", float(p[2]["float"]), p[1], p[0]) for p in points[start : start + BATCH]]
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    explicit = {
        "info": {"status": "FINISHED"},
        "tags": ctx.tags,
        "metric_history": {"long": history_view(points)},
        "metrics": {"long": points[-1][2]},
    }
    snap = expected_run(client, run_id, window, explicit, explicit_times=("metric_timestamps",))
    return {"run_id": run_id, "run": snap, "window": window.close()}


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
