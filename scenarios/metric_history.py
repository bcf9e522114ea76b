"""Metric history: several steps with explicit timestamps, logged out of order; the full history is read
back, not just the latest value (which must be the value at the highest step)."""

from common import Window, expected_run, num, snapshot_run

REQUIRES = ()

BASE_TS = 1_700_000_000_000
LOSS = [(step, BASE_TS + 1000 * step, 1.0 / (2**step)) for step in range(6)]
# Logged out of order, and step 2 twice (two values at one step, different timestamps).
ACCURACY = [(3, BASE_TS + 3000, 0.9), (0, BASE_TS, 0.5), (2, BASE_TS + 2000, 0.8), (2, BASE_TS + 2500, 0.85)]


def points(history):
    return sorted(([s, t, num(v)] for s, t, v in history), key=lambda p: (p[0], p[1], p[2]["float"]))


def write(ctx):
    window = Window()
    client = ctx.client
    run = client.create_run(ctx.experiment("compat-metric-history"), tags=ctx.tags)
    run_id = run.info.run_id
    for key, history in (("loss", LOSS), ("accuracy", ACCURACY)):
        for step, ts, value in history:
            client.log_metric(run_id, key, value, timestamp=ts, step=step)
    client.set_terminated(run_id)
    explicit = {
        "info": {"status": "FINISHED"},
        "tags": ctx.tags,
        "metric_history": {"loss": points(LOSS), "accuracy": points(ACCURACY)},
        # The latest value is the one at the highest step (then the latest timestamp).
        "metrics": {"loss": num(LOSS[-1][2]), "accuracy": num(0.9)},
    }
    snap = expected_run(client, run_id, window, explicit, explicit_times=("metric_timestamps",))
    return {"run_id": run_id, "run": snap, "window": window.close()}


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
