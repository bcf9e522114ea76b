"""Long values at the limits every server since 1.28 accepts: a 500-character param, a 5000-character tag,
a 250-character metric key, and unicode in all three."""

from common import Window, expected_run, num, snapshot_run

REQUIRES = ("param_value_500",)

PARAM = ("é" + "0123456789" * 50)[:500]
TAG = ("✓" + "abcdefghij" * 500)[:5000]
METRIC_KEY = "m" * 250


def write(ctx):
    window = Window()
    client = ctx.client
    run_id = client.create_run(ctx.experiment("compat-long-values"), tags=ctx.tags).info.run_id
    client.log_param(run_id, "long_param", PARAM)
    client.set_tag(run_id, "long_tag", TAG)
    client.log_metric(run_id, METRIC_KEY, 1.5)
    client.set_terminated(run_id)
    explicit = {
        "info": {"status": "FINISHED"},
        "params": {"long_param": PARAM},
        "tags": {**ctx.tags, "long_tag": TAG},
        "metrics": {METRIC_KEY: num(1.5)},
    }
    return {"run_id": run_id, "run": expected_run(client, run_id, window, explicit), "window": window.close()}


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
