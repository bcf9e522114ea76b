"""What every scenario shares: the context a step runs in, and version-tolerant ways to read things back.

Runs inside a client's venv with nothing but mlflow and the standard library. Reads go through public
client APIs only, and return plain JSON-able values so the harness can compare them with what was written.
"""

import hashlib
import os
import tempfile

import mlflow
from mlflow.tracking import MlflowClient

# Tags the client or server sets by itself (user, source, run name, ...): not part of what a scenario wrote.
# mlflow.note.content is the documented description tag, which scenarios do write.
DESCRIPTION = "mlflow.note.content"


class Context:
    """What a scenario step gets: a client, the writer's tags, a unique token and a scratch directory."""

    def __init__(self, tags, token, scratch, options=None):
        self.client = MlflowClient()
        self.tags = dict(tags)
        self.token = token
        self.scratch = scratch
        self.options = options or {}

    def experiment(self, name):
        """The id of experiment ``name``, created if it does not exist."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def user_tags(tags):
    """Tags a user set: everything outside the mlflow.* namespace, plus the description."""
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.") or k == DESCRIPTION}


def _download(client, run_id, path, dst):
    if hasattr(mlflow, "artifacts") and hasattr(mlflow.artifacts, "download_artifacts"):
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst)
    return client.download_artifacts(run_id, path, dst)


def list_tree(client, run_id, path=None):
    """Every file under ``path`` in a run's artifacts, recursively: [(path, size)]."""
    files = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            files.extend(list_tree(client, run_id, info.path))
        else:
            files.append((info.path, info.file_size))
    return files


def artifact_tree(client, run_id, path=None):
    """{path: {"size", "sha256"}} for every artifact file, each downloaded through the tracking server."""
    tree = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (file_path, _listed_size) in enumerate(list_tree(client, run_id, path)):
            dst = os.path.join(tmp, str(i))
            os.mkdir(dst)
            with open(_download(client, run_id, file_path, dst), "rb") as fh:
                data = fh.read()
            tree[file_path] = {"size": len(data), "sha256": sha256(data)}
    return tree


def file_meta(data):
    return {"size": len(data), "sha256": sha256(data)}


def metric_history(client, run_id, key):
    """A metric's full history as [step, timestamp, value], ordered by step then timestamp."""
    return sorted([m.step, m.timestamp, m.value] for m in client.get_metric_history(run_id, key))


def run_view(client, run_id):
    """A run as a user sees it: status, params, latest metrics, user tags and artifact files."""
    run = client.get_run(run_id)
    return {
        "status": run.info.status,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": user_tags(run.data.tags),
        "artifacts": artifact_tree(client, run_id),
    }


def search_all_runs(
    client, experiment_ids, filter_string="", order_by=None, page_size=None, run_view_type=None
):
    """Every run a search returns, following page tokens; returns (runs, pages)."""
    runs, pages, token = [], 0, None
    while True:
        kwargs = {"filter_string": filter_string, "order_by": order_by, "page_token": token}
        if run_view_type is not None:
            kwargs["run_view_type"] = run_view_type
        if page_size:
            kwargs["max_results"] = page_size
        page = client.search_runs(experiment_ids, **kwargs)
        runs.extend(page)
        pages += 1
        token = getattr(page, "token", None)
        if not token or not page_size:
            return runs, pages
