"""Rolling upgrades (`--rolling`): old and new servers on one store at once, with writers running throughout.

Teams behind a load balancer upgrade one replica at a time. For the first hop of a rolling cell (database
server backends), after the hop's backup and the unupgraded-start probe (which restores that backup), this
module runs the stretch:

  FROM server starts on the store; a workload per client version of the cell (scenarios/workload.py, in that
  client's venv, with the cell features' client environment) writes runs, params, metrics, artifacts through
  it; `mlflow db upgrade` and the integrity check run under it (the cell's own steps); the TO server starts
  on the same store while the FROM server still serves, and the workloads alternate between both for
  BOTH_SERVERS_S; then the workloads stop, the FROM server stops, and every write either server
  acknowledged is read back through the TO server (`workload.py verify`, with the TO version's client).

Checks: `rolling-acked` (every acknowledged write read back, else each lost or changed one named; never
declared), `rolling-old-server` (the FROM server answered every request correctly, else its failures,
grouped by operation, status and message, with the first and last time relative to the start of `mlflow db
upgrade`), `rolling-new-server` (the same for the TO server); `components["rolling"]`: requests per server and
outcome, and the stretch's timeline. The integrity check of a rolling hop leaves out exactly the workload's
rows (`without_workload`): they change under it by design.

What does not live here: the timeline around the stretch and the schema steps themselves (harness/cell.py),
how a server starts (harness/runtime), what the workload does on the wire (scenarios/workload.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness import procs
from harness.backends import Store
from harness.clients import CLIENT_RETRIES
from harness.envs import Env
from harness.integrity import Snapshot, Table
from harness.paths import SCENARIOS_DIR
from harness.plan import CellPlan
from harness.results import CellResult, Check, Problem, Status
from harness.rundir import CellDir
from harness.runtime import RunningServer
from harness.versions import MlflowVersion

WORKLOAD = SCENARIOS_DIR / "workload.py"
EXPERIMENT_PREFIX = "compat-rolling-workload-"  # scenarios/workload.py names its experiments so
READS = ("search-runs", "get-run")  # the workload's operations that write nothing (never read back)
BOTH_SERVERS_S = 6.0  # how long the workloads write through both servers
FIRST_ACK_S = 120.0  # the workloads' first acknowledged writes before the upgrade starts (import + requests)
STOP_GRACE_S = 150.0  # a request in flight may wait on a lock: MLflow's request timeout (below) and some
VERIFY_TIMEOUT_S = 600.0
# Every request once (a failure is recorded, not retried away); a request may wait on a migration's locks.
WORKLOAD_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}
_IDS = re.compile(r"\b[0-9a-f]{32}\b|\b\d{10,}\b")  # run ids, epoch-millisecond times: vary per request


# -- the workload's rows, left out of a rolling hop's integrity check --------------------------------------
def without_workload(snap: Snapshot) -> Snapshot:
    """``snap`` without the workload's experiments and registered model (named with EXPERIMENT_PREFIX, in any
    table with a name column: its model versions too) and every row of theirs or of their runs (any table with
    an experiment_id, run_uuid or run_id column): nothing else is left out."""
    experiments = snap.tables.get("experiments")
    if experiments is None:
        return snap
    exp_ids = {r["experiment_id"] for r in experiments.rows.values()
               if str(r.get("name") or "").startswith(EXPERIMENT_PREFIX)}  # fmt: skip
    runs = snap.tables.get("runs")
    run_ids = (
        {r["run_uuid"] for r in runs.rows.values() if r.get("experiment_id") in exp_ids} if runs else set()
    )

    def workload_row(row: dict[str, Any]) -> bool:
        if str(row.get("name") or "").startswith(EXPERIMENT_PREFIX):  # its registered model and versions
            return True
        return (row.get("experiment_id") in exp_ids and row.get("experiment_id") is not None) or any(
            row.get(c) in run_ids for c in ("run_uuid", "run_id") if row.get(c) is not None
        )

    tables = {
        name: Table(t.columns, t.key, {k: r for k, r in t.rows.items() if not workload_row(r)})
        for name, t in snap.tables.items()
    }
    return Snapshot(snap.revision, tables)


# -- bookkeeping (pure) -----------------------------------------------------------------------------------
def read_acks(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every request outcome the workloads recorded, in time order (a line cut short by a kill is dropped:
    its request was never acknowledged)."""
    out = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "op" in entry:
                out.append(entry)
    return sorted(out, key=lambda a: (a.get("t", 0), a.get("workload", ""), a.get("seq", 0)))


def _rel(t: float, zero: float | None) -> str:
    return f"{t - zero:+.1f}s" if zero is not None else f"{t:.1f}"


def _message(entry: dict[str, Any]) -> str:
    first = str(entry.get("message") or "").strip().splitlines()
    return _IDS.sub("<id>", first[0] if first else "")[:400]


def server_failures(
    acks: list[dict[str, Any]], server: str, zero: float | None, phase: str = ""
) -> list[Problem]:
    """The failed requests of ``server``, one problem per (operation, client, status, message), with the count
    and the first and last time relative to ``zero`` (the start of `mlflow db upgrade`). Answered: `fail`; no
    answer: `error`. Each names its writes' client, server and phase (``written_by``), so that a declaration
    of a failure that depends on timing (a deadlock with the migration) covers it without calling a run in
    which it did not happen stale (harness/expectations.py: such a declaration says nothing of a passing
    check)."""
    groups: dict[tuple[str, str, Any, bool, str], list[dict[str, Any]]] = {}
    for a in acks:
        if a.get("server") == server and not a.get("ok"):
            key = (a["op"], str(a.get("client")), a.get("status"), bool(a.get("answered")), _message(a))
            groups.setdefault(key, []).append(a)
    problems = []
    for (op, client, status, answered, message), items in groups.items():
        times = [float(a["t"]) for a in items]
        first, last = _rel(min(times), zero), _rel(max(times), zero)
        when = f"first {first}, last {last} from the start of `mlflow db upgrade`"
        if answered:
            how = f"the server answered HTTP {status}" if status is not None else "the client raised"
        else:
            how = "no answer from the server"
        text = f"{op} x{len(items)} (client {client}; {when}): {how}: {message}"
        written_by = {"client": client, "server": server, "phase": phase}
        problems.append(Problem(text, Status.FAIL if answered else Status.ERROR, written_by=written_by))
    return problems


def judge_server(check: Check, acks: list[dict[str, Any]], server: str, role: str, zero: float | None,
                 moved: float | None, phase: str = "") -> None:  # fmt: skip
    """``rolling-old-server`` / ``rolling-new-server``: ``server`` answered every request correctly, or each
    kind of failure is a problem of the check."""
    mine = [a for a in acks if a.get("server") == server]
    problems = server_failures(acks, server, zero, phase)
    after = sum(1 for a in mine if moved is not None and float(a["t"]) >= moved)
    if not mine:
        check.status, check.detail = (
            Status.ERROR,
            f"the workload sent no request to the {role} server {server}",
        )
        return
    if not problems:
        check.detail = f"the {role} server {server} answered all {len(mine)} requests correctly" + (
            f" ({after} after `mlflow db upgrade` started)" if moved is not None else ""
        )
        return
    failed = sum(1 for a in mine if not a.get("ok"))
    check.problems.extend(problems)
    check.settle()
    check.detail = (
        f"the {role} server {server} failed {failed} of {len(mine)} requests: "
        + "; ".join(p.text for p in problems[:3])
        + (f" (+{len(problems) - 3} more kinds)" if len(problems) > 3 else "")
    )
    check.excerpt = "\n".join(p.text for p in problems)


def judge_acked(check: Check, acks: list[dict[str, Any]], verified: dict[str, Any], to_server: str,
                phase: str, zero: float | None) -> None:  # fmt: skip
    """``rolling-acked``: every acknowledged write read back unchanged through ``to_server`` (``verified``:
    workload.py verify's output), else each lost or changed write is a problem (never declared)."""
    ok = [a for a in acks if a.get("ok") and a.get("op") not in READS]
    if not ok:
        check.status, check.detail = Status.ERROR, "the workload had no write acknowledged: nothing to verify"
        return
    if verified.get("checked") != len(ok):
        check.problems.append(
            Problem(
                f"the read-back checked {verified.get('checked')} writes, {len(ok)} were acknowledged",
                Status.ERROR,
            )
        )
    for p in verified.get("problems", []):
        t = next((float(a["t"]) for a in ok if a.get("seq") == p.get("seq")
                  and a.get("workload") == p.get("workload")), None)  # fmt: skip
        what = (f"{p.get('op')} (run {p.get('run_id')}) by client {p.get('workload')}, acknowledged by "
                f"server {p.get('server')}" + (f" at {_rel(t, zero)}" if t is not None else ""))  # fmt: skip
        written_by = {"client": str(p.get("workload")), "server": str(p.get("server")), "phase": phase}
        if p.get("answered") is None:
            text, status = f"lost or changed: {what}: {p.get('problem')}", Status.FAIL
        else:
            text = f"read back failed: {what}: {p.get('problem')}"
            status = Status.FAIL if p.get("answered") else Status.ERROR
        check.problems.append(Problem(text, status, record=f"{p.get('workload')}#{p.get('seq')}",
                                      written_by=written_by))  # fmt: skip
    by = sorted({str(a["server"]) for a in ok})
    if not check.problems:
        check.detail = (f"{len(ok)} writes acknowledged by {' and '.join(by)} servers, all read back through "
                        f"{to_server}")  # fmt: skip
        return
    check.settle()
    check.detail = f"{len(check.problems)} of {len(ok)} acknowledged writes not read back as written: " + (
        check.problems[0].text
    )
    check.excerpt = "\n".join(p.text for p in check.problems)


def summary(acks: list[dict[str, Any]], timeline: dict[str, float], zero: float | None) -> dict[str, Any]:
    """``components["rolling"]``: requests per server and outcome (per operation too), the timeline relative
    to the start of `mlflow db upgrade`."""
    per: dict[str, dict[str, Any]] = {}
    for a in acks:
        entry = per.setdefault(
            str(a.get("server")), {"acknowledged": 0, "failed": 0, "no answer": 0, "ops": {}}
        )
        outcome = "acknowledged" if a.get("ok") else ("failed" if a.get("answered") else "no answer")
        entry[outcome] += 1
        ops = entry["ops"].setdefault(a["op"], {"acknowledged": 0, "failed": 0, "no answer": 0})
        ops[outcome] += 1
    rel = {k: round(v - zero, 2) if zero is not None else round(v, 2) for k, v in timeline.items()}
    return {"requests": per, "timeline": dict(sorted(rel.items(), key=lambda kv: kv[1])),
            "timeline_zero": "start of `mlflow db upgrade`" if zero is not None else "epoch"}  # fmt: skip


# -- processes --------------------------------------------------------------------------------------------
@dataclass
class Workloads:
    """One workload process per client env, all reading the same servers file; stopped by a stop file, then
    by their process groups."""

    dir: Path
    clients: list[Env]
    client_env: Callable[[Env], dict[str, str]]
    procs_: list[Any] = field(default_factory=list)
    acks: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def servers_file(self) -> Path:
        return self.dir / "rolling-servers.json"

    @property
    def stop_file(self) -> Path:
        return self.dir / "rolling-stop"

    def serve(self, servers: list[tuple[str, str]]) -> None:
        """Tell the workloads which servers to use from their next iteration on (written atomically)."""
        tmp = self.servers_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"servers": [{"name": n, "url": u} for n, u in servers]}))
        os.replace(tmp, self.servers_file)

    def start(self) -> None:
        self.stop_file.unlink(missing_ok=True)
        for env in self.clients:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", env.spec_label)  # a spec may be a path or URL
            acks, log = self.dir / f"rolling-acks-{name}.jsonl", self.dir / f"rolling-workload-{name}.log"
            acks.unlink(missing_ok=True)
            environ = {**env.environ(), **CLIENT_RETRIES, **self.client_env(env), **WORKLOAD_ENV}
            cmd = [str(env.interpreter), str(WORKLOAD), "run", "--servers", str(self.servers_file),
                   "--acks", str(acks), "--stop", str(self.stop_file), "--name", name]  # fmt: skip
            self.procs_.append(procs.spawn(cmd, env=environ, log=log, cwd=self.dir))
            self.acks.append(acks)
            self.logs.append(log)

    def wait_first_acks(self, timeout: float) -> list[str]:
        """Wait until every workload has a write acknowledged (or has died, or ``timeout``); the names of
        those that sent no request at all (one whose requests all failed: the server's to answer for)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [p for p, proc in zip(self.acks, self.procs_, strict=True)
                       if proc.poll() is None and not any(a.get("ok") for a in read_acks([p]))]  # fmt: skip
            if not waiting or time.monotonic() > deadline:
                return [p.stem.removeprefix("rolling-acks-") for p in self.acks if not read_acks([p])]
            time.sleep(0.25)

    def stop(self) -> list[str]:
        """Ask every workload to stop after its iteration, wait, then end their groups; what went wrong."""
        self.stop_file.touch()
        deadline = time.monotonic() + STOP_GRACE_S
        trouble = []
        for proc, log in zip(self.procs_, self.logs, strict=True):
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
                trouble.append(f"{log.name}: did not stop within {STOP_GRACE_S:.0f}s; killed")
            procs.stop(proc, grace=2.0)
            if code not in (0, None):
                trouble.append(f"{log.name}: exited with code {code}: {procs.tail(log, 5)}")
        self.procs_.clear()
        return trouble


@contextmanager
def workloads(
    dir: Path, clients: list[Env], client_env: Callable[[Env], dict[str, str]]
) -> Iterator[Workloads]:
    w = Workloads(dir, clients, client_env)
    try:
        w.start()
        yield w
    finally:
        for proc in w.procs_:  # anything still running: ended by its group, also on failure and Ctrl-C
            procs.stop(proc, grace=2.0)
        w.procs_.clear()


# -- the stretch ------------------------------------------------------------------------------------------
class Cell(Protocol):
    """What the stretch uses of harness.cell.Cell (which calls it: no import back)."""

    plan: CellPlan
    envs: dict[str, Env]
    dir: CellDir
    result: CellResult

    def server(
        self, phase: str, env: Env, store: Store, backup: bool = True
    ) -> AbstractContextManager[RunningServer]: ...

    def client_env(self, version: MlflowVersion) -> dict[str, str]: ...

    def hook(self, point: str, store: Store) -> None: ...


class Hop(Protocol):
    """What the stretch uses of harness.cell.Hop: the hop's phase, its TO version's env, the store."""

    phase: str
    env: Env
    store: Store


def run_stretch(cell: Cell, hop: Hop, upgrade: Callable[[], None]) -> None:
    """The rolling stretch of ``hop`` (see the module's doc); ``upgrade`` runs the cell's schema steps
    (db-upgrade, integrity) while the FROM server and the workloads run."""
    from_env = cell.envs[cell.plan.path[0].label]
    clients = [cell.envs[c.label] for c in cell.plan.clients]
    store, phase = hop.store, hop.phase
    timeline: dict[str, float] = {}
    zero: float | None = None
    from_name, to_name = str(from_env.version), str(hop.env.version)
    verified: dict[str, Any] | None = None
    w: Workloads | None = None
    trouble: list[str] = []
    try:
        with ExitStack() as outer:
            with ExitStack() as inner:
                old = inner.enter_context(cell.server(phase, from_env, store, backup=False))
                timeline["FROM server up"] = time.time()
                w = inner.enter_context(workloads(cell.dir.logs, clients,
                                                  lambda e: cell.client_env(e.version)))  # fmt: skip
                w.serve([(from_name, old.url)])
                timeline["workloads started"] = time.time()
                if silent := w.wait_first_acks(FIRST_ACK_S):  # sent nothing at all: the harness's trouble
                    trouble.append(f"workload(s) {', '.join(silent)} sent no request before the upgrade")
                timeline["first writes acknowledged"] = time.time()
                zero = timeline["`mlflow db upgrade` started"] = time.time()
                upgrade()
                timeline["upgrade and integrity done"] = time.time()
                cell.hook("rolling-upgraded", store)
                new = outer.enter_context(cell.server(phase, hop.env, store, backup=False))
                timeline["TO server up"] = time.time()
                w.serve([(from_name, old.url), (to_name, new.url)])
                time.sleep(BOTH_SERVERS_S)
                trouble += w.stop()
                timeline["workloads stopped"] = time.time()
            timeline["FROM server stopped"] = time.time()
            cell.hook("before-rolling-verify", store)
            verified = verify(cell, hop, new.url, w.acks)
            timeline["verified"] = time.time()
    finally:
        acks = read_acks(w.acks) if w is not None else []
        record(cell, phase, acks, verified, timeline, zero, from_name, to_name, trouble)


def verify(cell: Cell, hop: Hop, url: str, acks: list[Path]) -> dict[str, Any]:
    """workload.py verify with the TO version's client through the TO server; its output, or an error."""
    out, log = cell.dir.logs / "rolling-verify.json", cell.dir.logs / "rolling-verify.log"
    out.unlink(missing_ok=True)
    env = hop.env
    environ = {**env.environ(), **CLIENT_RETRIES, **cell.client_env(env.version)}
    cmd = [str(env.interpreter), str(WORKLOAD), "verify", "--server", url, "--out", str(out),
           *[str(a) for a in acks if a.exists()]]  # fmt: skip
    code, seconds = procs.run(cmd, env=environ, log=log, timeout=VERIFY_TIMEOUT_S, cwd=cell.dir.logs)
    if code != 0 or not out.exists():
        why = "timed out" if code is None else f"exited with code {code}"
        return {"error": f"the read-back {why}: {procs.tail(log, 8)}"}
    data: dict[str, Any] = json.loads(out.read_text())
    data["seconds"] = round(seconds, 2)
    return data


def record(cell: Cell, phase: str, acks: list[dict[str, Any]], verified: dict[str, Any] | None,
           timeline: dict[str, float], zero: float | None, from_name: str, to_name: str,
           trouble: list[str]) -> None:  # fmt: skip
    """The stretch's checks and summary, from what was recorded (also when it ended early)."""
    moved = timeline.get("`mlflow db upgrade` started")
    logs = [cell.dir.rel(p) for p in sorted(cell.dir.logs.glob("rolling-*"))]
    if acks:
        for role, name in (("old", from_name), ("new", to_name)):
            if role == "new" and "TO server up" not in timeline:
                continue
            check = cell.result.add(
                Check(f"rolling-{role}-server", phase, Status.PASS, server=name, logs=logs)
            )
            judge_server(check, acks, name, role, zero, moved, phase)
    acked = cell.result.add(Check("rolling-acked", phase, Status.PASS, server=to_name, logs=logs))
    if verified is None:
        acked.status, acked.detail = (
            Status.ERROR,
            "the stretch ended before the read-back" + (f" ({'; '.join(trouble)})" if trouble else ""),
        )
    elif "error" in verified:
        acked.status, acked.detail = Status.ERROR, verified["error"]
    else:
        judge_acked(acked, acks, verified, to_name, phase, zero)
    if trouble and acked.status is Status.PASS:
        acked.status = Status.ERROR
        acked.detail = f"{'; '.join(trouble)}; {acked.detail}"
    cell.result.components["rolling"] = {
        **summary(acks, timeline, zero),
        "from": from_name,
        "to": to_name,
        "both_servers_seconds": BOTH_SERVERS_S,
        "verify_seconds": (verified or {}).get("seconds"),
        "trouble": trouble,
    }
