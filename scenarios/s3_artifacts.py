"""Artifacts in the cell's S3 bucket behind the tracking server: a small nested tree and a file above the
multipart threshold, uploaded as a proxied multipart upload where the client has it (2.9 and later), listed
and downloaded byte for byte by every client, before and after the upgrade.

Only in cells whose servers keep artifacts in S3 (`--artifact-store s3`: NEEDS). A client that has
MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD (capability `proxy_multipart_upload`, harness/data/versions.toml) sets
it around the upload of the large file only, with MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE and
MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE at S3's smallest part (5 MiB) so that a 6 MiB file goes up in two parts:
the client asks the server to start the upload, PUTs each part to the URL the server presigned, and asks
it to complete. Older clients upload the same file in one request. Every read downloads every file through
the server and compares its SHA-256 with what was sent, so an object changed in the bucket fails the read.
"""

import contextlib
import os
import random

import mlflow

from common import Window, expect, expected_run, file_meta, snapshot_run, write_tree

REQUIRES = ()
NEEDS = ("s3",)

PART = 5 * 1024 * 1024  # S3's smallest part size (moto enforces it like S3), for every part but the last
LARGE = "s3/parts/large.bin"
FILES = {
    "s3/notes.txt": b"artifacts kept in S3\n",
    "s3/nested/deeper/config.json": b'{"bucket": true}\n',
    LARGE: random.Random(20261129).randbytes(PART + 1024 * 1024 + 7),  # two parts
}
MULTIPART = {
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(PART),
    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(PART),
}


def has_proxy_multipart():
    """Whether this client can upload through the server in parts (MLflow 2.9.0 added the setting)."""
    try:
        from mlflow import environment_variables
    except ImportError:
        return False
    return hasattr(environment_variables, "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD")


@contextlib.contextmanager
def environment(settings):
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_view(client, experiment_id):
    """Where an experiment keeps its runs' artifacts (an s3:// or mlflow-artifacts: location, fixed when it
    was created), with its name and stage: what every version's Experiment has."""
    experiment = client.get_experiment(experiment_id)
    return {
        "name": experiment.name,
        "artifact_location": experiment.artifact_location,
        "lifecycle_stage": experiment.lifecycle_stage,
    }


def write(ctx):
    window = Window()
    root = os.path.join(ctx.scratch, f"s3-{ctx.token}")
    write_tree(root, FILES)
    multipart = has_proxy_multipart()
    name = f"compat-s3-artifacts-{ctx.token}"
    experiment_id = ctx.experiment(name)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags(ctx.tags)
        for path in FILES:
            if path == LARGE:
                continue
            mlflow.log_artifact(os.path.join(root, path), artifact_path=os.path.dirname(path))
        with environment(MULTIPART if multipart else {}):
            mlflow.log_artifact(os.path.join(root, LARGE), artifact_path=os.path.dirname(LARGE))
    run_id = run.info.run_id
    explicit = {
        "info": {"status": "FINISHED", "experiment_id": experiment_id},
        "tags": ctx.tags,
        "artifacts": {path: file_meta(data) for path, data in FILES.items()},
        "artifact_listing": {path: len(data) for path, data in FILES.items()},
    }
    snap = expected_run(ctx.client, run_id, window, explicit, artifacts=False)
    sent = {"name": name, "lifecycle_stage": "active"}
    return {
        "run_id": run_id,
        "run": snap,
        "experiment_id": experiment_id,
        "experiment": expect(experiment_view(ctx.client, experiment_id), sent),
        "multipart": multipart,
        "window": window.close(),
    }


def read(ctx, record):
    return {
        **record,
        "run": snapshot_run(ctx.client, record["run_id"]),
        "experiment": experiment_view(ctx.client, record["experiment_id"]),
    }
