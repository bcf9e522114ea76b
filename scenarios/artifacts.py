"""Artifacts beyond one text file: nested directories, a binary file and a file of several MB, listed
recursively and downloaded through the tracking server byte for byte."""

import os
import random

import mlflow

from common import artifact_tree, file_meta

REQUIRES = ()

FILES = {
    "tree/README.txt": b"top level\n",
    "tree/a/b/leaf.json": b'{"nested": true, "depth": 2}\n',
    "tree/a/sibling.txt": "unicode: é ✓\n".encode(),
    "tree/binary.bin": bytes(range(256)) * 64,
    "tree/large.bin": random.Random(20261126).randbytes(6 * 1024 * 1024),
}


def write(ctx):
    root = os.path.join(ctx.scratch, f"artifacts-{ctx.token}")
    for path, data in FILES.items():
        local = os.path.join(root, path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as fh:
            fh.write(data)
    mlflow.set_experiment("compat-artifacts")
    with mlflow.start_run() as run:
        mlflow.set_tags(ctx.tags)
        mlflow.log_artifacts(os.path.join(root, "tree"), artifact_path="tree")
    return {"run_id": run.info.run_id, "files": {path: file_meta(data) for path, data in FILES.items()}}


def read(ctx, record):
    return {"run_id": record["run_id"], "files": artifact_tree(ctx.client, record["run_id"])}
