"""The interrupted migration: the `interrupted-upgrade` step of scale cells on database servers.

`mlflow db upgrade` is killed (SIGKILL: a crash, an OOM kill, a node lost) inside its middle pending
revision (harness/migration.py `kill_point`), once that revision's first SQL statement has completed: the
timer pauses there (scenarios/upgrade_timer.py, PAUSE_IN) and the runtime's `db_upgrade(kill_at=...)`, which
watches its events, kills its own process group or container. Killing on the "Running upgrade" line alone
raced alembic: on MariaDB the same kill point gave a recovered store in one run and an unservable one in
the next, depending on whether the revision's first CREATE TABLE had run. Then it is run again; the outcome
is classified (recovered, refused, a store neither version serves) and the backup restored, so that
`db-upgrade` starts from the FROM store. What does not live here: the timer and its events
(harness/migration.py), the timeline (harness/cell.py), the row checksums at scale (harness/scale.py,
through `Cell.rows_now`/`rows_compare`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.backends import Store
from harness.envs import Env
from harness.features import Feature
from harness.migration import kill_point, pending_revisions, read_events, record, revision_graph, versions_dir
from harness.results import CellResult, Check, Status
from harness.rundir import CellDir
from harness.runtime import Runtime
from harness.server import ServerStartError, StartFailure


class Context(Protocol):
    runtime: Runtime


class Cell(Protocol):
    """What the step uses of harness.cell.Cell (which calls it: no import back)."""

    ctx: Context
    dir: CellDir
    result: CellResult
    features: list[Feature]

    def rows_now(self, hop: Any) -> Any: ...  # in-database counts and checksums at scale (harness/scale.py)

    def rows_compare(self, before: Any, hop: Any) -> Any: ...  # a report: .summary(), .differences

    def restore(self, store: Store, backup: Path) -> None: ...

    def tail(self, path: Path) -> str: ...


class Hop(Protocol):
    """What the step uses of harness.cell.Hop: its phase, the TO version's env, the store, the backup."""

    phase: str
    env: Env
    store: Store
    backup: Path


@dataclass
class Interruption:
    killed_at: str | None  # the revision the upgrade was killed in (after its first statement)
    revision_after_kill: str | None  # what alembic_version said then
    outcome: str  # recovered | refused | unservable | not-interrupted | first-upgrade-failed | error
    detail: str


def interrupted_upgrade(cell: Cell, hop: Hop, check: Check, timeout: float, from_env: Env) -> Interruption:
    """Kill `mlflow db upgrade` inside its middle pending revision, run it again, classify, restore the
    backup. Recovered (head reached, every row kept): pass; refused (the second upgrade fails: then the FROM
    server, ``from_env``'s, and the TO server are started on the store, in that order) or a store that
    neither serves (unservable): fail (MLflow's behaviour)."""
    env, store = hop.env, hop.store
    before = store.schema_revision()
    vdir = versions_dir(env)
    graph = revision_graph(vdir) if vdir else {}
    pending = pending_revisions(graph, env.schema_head, before) if graph and env.schema_head else []
    if not graph or env.schema_head is None:  # the harness's trouble: the env is not what it should be
        check.status = Status.ERROR
        check.detail = f"cannot read MLflow {env.version}'s migration scripts (in {env.path}) or its head"
        return Interruption(None, before, "error", check.detail)
    target = kill_point(pending)
    if target is None:
        check.status = Status.SKIP
        check.detail = f"{len(pending)} revision(s) pending from {before}: nothing to interrupt half-way"
        return Interruption(None, before, "not-interrupted", check.detail)
    rows_before = cell.rows_now(hop)  # at scale: in-database counts and checksums (harness/scale.py)
    logs = cell.dir.logs
    first_log = logs / f"{hop.phase}-interrupted-upgrade-{env.version}.log"
    second_log = logs / f"{hop.phase}-interrupted-reupgrade-{env.version}.log"
    check.logs = [cell.dir.rel(first_log), cell.dir.rel(second_log)]
    where = f"revision {target} ({pending.index(target) + 1} of {len(pending)})"
    try:
        first = cell.ctx.runtime.db_upgrade(env, store, first_log, timeout, kill_at=target)
        at_kill = store.schema_revision()
        result = _classify(
            cell, hop, check, timeout, (first, at_kill, where), rows_before, (first_log, second_log), from_env
        )
        migration = cell.result.components.setdefault("interrupted_migration", {})
        migration[hop.phase] = {
            "pending": len(pending),
            "killed_at": first.killed_at,
            "running_at_kill": _running(first.events),
            "revision_after_kill": at_kill,
            "outcome": result.outcome,
            "first": record(read_events(first.events)),
        }
        return result
    finally:
        cell.restore(store, hop.backup)
        check.detail += f"; backup restored (schema {store.schema_revision()})"


def _classify(
    cell: Cell,
    hop: Hop,
    check: Check,
    timeout: float,
    kill: tuple[Any, str | None, str],
    rows_before: Any,  # what Cell.rows_now returned
    logs: tuple[Path, Path],
    from_env: Env,
) -> Interruption:
    env, store = hop.env, hop.store
    (first, at_kill, where), (first_log, second_log) = kill, logs
    if first.killed_at is None:
        if first.code == 0:
            check.status = Status.ERROR
            check.detail = f"the upgrade ended before {where} started: nothing was interrupted"
            return Interruption(None, at_kill, "not-interrupted", check.detail)
        check.status, check.excerpt = Status.FAIL, cell.tail(first_log)
        check.detail = f"the first upgrade exited with code {first.code} before {where} started"
        return Interruption(None, at_kill, "first-upgrade-failed", check.detail)
    running = _running(first.events)
    paused = _paused(first.events)
    inside = (
        f"after its first statement ({paused})" if paused else f"(it ran no statement; {running} had started)"
    )
    killed = f"killed inside {where} {inside} (alembic_version then {at_kill})"
    second = cell.ctx.runtime.db_upgrade(env, store, second_log, timeout)
    after = store.schema_revision()
    if second.code is None:
        check.status = Status.ERROR
        check.detail = f"{killed}; the second upgrade timed out after {second.seconds:.0f}s"
        return Interruption(first.killed_at, at_kill, "error", check.detail)
    if second.code == 0 and after == env.schema_head:
        report = cell.rows_compare(rows_before, hop)
        check.detail = f"recovered: {killed}; `mlflow db upgrade` again reached {after}; {report.summary()}"
        check.fail_each(report.differences)
        return Interruption(first.killed_at, at_kill, "recovered", check.detail)
    message = _last_error(second_log)
    servers = {role: _serves(cell, hop, e) for role, e in (("FROM", from_env), ("TO", env))}
    served = [role for role, outcome in servers.items() if outcome.startswith("serves it")]
    outcome = "refused" if served else "unservable"
    said = "; ".join(f"{role} server: {outcome}" for role, outcome in servers.items())
    check.status = Status.FAIL
    check.detail = (f"{outcome}: {killed}; `mlflow db upgrade` again exited with code {second.code} at "
                    f"{after}: {message}; {said}")  # fmt: skip
    check.excerpt = cell.tail(second_log)
    return Interruption(first.killed_at, at_kill, outcome, check.detail)


def _paused(events: Path | None) -> str | None:
    """The statement the timer paused after, as it wrote it (None: it did not pause)."""
    paused = [e.get("statement", "") for e in read_events(events) if e.get("event") == "paused"]
    return paused[0][:120] if paused else None


def _running(events: Path | None) -> str | None:
    """The last revision the killed upgrade started: the kill is asynchronous, alembic may be one further."""
    started = [e.get("to") for e in read_events(events) if e.get("event") == "revision"]
    return started[-1] if started else None


def _last_error(log: Path) -> str:
    """The line that says why (the exception's last line), else the log's last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or ["(no output)"])[-1][:400]


def _serves(cell: Cell, hop: Hop, env: Env) -> str:
    """Start ``env``'s server on the store as the interruption left it; what it did, in a few words."""
    log = cell.dir.logs / f"{hop.phase}-interrupted-server-{env.version}.log"
    revision = hop.store.schema_revision()
    try:
        server = cell.ctx.runtime.start_server(env, hop.store, log, cell.features)
    except ServerStartError as exc:
        if exc.is_infrastructure:  # a taken port, a timeout: not the store's doing (the step says error)
            raise
        if exc.kind is StartFailure.REFUSED_SCHEMA:
            return f"{env.version} refused it"
        return f"{env.version} did not start ({exc.kind.value})"
    server.stop()
    now = hop.store.schema_revision()
    moved = f" (after migrating it itself: {revision} -> {now})" if now != revision else ""
    return f"serves it{moved}"
