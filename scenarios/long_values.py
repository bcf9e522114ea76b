"""Long values at the limits every server since 1.28 accepts: a 500-character param, a 5000-character tag,
a 250-character metric key, and unicode in all three."""

from common import user_tags

REQUIRES = ("param_value_500",)

PARAM = ("é" + "0123456789" * 50)[:500]
TAG = ("✓" + "abcdefghij" * 500)[:5000]
METRIC_KEY = "m" * 250


def write(ctx):
    client = ctx.client
    run_id = client.create_run(ctx.experiment("compat-long-values"), tags=ctx.tags).info.run_id
    client.log_param(run_id, "long_param", PARAM)
    client.set_tag(run_id, "long_tag", TAG)
    client.log_metric(run_id, METRIC_KEY, 1.5)
    client.set_terminated(run_id)
    return {
        "run_id": run_id,
        "params": {"long_param": PARAM},
        "tags": {**ctx.tags, "long_tag": TAG},
        "metrics": {METRIC_KEY: 1.5},
    }


def read(ctx, record):
    run = ctx.client.get_run(record["run_id"])
    return {
        "run_id": record["run_id"],
        "params": dict(run.data.params),
        "tags": user_tags(run.data.tags),
        "metrics": dict(run.data.metrics),
    }
