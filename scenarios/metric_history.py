"""Metric history: several steps with explicit timestamps, logged out of order; the full history is read
back, not just the latest value (which must be the value at the highest step)."""

from common import metric_history

REQUIRES = ()

BASE_TS = 1_700_000_000_000
LOSS = [(step, BASE_TS + 1000 * step, 1.0 / (2**step)) for step in range(6)]
# Logged out of order, and step 2 twice (two values at one step, different timestamps).
ACCURACY = [(3, BASE_TS + 3000, 0.9), (0, BASE_TS, 0.5), (2, BASE_TS + 2000, 0.8), (2, BASE_TS + 2500, 0.85)]


def write(ctx):
    client = ctx.client
    run = client.create_run(ctx.experiment("compat-metric-history"), tags=ctx.tags)
    run_id = run.info.run_id
    for key, points in (("loss", LOSS), ("accuracy", ACCURACY)):
        for step, ts, value in points:
            client.log_metric(run_id, key, value, timestamp=ts, step=step)
    client.set_terminated(run_id)
    return {
        "run_id": run_id,
        "history": {
            "loss": sorted([s, t, v] for s, t, v in LOSS),
            "accuracy": sorted([s, t, v] for s, t, v in ACCURACY),
        },
        # The latest value is the one at the highest step (then the latest timestamp).
        "latest": {"loss": LOSS[-1][2], "accuracy": 0.9},
    }


def read(ctx, record):
    run_id = record["run_id"]
    return {
        "run_id": run_id,
        "history": {key: metric_history(ctx.client, run_id, key) for key in record["history"]},
        "latest": dict(ctx.client.get_run(run_id).data.metrics),
    }
