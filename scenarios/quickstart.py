"""The MLflow quickstart as the docs show it: params, a metric, tags and one artifact in one run.

The baseline every client version runs: experiment v2_migration_demo, params learning_rate=0.01 and
optimizer=adam, metric accuracy=0.95, artifact model_config.txt.
"""

import os

import mlflow

from common import file_meta, run_view

REQUIRES = ()

EXPERIMENT = "v2_migration_demo"
ARTIFACT = "model_config.txt"
ARTIFACT_TEXT = "model_type: RandomForest\nn_estimators: 100\n"


def write(ctx):
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.log_param("learning_rate", 0.01)
        mlflow.log_param("optimizer", "adam")
        mlflow.log_metric("accuracy", 0.95)
        mlflow.set_tags(ctx.tags)
        path = os.path.join(ctx.scratch, ARTIFACT)
        with open(path, "w") as fh:
            fh.write(ARTIFACT_TEXT)
        mlflow.log_artifact(path)
    return {
        "run_id": run.info.run_id,
        "artifact_uri": run.info.artifact_uri,
        "run": {
            "status": "FINISHED",
            "params": {"learning_rate": "0.01", "optimizer": "adam"},
            "metrics": {"accuracy": 0.95},
            "tags": ctx.tags,
            "artifacts": {ARTIFACT: file_meta(ARTIFACT_TEXT.encode())},
        },
    }


def read(ctx, record):
    return {**record, "run": run_view(ctx.client, record["run_id"])}
