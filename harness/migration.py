"""`mlflow db upgrade` per alembic revision: the timer's events, the revisions still to run, and the gate's
per-revision comparison of a candidate's upgrade with the baseline's.

The runtimes run every SQL store's upgrade through scenarios/upgrade_timer.py, which appends one JSON line
per revision alembic starts (and a first and a final line) to an events file beside the upgrade's log;
`record` turns that file into `components["migration"][phase]`, and `wait_for_pause` lets a runtime kill it
inside a revision. `pending_revisions` reads the TO version's own migration scripts (on this machine, in
its env) to know which revisions an upgrade will run, and `kill_point` picks where the interrupted migration
(harness/interrupted.py) kills it. `compare_revisions` and `gate_results` are the gate's timing verdict
(pure). What does not live here: running processes and containers (the runtimes' `db_upgrade`), the
interrupted migration's step (harness/interrupted.py), the timeline (harness/cell.py), seeding, sizes and
locks (harness/scale.py).
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.paths import SCENARIOS_DIR
from harness.results import CellResult, Check, Status

if TYPE_CHECKING:
    from harness.envs import Env

TIMER = SCENARIOS_DIR / "upgrade_timer.py"
SOURCE = "alembic log (upgrade_timer)"
# A candidate revision more than FACTOR x slower than the baseline's fails the gate when it is also slower by
# at least FLOOR_S: below that, the same upgrade repeated on this machine (2 cores shared with other work)
# differs by itself. Measured (2.22.5 -> 3.17.2 at 20k and 200k points, 3-4 runs each, 22 upgrades): the
# widest spread of one revision was 3.1 s on MariaDB (1b5f0d9ad7c1: 1.7-4.8 s), 0.7 s on PostgreSQL, 0.4 s
# on SQLite; ratios mean nothing below that (MariaDB's fsync-bound DDL under I/O from other processes: the
# same revision 0.13 s and 1.66 s, 13x). FLOOR_S is 1.6x the widest spread seen (README: the gate at scale).
FACTOR = 2.0
FLOOR_S = 5.0


def events_path(log: Path) -> Path:
    """Where the timer's events go for the upgrade logged in ``log``: beside it."""
    return log.with_name(log.stem + ".events.jsonl")


def read_events(path: Path | None) -> list[dict[str, Any]]:
    """The timer's lines; a half-written last line (the process was killed mid-write) is left out."""
    if path is None or not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def record(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``components["migration"][phase]``: the command's seconds (from the click command's start to its end,
    the interpreter's start-up left out), each revision's seconds (from its start to the next one's, the last
    to the end of alembic's upgrade, else to the final line) and description. Without a final line (the
    process was killed or never started the command) the last revision's seconds are None and "ended" says
    so."""
    command = next((e["t"] for e in events if e.get("event") == "command"), None)
    end = next((e for e in events if e.get("event") == "end"), None)
    revisions = [e for e in events if e.get("event") == "revision"]
    # The last revision ends when alembic's upgrade returned, else (a failure) at the final line.
    upgraded = next((e["t"] for e in events if e.get("event") == "upgraded"), None)
    last = upgraded if upgraded is not None else (end["t"] if end else None)
    ends = [r["t"] for r in revisions[1:]] + ([last] if revisions else [])  # none: already at the head
    out: dict[str, Any] = {
        "seconds": round(end["t"] - command, 3) if end and command is not None else None,
        "revisions": [
            {
                "from": r.get("from", ""),
                "to": r.get("to", ""),
                "description": r.get("description", ""),
                "seconds": round(stop - r["t"], 3) if stop is not None else None,
            }
            for r, stop in zip(revisions, ends, strict=True)
        ],
        "revisions_source": SOURCE,
    }
    if end is None:
        out["ended"] = "no final line: the process was killed (or died) before the command ended"
    else:
        out["exit"] = end.get("exit")
    return out


def slowest(rec: Mapping[str, Any]) -> str:
    """The slowest revision ("slowest revision X (desc): 4.2s") for a check's detail; "" without any."""
    timed = [r for r in rec.get("revisions", ()) if r.get("seconds") is not None]
    if not timed:
        return ""
    top = max(timed, key=lambda r: r["seconds"])
    return f"slowest revision {top['to']} ({top['description']}): {top['seconds']:.1f}s"


PAUSE_IN = "MLFLOW_COMPAT_PAUSE_IN_REVISION"  # the timer waits, to be killed, inside this revision


def wait_for_pause(events: Path, revision: str, finished: Callable[[], bool], timeout: float,
                   poll: float = 0.02) -> bool:  # fmt: skip
    """Wait until the timer (run with PAUSE_IN=``revision``) reports that it paused after the revision's first
    statement (True), or that the next revision started (True: ``revision`` ran no statement), or the command
    finished or the time ran out (False). Reads the events file as it grows."""
    deadline = time.monotonic() + timeout
    offset, pending, started = 0, "", False
    while time.monotonic() < deadline:
        done = finished()  # read before the file, so that a last line written just before the exit is seen
        if events.exists():
            with events.open(encoding="utf-8", errors="replace") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == "paused" and event.get("revision") == revision:
                    return True
                if event.get("event") == "revision":
                    if started:  # the revision is over without a statement: interrupt the next one
                        return True
                    started = event.get("to") == revision
        if done:
            return False
        time.sleep(poll)
    return False


# -- the revisions an upgrade will run ---------------------------------------------------------------------
_ASSIGN = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+)$", re.M)


def revision_graph(versions_dir: Path) -> dict[str, tuple[str, ...]]:
    """{revision: its down revisions} from the migration scripts' module-level assignments."""
    graph: dict[str, tuple[str, ...]] = {}
    for script in versions_dir.glob("*.py"):
        found: dict[str, Any] = {}
        for name, value in _ASSIGN.findall(script.read_text(errors="replace")):
            try:
                found[name] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                continue
        if isinstance(found.get("revision"), str):
            down = found.get("down_revision")
            graph[found["revision"]] = (
                tuple(down) if isinstance(down, (tuple, list)) else ((down,) if down else ())
            )
    return graph


def versions_dir(env: Env) -> Path | None:
    found = sorted(env.path.glob("lib/python*/site-packages/mlflow/store/db_migrations/versions"))
    return found[0] if found else None


def pending_revisions(graph: Mapping[str, tuple[str, ...]], head: str, current: str | None) -> list[str]:
    """The revisions an upgrade from ``current`` to ``head`` runs, oldest first (a linear history; at a merge
    every branch not already below ``current`` is included, in an order alembic may not follow)."""
    below: set[str] = set()
    stack = [current] if current else []
    while stack:
        rev = stack.pop()
        if rev not in below:
            below.add(rev)
            stack.extend(graph.get(rev, ()))
    order: list[str] = []
    seen: set[str] = set()

    def visit(rev: str) -> None:
        if rev in seen or rev in below:
            return
        seen.add(rev)
        for down in graph.get(rev, ()):
            visit(down)
        order.append(rev)

    visit(head)
    return order


def kill_point(pending: list[str]) -> str | None:
    """Where the interrupted migration kills the upgrade: as the middle pending revision starts, so that
    about half the revisions are done (on a database without transactional DDL, committed) and half are
    not; None with fewer than two (nothing to interrupt half-way)."""
    return pending[len(pending) // 2] if len(pending) >= 2 else None


# -- the gate's comparison ---------------------------------------------------------------------------------
def compare_revisions(candidate: Mapping[str, Any], baseline: Mapping[str, Any], factor: float = FACTOR,
                      floor: float = FLOOR_S) -> tuple[list[str], list[str]]:  # fmt: skip
    """Each revision both upgrades ran (by from -> to), candidate vs baseline: (the failures, "revision X:
    41.0 s, baseline 9.0 s", for those more than ``factor`` times slower and slower by at least ``floor``
    seconds; the revisions compared)."""
    base = {
        (r["from"], r["to"]): r["seconds"]
        for r in baseline.get("revisions", ())
        if r.get("seconds") is not None
    }
    failures, compared = [], []
    for rev in candidate.get("revisions", ()):
        key, seconds = (rev["from"], rev["to"]), rev.get("seconds")
        if key not in base or seconds is None:
            continue
        compared.append(rev["to"])
        if seconds > factor * base[key] and seconds - base[key] >= floor:
            failures.append(f"revision {rev['to']} ({rev['description']}): {seconds:.1f} s, "
                            f"baseline {base[key]:.1f} s")  # fmt: skip
    return failures, compared


def _pair_key(cell: CellResult) -> tuple[Any, ...]:
    return (cell.backend, cell.runtime, cell.from_, cell.scale, cell.auth, cell.artifact_store, cell.rolling)


def gate_results(cells: Iterable[CellResult], candidate: str, baseline: str) -> list[CellResult]:
    """One synthetic result per candidate cell that has a reference cell (the same FROM, backend and scale,
    upgraded to the baseline): its check `migration-time` fails naming each revision the candidate ran more
    than FACTOR times slower than the baseline did (see FLOOR_S)."""
    cells = list(cells)
    refs = {_pair_key(c): c for c in cells if c.to == baseline and c.from_ != baseline}
    out = []
    for cell in cells:
        ref = refs.get(_pair_key(cell))
        if cell.to != candidate or ref is None:
            continue
        result = CellResult(id=f"{cell.id}[migration-time vs {baseline}]", backend=cell.backend,
                            runtime=cell.runtime, path=list(cell.path), clients=[], scale=cell.scale,
                            auth=cell.auth, artifact_store=cell.artifact_store, dir=cell.dir)  # fmt: skip
        check = result.add(Check("migration-time", "gate", Status.PASS, server=cell.to))
        mine = cell.components.get("migration", {}).get("upgrade")
        theirs = ref.components.get("migration", {}).get("upgrade")
        if not mine or not theirs:
            check.status = Status.ERROR
            missing = [c.id for c, r in ((cell, mine), (ref, theirs)) if not r]
            check.detail = f"no per-revision upgrade timing in {', '.join(missing)} (did its upgrade run?)"
        else:
            failures, compared = compare_revisions(mine, theirs)
            check.detail = (f"{len(compared)} revision(s) both upgrades ran, compared with {ref.id} "
                            f"(fail above {FACTOR:g}x the baseline's and {FLOOR_S:g} s more)")  # fmt: skip
            if not compared:
                check.status = Status.SKIP
                check.detail = f"no revision both {cell.id} and {ref.id} ran"
            check.fail_each(failures)
            if failures:
                check.detail = "; ".join(failures)
        result.finish()
        out.append(result)
    return out
