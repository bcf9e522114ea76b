"""The rolling upgrade's background workload: one client version writing through every server it is told of,
until it is told to stop; and the read-back of everything it saw acknowledged. Not a scenario (no
write/read pair for the driver): harness/rolling.py starts it as a process of its own in a client's venv.

    python workload.py run --servers SERVERS.json --acks ACKS.jsonl --stop STOPFILE --name NAME
        SERVERS: {"servers": [{"name": "2.22.5", "url": "http://127.0.0.1:5001"}, ...]}, read again before
        every iteration (the harness adds the TO server once it is up). Until STOPFILE exists, each iteration
        creates a run in the workload's own experiment (made on the first iteration), logs params, a metric
        at three steps, a text artifact, and ends the run, on the next server in turn. Every request's outcome
        is one JSON line of ACKS, flushed as it happens:
        {"seq", "t" (epoch seconds when it was sent), "seconds", "workload", "client", "server", "url",
         "op", "ok", "experiment_id", "run_id", "values" (what was written)}
        and, when it failed: "answered" (the server sent an HTTP response), "status" (that response's HTTP
        status, or null), "message" (MLflow's error), "requests" (the HTTP exchanges of the operation).
    python workload.py verify --server URL --out OUT.json ACKS.jsonl [ACKS.jsonl ...]
        Reads every acknowledged write back through URL and writes {"client", "checked", "problems": [{"seq",
        "workload", "op", "server", "run_id", "problem", "answered"}]}: answered is null for a write that is
        missing or different, true/false for a read that failed with/without an HTTP answer.

Python 3.8+ syntax, mlflow and the standard library only (it runs in every client version's venv).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mlflow
from driver import Wire
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

EXPERIMENT_PREFIX = "compat-rolling-workload-"  # harness/rolling.py knows the workload's rows by it
METRIC_STEPS = 3
READS = ("search-runs", "get-run")  # operations that write nothing: answered right or wrong, never read back
WIRE = Wire()


class Acks:
    def __init__(self, path, name):
        self.fh = open(path, "a")  # noqa: SIM115 (open for the process's life, flushed per line)
        self.name = name
        self.seq = 0

    def write(self, entry):
        self.seq += 1
        entry = dict(entry, seq=self.seq, workload=self.name, client=mlflow.__version__)
        self.fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self.fh.flush()


def read_servers(path, last):
    """The servers to use right now; the last list read when the file is (briefly) absent or partial."""
    try:
        with open(path) as fh:
            servers = json.load(fh)["servers"]
    except (OSError, ValueError, KeyError):
        return last
    return servers or last


def attempt(acks, server, op, call, values, run_id=None, experiment_id=None):
    """Run one operation against ``server``, record its outcome; returns (ok, what the call returned)."""
    WIRE.reset()
    sent, started = time.time(), time.monotonic()
    entry = {
        "t": round(sent, 3),
        "server": server["name"],
        "url": server["url"],
        "op": op,
        "values": values,
        "run_id": run_id,
        "experiment_id": experiment_id,
    }
    try:
        got = call()
    except Exception as exc:
        exchanges = WIRE.report()["recent"]
        answered = [x for x in exchanges if "status" in x and x["status"] >= 400]
        unanswered = [x for x in exchanges if "status" not in x]
        if answered:
            status, heard = answered[-1]["status"], True
        elif unanswered:
            status, heard = None, False
        else:  # nothing went wrong on the wire: the client raised on its own (MLflow's behaviour)
            status, heard = None, True
        entry.update(
            ok=False,
            answered=heard,
            status=status,
            requests=exchanges,
            message=f"{type(exc).__name__}: {str(exc)[:2000]}",
        )
        entry["seconds"] = round(time.monotonic() - started, 3)
        acks.write(entry)
        return False, None
    entry.update(ok=True, seconds=round(time.monotonic() - started, 3))
    if op == "create-run":
        entry["run_id"] = got
    if op == "create-experiment":
        entry["experiment_id"] = got
    if op == "create-model-version":
        entry["values"] = dict(values, version=str(got))
    acks.write(entry)
    return True, got


def iteration(acks, server, state, i):
    url = server["url"]
    client = MlflowClient(tracking_uri=url)
    mlflow.set_tracking_uri(url)  # artifact repositories resolve mlflow-artifacts: URIs against it
    if state.get("experiment_id") is None:
        name = EXPERIMENT_PREFIX + state["name"] + "-" + state["token"]
        ok, got = attempt(
            acks, server, "create-experiment", lambda: client.create_experiment(name), {"name": name}
        )
        if not ok:
            return
        state["experiment_id"] = got
    exp = state["experiment_id"]
    start = int(time.time() * 1000)
    tags = {"compat.workload": state["name"], "compat.iteration": str(i)}
    ok, run_id = attempt(
        acks,
        server,
        "create-run",
        lambda: client.create_run(exp, start_time=start, tags=tags).info.run_id,
        {"start_time": start, "tags": tags},
        experiment_id=exp,
    )
    if not ok:
        return
    params = {"iteration": str(i), "server": server["name"], "token": uuid.uuid4().hex[:8]}
    attempt(
        acks,
        server,
        "log-params",
        lambda: client.log_batch(run_id, params=[Param(k, v) for k, v in sorted(params.items())]),
        {"params": params},
        run_id,
        exp,
    )
    for step in range(METRIC_STEPS):
        value = round(i + step / 10.0, 3)
        stamp = int(time.time() * 1000)
        attempt(
            acks,
            server,
            "log-metric",
            lambda v=value, t=stamp, s=step: client.log_metric(run_id, "loss", v, timestamp=t, step=s),
            {"key": "loss", "value": value, "timestamp": stamp, "step": step},
            run_id,
            exp,
        )
    path, text = f"workload/iteration-{i}.txt", "iteration {} through {}\n".format(i, server["name"])
    attempt(
        acks,
        server,
        "log-artifact",
        lambda: client.log_text(run_id, text, path),
        {"path": path, "text": text},
        run_id,
        exp,
    )
    end = int(time.time() * 1000)
    attempt(
        acks,
        server,
        "end-run",
        lambda: client.set_terminated(run_id, "FINISHED", end_time=end),
        {"status": "FINISHED", "end_time": end},
        run_id,
        exp,
    )
    attempt(acks, server, "search-runs", lambda: found_by_search(client, exp, i, run_id), {}, run_id, exp)
    model = EXPERIMENT_PREFIX + state["name"] + "-" + state["token"]
    if not state.get("model"):
        ok, _ = attempt(acks, server, "create-model", lambda: client.create_registered_model(model).name,
                        {"name": model})  # fmt: skip
        if not ok:
            return
        state["model"] = model
    ok, uri = attempt(acks, server, "get-run", lambda: artifact_uri(client, run_id), {}, run_id, exp)
    if not ok:
        return
    source = uri + "/workload"
    attempt(acks, server, "create-model-version",
            lambda: client.create_model_version(model, source, run_id=run_id).version,
            {"name": model, "source": source}, run_id, exp)  # fmt: skip


class WrongAnswer(Exception):
    """The server answered, but not with what was written (a read op of the workload)."""


def found_by_search(client, exp, i, run_id):
    runs = client.search_runs([exp], filter_string=f"tags.`compat.iteration` = '{i}'")
    ids = [r.info.run_id for r in runs]
    if ids != [run_id]:
        raise WrongAnswer(f"search_runs for iteration {i} returned {ids}, expected [{run_id}]")
    return len(ids)


def artifact_uri(client, run_id):
    run = client.get_run(run_id)
    if run.info.run_id != run_id:
        raise WrongAnswer(f"get_run({run_id}) returned run {run.info.run_id}")
    return run.info.artifact_uri


def run(args):
    acks = Acks(args.acks, args.name)
    state = {"name": args.name, "token": uuid.uuid4().hex[:8], "experiment_id": None}
    servers, i = [], 0
    while not os.path.exists(args.stop):
        servers = read_servers(args.servers, servers)
        if not servers:
            time.sleep(0.2)
            continue
        iteration(acks, servers[i % len(servers)], state, i)
        i += 1
        time.sleep(args.pause)
    return 0


# -- verify -------------------------------------------------------------------------------------------------
def load_acks(paths):
    out = []
    for path in paths:
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:  # a line cut short by a killed workload: never acknowledged
                        continue
    return [a for a in out if a.get("ok") and a.get("op") not in READS]


def check_ack(client, ack, runs, scratch):
    """What is wrong with one acknowledged write as read back now, or None."""
    op, values, run_id = ack["op"], ack["values"], ack.get("run_id")
    if op == "create-experiment":
        exp = client.get_experiment(ack["experiment_id"])
        if exp is None or exp.name != values["name"]:
            return "experiment {}: name {!r}, expected {!r}".format(
                ack["experiment_id"], exp and exp.name, values["name"]
            )
        return None
    if op == "create-model":
        model = client.get_registered_model(values["name"])
        return (
            None
            if model.name == values["name"]
            else "registered model {!r}, expected {!r}".format(model.name, values["name"])
        )
    if op == "create-model-version":
        mv = client.get_model_version(values["name"], values["version"])
        wrong = [f"{k} {got!r}, expected {want!r}"
                 for k, got, want in (("run_id", mv.run_id, run_id), ("source", mv.source, values["source"]))
                 if got != want]  # fmt: skip
        return "; ".join(wrong) or None
    if run_id not in runs:
        runs[run_id] = client.get_run(run_id)
    run = runs[run_id]
    if op == "create-run":
        problems = []
        if run.info.experiment_id != ack["experiment_id"]:
            problems.append(
                "experiment_id {!r}, expected {!r}".format(run.info.experiment_id, ack["experiment_id"])
            )
        if run.info.start_time != values["start_time"]:
            problems.append(
                "start_time {!r}, expected {!r}".format(run.info.start_time, values["start_time"])
            )
        for key, value in values["tags"].items():
            if run.data.tags.get(key) != value:
                problems.append(f"tag {key} {run.data.tags.get(key)!r}, expected {value!r}")
        return "; ".join(problems) or None
    if op == "log-params":
        wrong = [
            f"param {k} {run.data.params.get(k)!r}, expected {v!r}"
            for k, v in sorted(values["params"].items())
            if run.data.params.get(k) != v
        ]
        return "; ".join(wrong) or None
    if op == "log-metric":
        history = client.get_metric_history(run_id, values["key"])
        points = [(m.value, m.timestamp, m.step) for m in history]
        want = (values["value"], values["timestamp"], values["step"])
        if want not in points:
            return "metric {} (value, timestamp, step) {!r} missing from its history {!r}".format(
                values["key"], want, sorted(points)
            )
        return None
    if op == "log-artifact":
        dest = tempfile.mkdtemp(dir=scratch)
        try:
            local = client.download_artifacts(run_id, values["path"], dest)
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "No such file" in str(exc):
                return "artifact {} missing ({})".format(values["path"], str(exc)[:300])
            raise
        with open(local) as fh:
            text = fh.read()
        return (
            None
            if text == values["text"]
            else "artifact {} holds {!r}, expected {!r}".format(values["path"], text, values["text"])
        )
    if op == "end-run":
        problems = []
        if run.info.status != values["status"]:
            problems.append("status {!r}, expected {!r}".format(run.info.status, values["status"]))
        if run.info.end_time != values["end_time"]:
            problems.append("end_time {!r}, expected {!r}".format(run.info.end_time, values["end_time"]))
        return "; ".join(problems) or None
    return f"unknown operation {op!r}"


def verify(args):
    mlflow.set_tracking_uri(args.server)
    client = MlflowClient(tracking_uri=args.server)
    acks = load_acks(args.acks)
    runs, problems = {}, []
    scratch = tempfile.mkdtemp(prefix="workload-verify-")
    for ack in acks:
        where = {k: ack.get(k) for k in ("seq", "workload", "op", "server", "run_id", "values")}
        WIRE.reset()
        try:
            wrong = check_ack(client, ack, runs, scratch)
            answered = None
        except Exception as exc:
            exchanges = WIRE.report()["recent"]
            failed = [x for x in exchanges if "status" not in x or x["status"] >= 400]
            answered = not failed or "status" in failed[-1]
            status = failed[-1].get("status") if failed else None
            missing = status == 404 or "RESOURCE_DOES_NOT_EXIST" in str(exc)
            wrong = f"{type(exc).__name__}: {str(exc)[:1000]}"
            if missing:
                answered = None  # the server says it does not exist: the write is lost, not the read
                wrong = "not found: " + wrong
            elif status is not None:
                wrong = f"read answered HTTP {status}: {wrong}"
            else:
                wrong = "read failed: " + wrong + "\n" + traceback.format_exc(limit=3)
        if wrong:
            problems.append(dict(where, problem=wrong, answered=answered))
    with open(args.out, "w") as fh:
        json.dump(
            {"client": mlflow.__version__, "checked": len(acks), "problems": problems},
            fh,
            indent=2,
            sort_keys=True,
        )
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    r = sub.add_parser("run")
    r.add_argument("--servers", required=True)
    r.add_argument("--acks", required=True)
    r.add_argument("--stop", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--pause", type=float, default=0.2)
    v = sub.add_parser("verify")
    v.add_argument("--server", required=True)
    v.add_argument("--out", required=True)
    v.add_argument("acks", nargs="+")
    args = parser.parse_args(argv)
    WIRE.install()
    if args.mode == "run":
        return run(args)
    if args.mode == "verify":
        return verify(args)
    parser.error("a mode: run or verify")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
