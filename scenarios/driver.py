"""Runs scenario steps inside one client's venv: one process per client and step, however many scenarios.
Started as a script (MLFLOW_COMPAT_CLIENT_LAUNCH=spawn) or forked from scenarios/forkserver.py (main()).

    python driver.py write --plan PLAN.json --out OUT.json
        PLAN: {"scenarios": [{"name", "path", "options", "token"?}], "tags": {KEY: VALUE}}
        Each scenario's write(ctx) does its MLflow calls and returns the record of what it wrote.
    python driver.py read --plan PLAN.json --out OUT.json
        PLAN: {"records": [{"key", "scenario": {"name", "path", "options"}, "record"}]}
        Each scenario's read(ctx, record) reads the same things back and returns them in the record's shape.

OUT: {"ok": true, "client_version", "tracking_uri", "pid", "ppid", "results": {NAME or KEY: {"ok",
"record" | "observed", "error", "traceback", "http", "seconds", "window"}}}. One scenario raising does not
stop the others; the harness compares records with what was observed. No JSON at all means the client itself
is broken (an error of the environment).

"http" is what the wire saw while a scenario ran: every HTTP exchange urllib3 made for it (so also each
retry that MLflow's client hides behind "Max retries exceeded ... too many 500 error responses"), as
{"method", "url", "status"} when the server answered, or {"method", "url", "error"} when no answer came back
(refused, reset, timed out). The harness decides from the last exchange before a failure whether the server
answered (MLflow's behaviour) or not (the machine's). "window" is the scenario's wall-clock [start, end] in
epoch milliseconds, for what servers generate at write time.
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

WIRE_KEPT = 20  # exchanges kept per scenario: the failing call and what led to it


class Wire:
    """Records every HTTP exchange of this process at urllib3's lowest request level (requests, boto3 and
    MLflow's own retries all pass through HTTPConnectionPool._make_request, in urllib3 1.x and 2.x)."""

    def __init__(self):
        self.exchanges = []
        self.count = 0

    def install(self):
        try:
            from urllib3 import connectionpool
        except ImportError:  # no urllib3, no HTTP: a file-store client, nothing to record
            return
        pool = connectionpool.HTTPConnectionPool
        if getattr(pool._make_request, "_compat_wire", False):
            return
        original = pool._make_request
        wire = self

        def _make_request(self, conn, method, url, *args, **kwargs):
            where = f"{self.scheme}://{self.host}:{self.port}{url.split('?', 1)[0]}"
            try:
                response = original(self, conn, method, url, *args, **kwargs)
            except BaseException as exc:
                wire.add({"method": method, "url": where, "error": f"{type(exc).__name__}: {exc}"})
                raise
            wire.add({"method": method, "url": where, "status": int(getattr(response, "status", 0) or 0)})
            return response

        _make_request._compat_wire = True
        pool._make_request = _make_request

    def add(self, exchange):
        self.count += 1
        self.exchanges.append(exchange)
        del self.exchanges[:-WIRE_KEPT]

    def reset(self):
        self.exchanges, self.count = [], 0

    def report(self):
        return {"count": self.count, "recent": list(self.exchanges)}


WIRE = Wire()


def load(path):
    if path not in _modules:
        name = "scenario_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[path] = module
    return _modules[path]


def attempt(key, call, field):
    started, wall = time.monotonic(), int(time.time() * 1000)
    WIRE.reset()
    try:
        out = {"ok": True, field: call()}
    except Exception as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        out["http"] = WIRE.report()
    out["seconds"] = round(time.monotonic() - started, 3)
    out["window"] = [wall, int(time.time() * 1000)]
    return key, out


def write(plan, scratch):
    results = {}
    for scenario in plan["scenarios"]:
        module = load(scenario["path"])
        # A fixed token (the differential pass gives both servers the same one) or a fresh one.
        token = scenario.get("token") or uuid.uuid4().hex[:10]
        ctx = Context(plan.get("tags", {}), token, scratch, scenario.get("options"))
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
    WIRE.install()
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
