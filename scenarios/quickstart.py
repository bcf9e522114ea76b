"""The MLflow quickstart as the docs show it: params, a metric, tags and one artifact in one run.

The baseline every client version runs: experiment v2_migration_demo, params learning_rate=0.01 and
optimizer=adam, metric accuracy=0.95, artifact model_config.txt. The whole run is compared (info, every tag,
metric history, artifact listing and bytes), not only what the quickstart logged.
"""

import os

import mlflow

from common import Window, expected_run, file_meta, num, snapshot_run

REQUIRES = ()

EXPERIMENT = "v2_migration_demo"
ARTIFACT = "model_config.txt"
ARTIFACT_TEXT = "model_type: RandomForest\nn_estimators: 100\n"


def write(ctx):
    window = Window()
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
    run_id = run.info.run_id
    explicit = {
        "info": {"status": "FINISHED", "lifecycle_stage": "active", "run_id": run_id},
        "params": {"learning_rate": "0.01", "optimizer": "adam"},
        "metrics": {"accuracy": num(0.95)},
        "tags": ctx.tags,
        "artifacts": {ARTIFACT: file_meta(ARTIFACT_TEXT.encode())},
    }
    return {
        "run_id": run_id,
        "run": expected_run(ctx.client, run_id, window, explicit),
        "window": window.close(),
    }


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
