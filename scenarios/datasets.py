"""Datasets and inputs (2.4+): a pandas dataset logged as a run input with a context; read back from the
run's inputs: name, digest, source (type and JSON), schema, profile and the input's tags (the context)."""

import mlflow
import mlflow.data
import pandas as pd

from common import Window, expected_run, snapshot_run, sort_inputs

REQUIRES = ("log_input",)
DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def write(ctx):
    window = Window()
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    mlflow.set_experiment("compat-datasets")
    inputs = []
    with mlflow.start_run() as run:
        mlflow.set_tags(ctx.tags)
        for context in ("training", "evaluation"):
            # A name of its own per write: a server keeps one dataset per (experiment, name, digest), with the
            # source of the first write, so a shared name would compare this write with an earlier one's.
            dataset = mlflow.data.from_pandas(df, name=f"compat-{context}-{ctx.token}", targets="y")
            mlflow.log_input(dataset, context=context)
            d = dataset.to_dict()
            sent = {k: d[k] for k in DATASET_FIELDS if k in d}
            inputs.append({"dataset": sent, "tags": {"mlflow.data.context": context}})
    run_id = run.info.run_id
    # What the client sent is the expected dataset; the snapshot may carry fields to_dict() does not.
    snap = expected_run(ctx.client, run_id, window, {"info": {"status": "FINISHED"}, "tags": ctx.tags})
    got = {json_key(i): i for i in snap.get("inputs", {}).get("datasets", [])}
    datasets = []
    for item in inputs:
        seen = got.get(json_key(item), {"dataset": {}})
        datasets.append({"dataset": {**seen["dataset"], **item["dataset"]}, "tags": item["tags"]})
    snap.setdefault("inputs", {})["datasets"] = sort_inputs(datasets)
    return {"run_id": run_id, "run": snap, "window": window.close()}


def json_key(item):
    return (item["dataset"].get("name"), item["tags"].get("mlflow.data.context"))


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
