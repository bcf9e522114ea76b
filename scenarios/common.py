"""What every scenario shares: the context a step runs in, and one snapshot function per entity kind.

Runs inside a client's venv (MLflow 1.30.1 to 3.x, Python 3.8+) with nothing but mlflow and the standard
library. A snapshot is everything a user can read about one entity through the public client API (a run, an
experiment, a registered model, a model version, a 3.x logged model), as plain JSON in a canonical,
version-independent form: every float as ``{"float": repr(value)}`` (so NaN, +-inf, 1e-300 and 17-digit
values survive JSON and compare exactly), every multiset sorted, and each entity marked with ``"_kind"`` so
that harness/fields.py can remove the fields a version does not expose, by rule (harness/data/fields.toml).
An attribute the client does not have is left out of the snapshot, never filled in: the comparison then
reports it missing unless a rule names it.

A scenario's ``write`` takes the writer's own snapshot right after writing (the expected value of every
field the server generates: ids, generated names, times, artifact URIs, user ids) and lays what the client
sent explicitly over it (``expect``), so a server that stored something else is caught by every reader.
Server-generated times are checked for plausibility at write time, against the step's wall-clock window
(``Window``), which the record also carries (``"window"``). What does not live here: which fields a version
lacks (harness/data/fields.toml) and the comparison itself (harness/verify.py).
"""

import hashlib
import json
import os
import tempfile
import time

import mlflow
from mlflow.tracking import MlflowClient

# mlflow.note.content is the documented description tag, which scenarios do write.
DESCRIPTION = "mlflow.note.content"
# A history longer than this is kept as its size and digest in records (it is still read in full).
DIGEST_HISTORY_OVER = 1000
# Server and client share a clock (same host, or containers on it); this absorbs rounding to milliseconds.
CLOCK_SLACK_MS = 2000
# Marks a field that must not exist (a deleted tag), for ``expect``.
ABSENT = {"__absent__": True}


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


def now_ms():
    return int(time.time() * 1000)


class Window:
    """A write step's wall-clock window in epoch milliseconds: server-generated times must fall in it."""

    def __init__(self):
        self.start = now_ms()
        self.end = None

    def close(self):
        self.end = now_ms()
        return {"start": self.start, "end": self.end}

    def check(self, what, value):
        """Raise when a time the server (or client library) generated lies outside the window."""
        if value is None:
            return
        end = self.end if self.end is not None else now_ms()
        if not (self.start - CLOCK_SLACK_MS <= value <= end + CLOCK_SLACK_MS):
            raise AssertionError(
                f"implausible {what}: {value} is outside the write step's window [{self.start}, {end}] ms"
            )


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def write_tree(root, files):
    """``files`` ({relative path: bytes}) written under ``root``, directories made as needed."""
    for path, data in files.items():
        local = os.path.join(root, path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as fh:
            fh.write(data)


def file_meta(data):
    return {"size": len(data), "sha256": sha256(data)}


def num(value):
    """A float in canonical, comparable JSON form: its repr (nan, inf, -inf, 1e-300, 17 digits)."""
    return {"float": repr(float(value))}


def user_tags(tags):
    """Tags a user set: everything outside the mlflow.* namespace, plus the description."""
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.") or k == DESCRIPTION}


def trace_id(info):
    """A trace's id: 3.x names it trace_id, 2.x request_id."""
    return getattr(info, "trace_id", None) or info.request_id


def state_name(value):
    """An enum's name whatever its class's spelling ("OK" for TraceStatus.OK, TraceState.OK, "OK")."""
    value = getattr(value, "name", None) or str(value)
    return value.rsplit(".", 1)[-1]


def _enum_name(value):
    return getattr(value, "name", None) or (None if value is None else str(value))


# Optional text a client gives as None or as "" depending on its version (a 1.x client reads an unset
# status message as "", a 3.x client as None): one canonical form, "", so the version does not show.
TEXT = ("description", "status_message")


def _fields(entity, names):
    """The named attributes the entity has; an attribute the client does not have is left out."""
    out = {}
    for name in names:
        if hasattr(entity, name):
            value = getattr(entity, name)
            out[name] = "" if value is None and name in TEXT else value
    return out


def _tag_dict(tags):
    """Tags as {key: value}, whether the client gives a dict or a list of tag entities."""
    if tags is None:
        return {}
    if isinstance(tags, dict):
        return dict(tags)
    return {t.key: t.value for t in tags}


def expect(snapshot, explicit):
    """The expected record: ``snapshot`` (what the server generated) with ``explicit`` (what the client sent)
    laid over it, recursively; ``ABSENT`` deletes a key."""
    out = dict(snapshot)
    for key, value in explicit.items():
        if value == ABSENT:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and "float" not in value:
            out[key] = expect(out[key], value)
        else:
            out[key] = value
    return out


# -- artifacts -----------------------------------------------------------------------------------------
def _download(client, run_id, path, dst):
    if hasattr(mlflow, "artifacts") and hasattr(mlflow.artifacts, "download_artifacts"):
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst)
    return client.download_artifacts(run_id, path, dst)


def list_tree(client, run_id, path=None):
    """Every file under ``path`` in a run's artifacts, recursively: [(path, listed size)]."""
    files = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            files.extend(list_tree(client, run_id, info.path))
        else:
            files.append((info.path, info.file_size))
    return files


def artifact_tree(client, run_id, path=None, listing=None):
    """{path: {"size", "sha256"}} for every artifact file, each downloaded through the tracking server; the
    sizes the listing gave are added to ``listing`` ({path: size}) when one is passed."""
    tree = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (file_path, listed_size) in enumerate(list_tree(client, run_id, path)):
            if listing is not None:
                listing[file_path] = listed_size
            dst = os.path.join(tmp, str(i))
            os.mkdir(dst)
            with open(_download(client, run_id, file_path, dst), "rb") as fh:
                data = fh.read()
            tree[file_path] = file_meta(data)
    return tree


# -- runs ----------------------------------------------------------------------------------------------
RUN_INFO = ("run_id", "run_name", "experiment_id", "user_id", "status", "start_time", "end_time",
            "artifact_uri", "lifecycle_stage")  # fmt: skip


def history_points(metrics):
    """A metric history as a multiset of [step, timestamp, value], sorted canonically."""
    points = [[m.step, m.timestamp, num(m.value)] for m in metrics]
    return sorted(points, key=lambda p: (p[0], p[1], p[2]["float"]))


def sort_inputs(datasets):
    """Dataset inputs ({"dataset", "tags"}) in canonical order: a multiset."""
    return sorted(datasets, key=lambda i: json.dumps(i, sort_keys=True))


def history_view(points):
    """A history as records keep it: the points, or for a long one its size and digest."""
    if len(points) <= DIGEST_HISTORY_OVER:
        return points
    text = json.dumps(points, sort_keys=True, separators=(",", ":"))
    return {"points": len(points), "sha256": sha256(text.encode())}


def metric_history(client, run_id, key):
    """A metric's full history (every page) as a canonical multiset of [step, timestamp, value]."""
    return history_points(client.get_metric_history(run_id, key))


def _dataset(d):
    out = {"name": d.name, "digest": d.digest}
    out.update(_fields(d, ("source_type", "source", "schema", "profile")))
    return out


def _inputs(run):
    inputs = getattr(run, "inputs", None)
    if inputs is None:
        return None
    out = {}
    datasets = []
    for item in getattr(inputs, "dataset_inputs", None) or []:
        datasets.append({"dataset": _dataset(item.dataset), "tags": _tag_dict(item.tags)})
    out["datasets"] = sort_inputs(datasets)
    if hasattr(inputs, "model_inputs"):
        out["models"] = sorted(m.model_id for m in inputs.model_inputs or [])
    return out


def _outputs(run):
    outputs = getattr(run, "outputs", None)
    if outputs is None or not hasattr(outputs, "model_outputs"):
        return None
    return {"models": sorted([m.model_id, m.step] for m in outputs.model_outputs or [])}


def run_entity(run):
    """What a Run entity itself carries (a search result, or get_run before histories and artifacts):
    info, every tag (mlflow.* included), params, latest metrics, inputs and outputs."""
    snap = {
        "_kind": "run",
        "info": _fields(run.info, RUN_INFO),
        "tags": dict(run.data.tags),
        "params": dict(run.data.params),
        "metrics": {k: num(v) for k, v in run.data.metrics.items()},
    }
    inputs, outputs = _inputs(run), _outputs(run)
    if inputs is not None:
        snap["inputs"] = inputs
    if outputs is not None:
        snap["outputs"] = outputs
    return snap


def entity_view(snap):
    """A run snapshot cut down to what a Run entity carries (``run_entity``): a search result's view."""
    return {k: v for k, v in snap.items() if k not in ("metric_history", "artifacts", "artifact_listing")}


def snapshot_run(client, run_id, artifacts=True):
    """Everything a user reads about a run: info, every tag (mlflow.* included), params, latest metrics,
    each metric's full history, inputs and outputs, and the artifact listing with sizes and bytes."""
    run = client.get_run(run_id)
    snap = run_entity(run)
    snap["metric_history"] = {k: history_view(metric_history(client, run_id, k)) for k in run.data.metrics}
    if artifacts:
        listing = {}
        snap["artifacts"] = artifact_tree(client, run_id, listing=listing)
        snap["artifact_listing"] = listing
    return snap


def check_run_times(snap, window, explicit=()):
    """Raise when a run's generated times (start and end, metric timestamps) lie outside ``window``;
    ``explicit`` names the ones the client sent (those are checked by equality instead)."""
    info = snap["info"]
    for field in ("start_time", "end_time"):
        if field not in explicit:
            window.check(f"run.info.{field}", info.get(field))
    if "metric_timestamps" not in explicit:
        for key, points in snap.get("metric_history", {}).items():
            for point in points if isinstance(points, list) else []:
                window.check(f"run.metric_history[{key!r}] timestamp", point[1])


def expected_run(client, run_id, window, explicit=None, explicit_times=(), artifacts=True):
    """The writer's snapshot of a run, checked for plausible times, with what the client sent laid over."""
    snap = snapshot_run(client, run_id, artifacts=artifacts)
    check_run_times(snap, window, explicit_times)
    return expect(snap, explicit or {})


# -- experiments ---------------------------------------------------------------------------------------
EXPERIMENT = ("experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time",
              "last_update_time")  # fmt: skip


def snapshot_experiment(client, experiment_id):
    """An experiment as a user reads it: name, artifact location, lifecycle stage, tags and times."""
    return experiment_entity(client.get_experiment(experiment_id))


def experiment_entity(experiment):
    """An Experiment entity as a snapshot (get_experiment and search_experiments return the same one)."""
    snap = {"_kind": "experiment"}
    snap.update(_fields(experiment, EXPERIMENT))
    snap["tags"] = _tag_dict(experiment.tags)
    return snap


def expected_experiment(client, experiment_id, window, explicit=None):
    snap = snapshot_experiment(client, experiment_id)
    for field in ("creation_time", "last_update_time"):
        window.check(f"experiment.{field}", snap.get(field))
    return expect(snap, explicit or {})


# -- the model registry --------------------------------------------------------------------------------
MODEL_VERSION = ("name", "version", "creation_timestamp", "last_updated_timestamp", "description", "user_id",
                 "current_stage", "source", "run_id", "run_link", "status", "status_message")  # fmt: skip
REGISTERED_MODEL = ("name", "creation_timestamp", "last_updated_timestamp", "description")


def version_entity(v):
    snap = {"_kind": "model_version"}
    snap.update(_fields(v, MODEL_VERSION))
    snap["version"] = str(snap["version"])
    snap["tags"] = _tag_dict(getattr(v, "tags", None))
    if hasattr(v, "aliases"):
        snap["aliases"] = sorted(v.aliases or [])
    if hasattr(v, "model_id"):
        snap["model_id"] = v.model_id
    return snap


def snapshot_model_version(client, name, version):
    return version_entity(client.get_model_version(name, str(version)))


def snapshot_registered_model(client, name):
    """A registered model: its fields, tags, aliases and latest versions (a multiset: sorted by version)."""
    model = client.get_registered_model(name)
    snap = {"_kind": "registered_model"}
    snap.update(_fields(model, REGISTERED_MODEL))
    snap["tags"] = _tag_dict(getattr(model, "tags", None))
    if hasattr(model, "aliases"):
        snap["aliases"] = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    latest = [version_entity(v) for v in model.latest_versions or []]
    snap["latest_versions"] = sorted(latest, key=lambda v: int(v["version"]))
    return snap


def check_registry_times(snap, window):
    for field in ("creation_timestamp", "last_updated_timestamp"):
        window.check(f"{snap['_kind']}.{field}", snap.get(field))
    for v in snap.get("latest_versions", []):
        check_registry_times(v, window)


# -- 3.x logged models ---------------------------------------------------------------------------------
LOGGED_MODEL = ("model_id", "name", "experiment_id", "source_run_id", "model_type", "artifact_location",
                "status_message", "creation_timestamp", "last_updated_timestamp", "model_uri")  # fmt: skip


def snapshot_logged_model(model):
    """A logged model as a user reads it: every field, params, tags and metrics (each metric a point)."""
    snap = {"_kind": "logged_model"}
    snap.update(_fields(model, LOGGED_MODEL))
    snap["status"] = _enum_name(model.status)
    snap["params"] = dict(model.params or {})
    snap["tags"] = _tag_dict(model.tags)
    metrics = []
    for m in model.metrics or []:
        metrics.append([m.key, m.step, m.timestamp, num(m.value), getattr(m, "run_id", None)])
    snap["metrics"] = sorted(metrics, key=lambda p: json.dumps(p, sort_keys=True))
    return snap


# -- searches ------------------------------------------------------------------------------------------
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
