"""Nested runs (a parent with children, found again by searching for the parent id) and log_batch with many
params, metrics and tags in one call. Parent and children are compared in full."""

import mlflow
from mlflow.entities import Metric, Param, RunTag

from common import Window, entity_view, expected_run, num, run_entity, snapshot_run

REQUIRES = ()

PARAMS = {f"p{i:03d}": f"value-{i}" for i in range(100)}
# 20 metrics, not 100: every reader fetches each metric's history, one request per metric.
METRICS = {f"m{i:03d}": i / 10 for i in range(20)}
TAGS = {f"t{i:02d}": f"tag-{i}" for i in range(50)}
TIMESTAMP = 1_700_000_000_000


def _by_param(run):
    return run["params"].get("child", "")


def write(ctx):
    window = Window()
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
    explicit = {
        "info": {"status": "FINISHED"},
        "params": PARAMS,
        "metrics": {k: num(v) for k, v in METRICS.items()},
        "metric_history": {k: [[0, TIMESTAMP, num(v)]] for k, v in METRICS.items()},
        "tags": {**ctx.tags, **TAGS},
    }
    parent_view = expected_run(client, parent_id, window, explicit, explicit_times=("metric_timestamps",))
    found = []
    for i, child_id in enumerate(children):
        sent = {
            "info": {"status": "FINISHED"},
            "params": {"child": str(i)},
            "tags": {"mlflow.parentRunId": parent_id},
        }
        found.append(entity_view(expected_run(client, child_id, window, sent)))
    return {
        "parent": parent_id,
        "experiment_id": parent.info.experiment_id,
        "run": parent_view,
        # The children are read as the search for the parent id returns them (info, every tag, params, latest
        # metrics; they log no metrics or artifacts): no order is promised, so a multiset, sorted by what each
        # child logged (its "child" param), never by an id a store generates at random.
        "children": sorted(found, key=_by_param),
        "window": window.close(),
    }


def read(ctx, record):
    client = ctx.client
    found = client.search_runs(
        [record["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{record['parent']}'"
    )
    children = sorted([run_entity(r) for r in found], key=_by_param)
    return {
        **record,
        "run": snapshot_run(client, record["parent"]),
        "children": children,
    }
