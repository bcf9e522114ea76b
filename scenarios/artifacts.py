"""Artifacts beyond one text file: nested directories, a binary file and a file of several MB, listed
recursively and downloaded through the tracking server byte for byte."""

import os
import random

import mlflow

from common import Window, expected_run, file_meta, snapshot_run, write_tree

REQUIRES = ()

FILES = {
    "tree/README.txt": b"top level\n",
    "tree/a/b/leaf.json": b'{"nested": true, "depth": 2}\n',
    "tree/a/sibling.txt": "unicode: é ✓\n".encode(),
    "tree/binary.bin": bytes(range(256)) * 64,
    "tree/large.bin": random.Random(20261126).randbytes(6 * 1024 * 1024),
}


def write(ctx):
    window = Window()
    root = os.path.join(ctx.scratch, f"artifacts-{ctx.token}")
    write_tree(root, FILES)
    mlflow.set_experiment("compat-artifacts")
    with mlflow.start_run() as run:
        mlflow.set_tags(ctx.tags)
        mlflow.log_artifacts(os.path.join(root, "tree"), artifact_path="tree")
    run_id = run.info.run_id
    explicit = {
        "info": {"status": "FINISHED"},
        "tags": ctx.tags,
        "artifacts": {path: file_meta(data) for path, data in FILES.items()},
        "artifact_listing": {path: len(data) for path, data in FILES.items()},
    }
    # Every file is known from what was sent, so the writer does not list them back: a 3.x client cannot list
    # a subdirectory on a pre-3.0 server (declared), and that belongs to the read checks, not the write.
    snap = expected_run(ctx.client, run_id, window, explicit, artifacts=False)
    return {"run_id": run_id, "run": snap, "window": window.close()}


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
