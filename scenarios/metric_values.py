"""Metric values at the edges of a double: NaN, +inf, -inf, a negative, 1e-300 and 17-significant-digit
values, logged one by one as a history (log_metric) and each under a key of its own (log_batch), with explicit
timestamps; read back exactly (every history and latest value)."""

import math

from mlflow.entities import Metric

from common import Window, expected_run, num, snapshot_run

REQUIRES = ()

BASE_TS = 1_700_000_000_000
VALUES = {
    "nan": float("nan"),
    "pos_inf": math.inf,
    "neg_inf": -math.inf,
    "negative": -2.5,
    "tiny": 1e-300,
    "digits17": 0.30000000000000004,
    "digits17_big": 1.2345678901234567e17,
}
# One metric stepping through every value (the history), and one metric per value (its latest value).
STEPPED = [(step, BASE_TS + step, value) for step, value in enumerate(VALUES.values())]


def write(ctx):
    window = Window()
    client = ctx.client
    run_id = client.create_run(ctx.experiment("compat-metric-values"), tags=ctx.tags).info.run_id
    for step, ts, value in STEPPED:
        client.log_metric(run_id, "stepped", value, timestamp=ts, step=step)
    client.log_batch(run_id, metrics=[Metric(key, value, BASE_TS, 0) for key, value in VALUES.items()])
    client.set_terminated(run_id)
    history = {key: [[0, BASE_TS, num(value)]] for key, value in VALUES.items()}
    history["stepped"] = [[s, t, num(v)] for s, t, v in STEPPED]
    explicit = {
        "info": {"status": "FINISHED"},
        "tags": ctx.tags,
        "metric_history": history,
        "metrics": {**{key: num(value) for key, value in VALUES.items()}, "stepped": num(STEPPED[-1][2])},
    }
    snap = expected_run(client, run_id, window, explicit, explicit_times=("metric_timestamps",))
    return {"run_id": run_id, "run": snap, "window": window.close()}


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
