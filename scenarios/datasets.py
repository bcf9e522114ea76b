"""Datasets and inputs (2.4+): a pandas dataset logged as a run input with a context; read back from the
run's inputs: name, digest, source type and context."""

import mlflow
import mlflow.data
import pandas as pd

REQUIRES = ("log_input",)


def _input(name, digest, source_type, context):
    return {"name": name, "digest": digest, "source_type": source_type, "context": context}


def write(ctx):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    mlflow.set_experiment("compat-datasets")
    inputs = []
    with mlflow.start_run() as run:
        mlflow.set_tags(ctx.tags)
        for context in ("training", "evaluation"):
            dataset = mlflow.data.from_pandas(df, name=f"compat-{context}", targets="y")
            mlflow.log_input(dataset, context=context)
            d = dataset.to_dict()
            inputs.append(_input(d["name"], d["digest"], d["source_type"], context))
    return {"run_id": run.info.run_id, "inputs": sorted(inputs, key=lambda i: i["context"])}


def read(ctx, record):
    run = ctx.client.get_run(record["run_id"])
    inputs = []
    for item in run.inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), None)
        d = item.dataset
        inputs.append(_input(d.name, d.digest, d.source_type, context))
    return {"run_id": record["run_id"], "inputs": sorted(inputs, key=lambda i: i["context"] or "")}
