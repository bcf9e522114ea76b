"""Runs scenario steps inside one client's venv: one process per client and step, however many scenarios.
Started as a script (MLFLOW_COMPAT_CLIENT_LAUNCH=spawn) or forked from scenarios/forkserver.py (main()).

    python driver.py write --plan PLAN.json --out OUT.json
        PLAN: {"scenarios": [{"name", "path", "options"}], "tags": {KEY: VALUE}}
        Each scenario's write(ctx) does its MLflow calls and returns the record of what it wrote.
    python driver.py read --plan PLAN.json --out OUT.json
        PLAN: {"records": [{"key", "scenario": {"name", "path", "options"}, "record"}]}
        Each scenario's read(ctx, record) reads the same things back and returns them in the record's shape.

OUT: {"ok": true, "client_version", "tracking_uri", "pid", "ppid", "results": {NAME or KEY: {"ok",
"record" | "observed", "error", "traceback", "seconds"}}}. One scenario raising does not stop the others;
the harness compares records with what was observed. No JSON at all means the client itself is broken
(an error of the environment).
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mlflow

from common import Context

_modules = {}


def load(path):
    if path not in _modules:
        name = "scenario_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[path] = module
    return _modules[path]


def attempt(key, call, field):
    started = time.monotonic()
    try:
        out = {"ok": True, field: call()}
    except Exception as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out["seconds"] = round(time.monotonic() - started, 3)
    return key, out


def write(plan, scratch):
    results = {}
    for scenario in plan["scenarios"]:
        module = load(scenario["path"])
        ctx = Context(plan.get("tags", {}), uuid.uuid4().hex[:10], scratch, scenario.get("options"))
        key, out = attempt(scenario["name"], lambda m=module, c=ctx: m.write(c), "record")
        results[key] = out
    return results


def read(plan, scratch):
    results = {}
    for item in plan["records"]:
        scenario = item["scenario"]
        module = load(scenario["path"])
        ctx = Context({}, uuid.uuid4().hex[:10], scratch, scenario.get("options"))
        key, out = attempt(item["key"], lambda m=module, c=ctx, r=item["record"]: m.read(c, r), "observed")
        results[key] = out
    return results


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["write", "read"])
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(args.plan) as fh:
        plan = json.load(fh)
    step = write if args.step == "write" else read
    result = {
        "ok": True,
        "client_version": mlflow.__version__,
        "tracking_uri": mlflow.get_tracking_uri(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
    result["results"] = step(plan, os.getcwd())
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
