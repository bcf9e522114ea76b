"""Reads a sample of a seeded store back through a running MLflow server (harness/scale.py decides what and
compares it with what was seeded). Not a scenario: run by the harness in a version's venv as

    python scale_probe.py SPEC.json OUT.json      (MLFLOW_TRACKING_URI names the server)

SPEC: {"experiment_ids": [...], "search_max": N, "runs": {run_id: metric key}, "model_versions": [[name, v]]}.
OUT: the seconds of the first `search_runs` over the seeded experiments and how many runs it found, and per
sampled run its name, experiment, times, status, params, tags, latest metrics and the history of one key; per
model version its run, source, description and tags. A call that fails is written as {"error": text,
"answered": bool}: whether the server answered it (any HTTP status) or not at all.
Python 3.8+, mlflow and the stdlib only.
"""

import json
import sys
import time


def answered(exc):
    """Did the server answer (an HTTP status, whatever it was), or was there no answer at all?"""
    try:
        from mlflow.exceptions import RestException
    except ImportError:  # pragma: no cover - every supported version has it
        RestException = ()
    if RestException and isinstance(exc, RestException):
        return True
    text = str(exc)
    return "error code" in text or ("too many" in text and "error responses" in text)


def read_run(client, run_id, key):
    run = client.get_run(run_id)
    info = run.info
    history = client.get_metric_history(run_id, key)
    return {
        "name": getattr(info, "run_name", None) or run.data.tags.get("mlflow.runName"),
        "experiment_id": str(info.experiment_id),
        "start_time": info.start_time,
        "end_time": info.end_time,
        "status": info.status,
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
        "metrics": {k: repr(float(v)) for k, v in run.data.metrics.items()},
        "history": sorted([m.step, m.timestamp, repr(float(m.value))] for m in history),
    }


def read_version(client, name, version):
    mv = client.get_model_version(name, version)
    return {
        "run_id": mv.run_id,
        "source": mv.source,
        "description": mv.description,
        "tags": dict(getattr(mv, "tags", {}) or {}),
    }


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as fh:
        spec = json.load(fh)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    out = {"runs": {}, "model_versions": {}}
    try:
        started = time.time()
        found = client.search_runs(spec["experiment_ids"], max_results=spec["search_max"])
        out["search_seconds"] = round(time.time() - started, 3)
        out["search_count"] = len(found)
    except Exception as exc:  # recorded, classified by the harness
        out["error"] = {"call": "search_runs", "error": str(exc)[:2000], "answered": answered(exc)}
    for run_id, key in sorted(spec["runs"].items()):
        if "error" in out:
            break
        try:
            out["runs"][run_id] = read_run(client, run_id, key)
        except Exception as exc:
            out["error"] = {"call": "get_run " + run_id, "error": str(exc)[:2000], "answered": answered(exc)}
    for name, version in spec["model_versions"]:
        if "error" in out:
            break
        try:
            out["model_versions"][f"{name}/{version}"] = read_version(client, name, version)
        except Exception as exc:
            call = f"get_model_version {name}/{version}"
            out["error"] = {"call": call, "error": str(exc)[:2000], "answered": answered(exc)}
    with open(out_path, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
