"""Fidelity of a server launch: two runs of the same cells (one with `--server-launch fork`, one with `cli`)
compared for every difference, so that a fork server that behaves otherwise than the real `mlflow server` CLI
shows, by cell and check, instead of being assumed away.

What is compared, side against side: which cells ran (and which did not), each cell's status, summary, path,
clients, features and components (versions, schema heads, revisions, the store's product, each migration's
revisions); every check, matched by (phase, name, scenario, client, server) and by its place among checks of
the same key: its status, detail, problems (text, status, record, declaration), declaration and the logs it
names; and the integrity snapshots, the store's tracking tables read in full before and after `mlflow db
upgrade`, which the cell keeps beside cell.json (`integrity/<phase>.json`, written by `keep_snapshots`): the
revision, each table's columns and key, and every row (as a multiset: see `_rows`).

Only what two runs cannot help producing differently is normalized, each for a stated reason (`normalize`,
`_masked_key`), and nothing else: a value that merely looks like a port, a path or a time outside the places
named stays compared. What does not live here: running the two runs (tests/test_fidelity.py, the nightly
workflow), the run-to-run status comparison of nights (harness/compare.py), how snapshots are read from a
store (harness/integrity.py), finding and loading a run directory (the command line, `mlflow-compat report
--fidelity RUN_A RUN_B` in harness/cli.py: exit 1 on any difference).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.differential import GENERATED_NAME
from harness.integrity import Snapshot
from harness.results import CellResult, Check, RunResult

SNAPSHOTS = "integrity"  # a cell's snapshots: cells/<slug>/integrity/<phase>.json


# -- the snapshots a cell keeps --------------------------------------------------------------------------
def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON: the revision, and per table its columns, key and rows (each a column -> value map;
    values are already normalised by harness.integrity, so the same row reads the same on any product)."""
    return {
        "revision": snapshot.revision,
        "tables": {
            name: {"columns": table.columns, "key": table.key, "rows": list(table.rows.values())}
            for name, table in snapshot.tables.items()
        },
    }


def keep_snapshots(path: Path, before: Snapshot, after: Snapshot) -> None:
    """Keep the two snapshots an integrity check compared, as JSON at ``path`` (the cell calls this)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"before": snapshot_json(before), "after": snapshot_json(after)}
    path.write_text(json.dumps(data, default=str))


# -- a side --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One run of the two: its label in every difference ("fork", "cli"), its result and its directory."""

    label: str
    run: RunResult
    dir: Path

    @cached_property
    def window_ms(self) -> tuple[int, int]:
        """The run's wall-clock span in epoch milliseconds, a minute of slack either side: a clock time taken
        during the run (a generated start time, a metric timestamp a client took from its clock) lies inside.
        """
        times = [_epoch(t) for t in (self.run.started, self.run.ended) if t]
        times += [_epoch(t) for c in self.run.cells for t in (c.started, c.ended) if t]
        if not times:
            return (0, -1)
        return (int((min(times) - 60) * 1000), int((max(times) + 60) * 1000))

    @cached_property
    def roots(self) -> list[str]:
        """Its run directory and results directory as text, longest first (replaced before anything else)."""
        paths = {str(self.dir), str(self.dir.resolve()), str(self.dir.parent), str(self.dir.resolve().parent)}
        return sorted((p for p in paths if len(p) > 1), key=len, reverse=True)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- normalizing text ----------------------------------------------------------------------------------
# Each pattern stands for a value that two runs cannot help choosing differently; the reason is beside it.
# A URL's port, or a loopback host's: every server, database and S3 server listens on a free port picked at
# start, so two runs never share them. The host and scheme stay compared.
_URL_PORT = re.compile(r"\b([a-z][a-z0-9+.-]*://(?:[^\s/@'\"]*@)?[\w.-]+):\d{1,5}\b", re.IGNORECASE)
_LOOPBACK_PORT = re.compile(r"\b(127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]):\d{1,5}\b")
# Temp directories: each run's stores, databases and sockets live in mkdtemp directories with random
# suffixes (`mlflow-compat-...`), under whatever TMPDIR the run had; the name after them stays compared.
_TEMP_DIR = re.compile(r"(?:/[^\s/'\":]+)*/mlflow-compat-[^\s/'\":]+")
# Durations: how long a step took depends on the machine's load. The harness writes them as a number of
# seconds after "in", "after", "within", "took" or a revision's "(description): " ("acknowledged in 0.6s",
# "(built in 3s)", "slowest revision X (...): 0.8s", "timed out after 600s"); only there are they masked. A
# value that merely ends in "s" ("run.params.timeout: '30s'") or a count ("3 records") stays compared.
_DURATION = re.compile(
    r"(?:(?<=\bin )|(?<=\bafter )|(?<=\bwithin )|(?<=\btook )|(?<=\): ))\d+(?:\.\d+)? ?s\b"
)
# Which revision of `mlflow db upgrade` was the slowest is a comparison of durations (on shared cores the
# top few are within a tenth of a second of each other); the revisions run, in order, stay compared in the
# cell's components (migration.<phase>.revisions).
_SLOWEST = re.compile(r"slowest revision [0-9a-f]+ \(.*?\): <seconds>")
# Scenario names made unique per write step: the driver (scenarios/driver.py) draws a random 10-hex token
# per step, so that records of different runs never collide ("compat-model-2e7d784750"); the prefix stays.
_TOKEN = re.compile(r"\b((?:compat|artifacts|auth|s3|script)-(?:[a-z0-9_]+-)*)[0-9a-f]{10}(?![0-9a-f])")
# A cell's database on a PostgreSQL or MySQL server: named from a digest of the run's id and the cell
# (harness/backends/_stores.py database_name), so unique per run.
_DATABASE = re.compile(r"\bmlflow_compat_[0-9a-f]{16}\b")
_BUCKET = re.compile(r"\bmlflow-compat-<run-id>[a-z0-9-]*")
# An env built by this run or reused from the cache: whether the cache already held it depends on what ran
# before on the machine, not on the server launch (the env's key, which names what went into it, stays).
_ENV_BUILT = re.compile(r"\((?:built in <seconds>|reused)\)")
# Likewise the fresh-install schema that schema-drift compares with: made by the first run that needs it and
# cached (harness/schema.py), so the second of two runs reuses what the first made and does not say "made".
_REFERENCE_MADE = re.compile(r"; reference made in <seconds>")
# Process ids: the kernel's choice ("pid 4242", "process 4242").
_PID = re.compile(r"\b(pid:? |process )\d+\b", re.IGNORECASE)
# Wall-clock timestamps printed by logs and reports (ISO 8601, and the "2026/11/29 01:17:05" of MLflow's
# and alembic's loggers): when a run happened is not what it did.
_ISO_TIME = re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_LOG_TIME = re.compile(r"\b\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?")
# Random ids: 32-hex run, dataset, input, trace and logged-model ids (uuid4), and the file store's long
# numeric experiment ids; a long run of digits inside a number ("0.30000000000000004") is a value, kept.
_ID = re.compile(r"\b[0-9a-f]{32}\b|(?<![.\d])\b\d{15,20}\b(?![.\de])")
# Epoch milliseconds (13 digits): masked only when inside the run's own wall-clock span, i.e. a clock time
# taken during it (explicit timestamps a scenario sends, e.g. 1_700_000_000_000, stay compared).
_EPOCH_MS = re.compile(r"\b\d{13}\b")


def normalize(text: str, side: Side) -> str:
    """``text`` with what necessarily differs between two runs replaced by placeholders (see the patterns'
    reasons above)."""
    for root in side.roots:
        text = text.replace(root, "<run-dir>")
    # The run's id (its start time and a random suffix) names its directory, its databases and (lowercased,
    # with a digest of the whole name) its cells' S3 buckets (harness/objectstore.py bucket_name).
    if side.run.run_id:
        text = text.replace(side.run.run_id, "<run-id>").replace(side.run.run_id.lower(), "<run-id>")
        text = _BUCKET.sub("<bucket>", text)
    text = _TEMP_DIR.sub("<tmp>", text)
    text = _URL_PORT.sub(r"\1:<port>", text)
    text = _LOOPBACK_PORT.sub(r"\1:<port>", text)
    text = _ISO_TIME.sub("<time>", text)
    text = _LOG_TIME.sub("<time>", text)
    text = _DURATION.sub("<seconds>", text)
    text = _SLOWEST.sub("slowest revision <slowest>", text)
    text = _TOKEN.sub(r"\1<token>", text)
    text = _DATABASE.sub("mlflow_compat_<database>", text)
    text = _ENV_BUILT.sub("(<built or reused>)", text)
    text = _REFERENCE_MADE.sub("", text)
    text = _PID.sub(r"\1<pid>", text)
    low, high = side.window_ms
    text = _EPOCH_MS.sub(lambda m: "<time>" if low <= int(m.group(0)) <= high else m.group(0), text)
    return _ID.sub("<id>", text)


def _value(value: Any, side: Side) -> Any:
    """A JSON value normalized: strings as `normalize`; clock-time integers (epoch ms inside the run's span)
    as ``<time>``; generated run names (``adjective-animal-123``: drawn at random by the server) as
    ``<generated-name>``; lists and maps element by element."""
    if isinstance(value, dict):
        return {normalize(str(k), side): _value(v, side) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v, side) for v in value]
    if isinstance(value, str):
        return "<generated-name>" if GENERATED_NAME.fullmatch(value) else normalize(value, side)
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = side.window_ms
        return "<time>" if low <= value <= high else value
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # NaN != NaN: compare its spelling
    return value


def _masked_key(key: str) -> bool:
    """A components entry that is a measured duration or a clock time (``seconds``, ``first_start_seconds``,
    ``build_seconds``, an event's ``t``): machine load, not behaviour."""
    return key == "t" or key.endswith("seconds")


def _components(value: Any, side: Side) -> Any:
    if isinstance(value, dict):
        return {k: "<seconds>" if _masked_key(k) else _components(v, side) for k, v in value.items()}
    if isinstance(value, list):
        return [_components(v, side) for v in value]
    return _value(value, side)


# -- comparing -----------------------------------------------------------------------------------------
def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_fields(check: Check, side: Side) -> dict[str, Any]:
    """What a check says, normalized: everything but its seconds (a duration) and its excerpt (a log's or a
    traceback's tail: its substance is in the detail and the problems, compared here; a tail also shows
    process start-up lines, which is how a launch differs by design)."""
    return {
        "status": check.status.value,
        "detail": normalize(check.detail, side),
        "problems": [
            {
                "text": normalize(p.text, side),
                "status": p.status.value,
                "record": p.record and normalize(p.record, side),
                "written_by": p.written_by,
                "expected": p.expected,
            }
            for p in check.problems
        ],
        "expected": check.expected,
        "logs": check.logs,
        "writers": check.writers,
    }


def _keyed(checks: Iterable[Check]) -> dict[tuple[Any, ...], Check]:
    """Each check by its key and its place among checks of that key (a cell backs up before every server
    start: `upgrade/backup` repeats), so the n-th backup is compared with the n-th."""
    seen: Counter[tuple[Any, ...]] = Counter()
    out: dict[tuple[Any, ...], Check] = {}
    for check in checks:
        key = (check.phase, check.name, check.scenario, check.client, check.server)
        seen[key] += 1
        out[(*key, seen[key])] = check
    return out


def _label(check: Check, nth: int) -> str:
    return f"check {check.label()}" + (f" (#{nth})" if nth > 1 else "")


def _cell_fields(cell: CellResult, side: Side) -> dict[str, Any]:
    """A cell's own fields, normalized; its timings, times and seconds are durations and clock times."""
    return {
        "status": cell.status.value,
        "summary": normalize(cell.summary, side),
        "backend": cell.backend,
        "runtime": cell.runtime,
        "path": cell.path,
        "clients": cell.clients,
        "dir": cell.dir,
        "auth": cell.auth,
        "artifact_store": cell.artifact_store,
        "scale": cell.scale,
        "rolling": cell.rolling,
        "seed": cell.seed,
    }


def _diff_values(where: str, a: Any, b: Any, sides: tuple[Side, Side]) -> list[str]:
    """``a`` and ``b`` (normalized JSON) compared: one line per differing leaf, named by its path."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(a.keys() | b.keys(), key=str):
            if key not in b:
                out.append(f"{where}.{key}: only in {sides[0].label}: {_short(a[key])}")
            elif key not in a:
                out.append(f"{where}.{key}: only in {sides[1].label}: {_short(b[key])}")
            else:
                out += _diff_values(f"{where}.{key}", a[key], b[key], sides)
        return out
    if a != b:
        return [f"{where} differs: {sides[0].label} {_short(a)} vs {sides[1].label} {_short(b)}"]
    return []


def _rows(rows: list[dict[str, Any]], side: Side) -> Counter[str]:
    """A table's rows as a multiset of normalized rows. Rows are keyed by random ids (run_uuid, dataset_uuid,
    ...), masked as ``<id>``, so which row stands where cannot be told across runs: each row is compared whole
    (every column's value, ids and clock times masked), as a multiset. Which run a param or metric belongs
    to is therefore not compared here; every client's read-back check holds that, per run."""
    return Counter(json.dumps(_value(row, side), sort_keys=True) for row in rows)


def _snapshot_diffs(where: str, a: dict[str, Any], b: dict[str, Any], sides: tuple[Side, Side]) -> list[str]:
    out = []
    if a.get("revision") != b.get("revision"):
        out.append(
            f"{where} revision differs: {sides[0].label} {a.get('revision')!r} vs {sides[1].label} "
            f"{b.get('revision')!r}"
        )
    ta, tb = a.get("tables", {}), b.get("tables", {})
    for name in sorted(ta.keys() | tb.keys()):
        if name not in tb or name not in ta:
            only = sides[0] if name in ta else sides[1]
            out.append(f"{where} table {name}: only in {only.label}")
            continue
        for part in ("columns", "key"):
            if ta[name][part] != tb[name][part]:
                out.append(
                    f"{where} table {name} {part} differ: {sides[0].label} {ta[name][part]} vs "
                    f"{sides[1].label} {tb[name][part]}"
                )
        ra, rb = _rows(ta[name]["rows"], sides[0]), _rows(tb[name]["rows"], sides[1])
        if len(ta[name]["rows"]) != len(tb[name]["rows"]):
            out.append(
                f"{where} table {name}: {len(ta[name]['rows'])} rows in {sides[0].label}, "
                f"{len(tb[name]['rows'])} in {sides[1].label}"
            )
        for row, n in sorted((ra - rb).items()):
            out.append(
                f"{where} table {name}: row only in {sides[0].label}"
                + (f" (x{n})" if n > 1 else "")
                + f": {_short(row)}"
            )
        for row, n in sorted((rb - ra).items()):
            out.append(
                f"{where} table {name}: row only in {sides[1].label}"
                + (f" (x{n})" if n > 1 else "")
                + f": {_short(row)}"
            )
    return out


def _snapshots(side: Side, cell: CellResult) -> dict[str, dict[str, Any]]:
    """The integrity snapshots a cell kept: {"<phase> before": snapshot, "<phase> after": snapshot}."""
    folder = side.dir / "cells" / cell.dir / SNAPSHOTS
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        data = json.loads(path.read_text())
        for moment in ("before", "after"):
            out[f"{path.stem} {moment}"] = data[moment]
    return out


def compare_cells(a: CellResult, b: CellResult, sides: tuple[Side, Side]) -> list[str]:
    """Every difference between one cell's two results (and the snapshots they kept)."""
    sa, sb = sides
    out = [f"{a.id} {line}" for line in _diff_values("cell", _cell_fields(a, sa), _cell_fields(b, sb), sides)]
    out += [
        f"{a.id} {line}"
        for line in _diff_values(
            "components", _components(a.components, sa), _components(b.components, sb), sides
        )
    ]
    ka, kb = _keyed(a.checks), _keyed(b.checks)
    for key in [*ka, *(k for k in kb if k not in ka)]:
        if key not in kb or key not in ka:
            check, only = (ka[key], sa) if key in ka else (kb[key], sb)
            out.append(
                f"{a.id} {_label(check, key[-1])}: only in {only.label} ({check.status.value}: "
                f"{_short(normalize(check.detail, only))})"
            )
            continue
        where = f"{a.id} {_label(ka[key], key[-1])}:"
        fa, fb = _check_fields(ka[key], sa), _check_fields(kb[key], sb)
        for name in fa:
            if fa[name] != fb[name]:
                out.append(
                    f"{where} {name} differs: {sa.label} {_short(fa[name])} vs {sb.label} {_short(fb[name])}"
                )
    snaps_a, snaps_b = _snapshots(sa, a), _snapshots(sb, b)
    for name in sorted(snaps_a.keys() | snaps_b.keys()):
        if name not in snaps_a or name not in snaps_b:
            only = sa if name in snaps_a else sb
            out.append(f"{a.id} integrity snapshot {name}: only in {only.label}")
            continue
        out += _snapshot_diffs(f"{a.id} integrity snapshot {name}:", snaps_a[name], snaps_b[name], sides)
    return out


def differences(a: Side, b: Side) -> list[str]:
    """Every difference between two runs of the same cells, one line each, cell by cell (sorted by cell id,
    each cell's checks in the first side's timeline order): e.g. "postgres:2.22.5->3.17.2 check
    rollback/rollback-start server 2.22.5: detail differs: fork '...' vs cli '...'"."""
    sides = (a, b)
    out: list[str] = []
    for name, va, vb in (
        ("interrupted", a.run.interrupted, b.run.interrupted),
        ("not run", sorted(a.run.not_run), sorted(b.run.not_run)),
    ):
        if va != vb:
            out.append(f"run {name} differs: {a.label} {va!r} vs {b.label} {vb!r}")
    cells_a, cells_b = {c.id: c for c in a.run.cells}, {c.id: c for c in b.run.cells}
    for cid in sorted(cells_a.keys() | cells_b.keys()):
        if cid not in cells_b or cid not in cells_a:
            cell, only = (cells_a[cid], a) if cid in cells_a else (cells_b[cid], b)
            out.append(f"{cid}: cell only in {only.label} ({cell.status.value})")
            continue
        out += compare_cells(cells_a[cid], cells_b[cid], sides)
    return out
