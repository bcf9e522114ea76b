"""Nested runs (a parent with children, found again by searching for the parent id) and log_batch with many
params, metrics and tags in one call."""

import mlflow
from mlflow.entities import Metric, Param, RunTag

from common import user_tags

REQUIRES = ()

PARAMS = {f"p{i:03d}": f"value-{i}" for i in range(100)}
METRICS = {f"m{i:03d}": i / 10 for i in range(100)}
TAGS = {f"t{i:02d}": f"tag-{i}" for i in range(50)}
TIMESTAMP = 1_700_000_000_000


def write(ctx):
    mlflow.set_experiment(f"compat-nested-{ctx.token}")
    with mlflow.start_run() as parent:
        mlflow.set_tags(ctx.tags)
        children = []
        for i in range(3):
            with mlflow.start_run(nested=True) as child:
                mlflow.log_param("child", str(i))
                children.append(child.info.run_id)
    client = ctx.client
    parent_id = parent.info.run_id
    client.log_batch(
        parent_id,
        metrics=[Metric(k, v, TIMESTAMP, 0) for k, v in METRICS.items()],
        params=[Param(k, v) for k, v in PARAMS.items()],
        tags=[RunTag(k, v) for k, v in TAGS.items()],
    )
    return {
        "parent": parent_id,
        "experiment_id": parent.info.experiment_id,
        "children": sorted(children),
        "params": PARAMS,
        "metrics": METRICS,
        "tags": {**ctx.tags, **TAGS},
    }


def read(ctx, record):
    client = ctx.client
    parent = client.get_run(record["parent"])
    children = client.search_runs(
        [record["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{record['parent']}'"
    )
    return {
        "parent": record["parent"],
        "experiment_id": record["experiment_id"],
        "children": sorted(r.info.run_id for r in children),
        "params": dict(parent.data.params),
        "metrics": dict(parent.data.metrics),
        "tags": user_tags(parent.data.tags),
    }
