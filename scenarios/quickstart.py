"""The MLflow quickstart, as the docs show it, run by one client version against one tracking server.

Plain on purpose: it runs inside each MLflow version's own venv and needs nothing but mlflow.
The harness sets MLFLOW_TRACKING_URI and calls one of two steps:

  python quickstart.py write --out OUT.json [--tag KEY=VALUE ...]
      Runs the quickstart and reports what it wrote and the run id it got.
  python quickstart.py read --runs RUNS.json --out OUT.json
      Reads each listed run back through the server (params, metrics, tags, every artifact's bytes)
      and reports what it saw. The harness, not this script, compares it with what was written.

Either step writes {"ok": false, "error": ..., "traceback": ...} when an MLflow call raises, so the
harness can tell an incompatibility (the call failed) from a broken environment (no JSON at all).
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import traceback

import mlflow
from mlflow.tracking import MlflowClient

EXPERIMENT = "v2_migration_demo"
PARAMS = {"learning_rate": "0.01", "optimizer": "adam"}
METRICS = {"accuracy": 0.95}
ARTIFACT = "model_config.txt"
ARTIFACT_TEXT = "model_type: RandomForest\nn_estimators: 100\n"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def write(tags):
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.log_param("learning_rate", 0.01)
        mlflow.log_param("optimizer", "adam")
        mlflow.log_metric("accuracy", 0.95)
        mlflow.set_tags(tags)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, ARTIFACT)
            with open(path, "w") as fh:
                fh.write(ARTIFACT_TEXT)
            mlflow.log_artifact(path)
        run_id = run.info.run_id
        experiment_id = run.info.experiment_id
        artifact_uri = run.info.artifact_uri
    data = ARTIFACT_TEXT.encode()
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "experiment_name": EXPERIMENT,
        "artifact_uri": artifact_uri,
        "written": {
            "params": PARAMS,
            "metrics": METRICS,
            "tags": tags,
            "artifacts": {ARTIFACT: {"sha256": sha256(data), "size": len(data)}},
        },
    }


def list_files(client, run_id, path=None):
    files = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            files.extend(list_files(client, run_id, info.path))
        else:
            files.append(info.path)
    return files


def download(client, run_id, path, dst):
    if hasattr(mlflow, "artifacts") and hasattr(mlflow.artifacts, "download_artifacts"):
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst)
    return client.download_artifacts(run_id, path, dst)


def read_one(client, run_id):
    run = client.get_run(run_id)
    seen = {
        "found": True,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "artifact_uri": run.info.artifact_uri,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "artifacts": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for path in list_files(client, run_id):
            local = download(client, run_id, path, tmp)
            with open(local, "rb") as fh:
                data = fh.read()
            seen["artifacts"][path] = {"sha256": sha256(data), "size": len(data)}
    return seen


def read(run_ids):
    client = MlflowClient()
    runs = {}
    for run_id in run_ids:
        try:
            runs[run_id] = read_one(client, run_id)
        except Exception as exc:  # one unreadable run must not hide the others
            runs[run_id] = {
                "found": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
    return {"runs": runs}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    w = sub.add_parser("write")
    w.add_argument("--out", required=True)
    w.add_argument("--tag", action="append", default=[], help="KEY=VALUE tag set on the run")
    r = sub.add_parser("read")
    r.add_argument("--runs", required=True, help="JSON list of run ids")
    r.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = {"ok": True, "client_version": mlflow.__version__, "tracking_uri": mlflow.get_tracking_uri()}
    try:
        if args.step == "write":
            result.update(write(dict(t.split("=", 1) for t in args.tag)))
        else:
            with open(args.runs) as fh:
                result.update(read(json.load(fh)))
    except Exception as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
