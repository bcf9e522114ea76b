"""How long each cell took last time: a run starts its longest cells first, and shards share cells by it.

With cells in parallel, a long cell started last keeps one worker busy while the others idle; starting
the longest first (by the last run's time) keeps the tail short. The record lives in the cache root, per
runtime, cell id and set of scenarios; only cells that reached a verdict update it. A cell last seen with
other scenarios takes the longest of those times; one never seen counts as the longest of all (it may also
have envs to build).

The same record splits a run over machines (`--shard I/N`): `split` deals the cells out longest first, each
to the shard with the least so far, so the shards' totals come out close. There a cell the record has never
seen cannot count as infinitely long: it takes the median of the recorded cells like it (`estimates`). The
split reads nothing but the cells and the record, so every machine that has the same record computes the
same split (`Split.digest` tells). So a shard leaves the record as it found it: its times stay in its run
directory (`keep_with_run`) and join the record when the shards are merged (`absorb`). What does not live
here: the id rule used when the record knows none of the cells, and choosing between the two
(harness.run.split_cells); printing the shares (harness.cli).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.paths import cache_root
from harness.plan import CellPlan
from harness.results import CellResult, Status

FILE = "durations.json"
ALIKE = 3  # recorded cells a median of cells alike needs (`estimates`)


def _path(root: Path | None) -> Path:
    return (root or cache_root()) / FILE


def _key(plan: CellPlan) -> str:
    work = hashlib.sha256(",".join((*plan.scenarios, *plan.scripts)).encode()).hexdigest()[:8]
    return f"{plan.runtime} {plan.id} [{work}]"


def estimate(plan: CellPlan, known: dict[str, float]) -> float:
    """The cell's last duration with these scenarios, else with any, else infinity (unknown)."""
    if (exact := known.get(_key(plan))) is not None:
        return exact
    prefix = f"{plan.runtime} {plan.id} ["
    return max((v for k, v in known.items() if k.startswith(prefix)), default=float("inf"))


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def load(root: Path | None = None) -> dict[str, float]:
    return _read(_path(root))


def longest_first(cells: list[CellPlan], known: dict[str, float]) -> list[CellPlan]:
    """``cells`` ordered by their last duration, longest first; unknown ones first of all, in plan order."""
    return sorted(cells, key=lambda c: -estimate(c, known))


def _write(path: Path, record: dict[str, float]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)


def times(plans: list[CellPlan], results: list[CellResult]) -> dict[str, float]:
    """The record's entries for the cells that reached a verdict (an error cell may have stopped early)."""
    by_id = {p.id: p for p in plans}
    return {
        _key(by_id[c.id]): c.seconds
        for c in results
        if c.id in by_id and c.status is not Status.ERROR and c.seconds
    }


def remember(plans: list[CellPlan], results: list[CellResult], root: Path | None = None) -> None:
    """Record the durations of the cells that reached a verdict."""
    absorb([times(plans, results)], root)


def keep_with_run(plans: list[CellPlan], results: list[CellResult], run_dir: Path) -> None:
    """A shard's times, kept in its run directory instead of the record: the record must stay as it was
    for the other shards of the split, which may run after this one on the same machine (they would split
    the cells otherwise). They join the record when the shards are merged (`absorb`)."""
    _write(run_dir / FILE, times(plans, results))


def absorb(records: Sequence[dict[str, float] | Path], root: Path | None = None) -> int:
    """Write these times (or the times in these files: a missing or unreadable one holds none) over the
    record; returns how many."""
    new: dict[str, float] = {}
    for record in records:
        new.update(_read(record) if isinstance(record, Path) else record)
    if not new:
        return 0
    path = _path(root)
    with FileLock(str(path) + ".lock", timeout=60):
        _write(path, {**load(root), **new})
    return len(new)


# -- shards ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: bool  # False: the record has no time of this cell; ``seconds`` is the median of like cells


def _variant(cell: CellPlan) -> tuple[object, ...]:
    """What makes cells alike for an estimate: runtime, backend and the features that cost time."""
    return (cell.runtime, cell.backend, cell.auth, cell.artifact_store, bool(cell.scale), cell.rolling)


def estimates(cells: Sequence[CellPlan], known: dict[str, float]) -> dict[str, Estimate]:
    """Every cell's expected seconds, by id. A cell the record has (`estimate`: with these scenarios, else
    the longest with others) takes its recorded time. One it has not takes the median of the recorded
    cells among ``cells`` of the same runtime, backend and features (auth, artifact store, scale, rolling);
    if there are fewer than `ALIKE` of those, of the same runtime and backend; if fewer again, of all
    recorded cells among ``cells`` (one odd time, a cell that stopped early, must not speak for dozens).
    With no recorded cell at all, nothing is measured: every estimate is 0 (`split` then has nothing to go
    by; harness.run falls back to the ids). The medians come from the planned cells, not from the whole
    record: the record also holds other scenario sets (a quickstart-only test run is far shorter than a
    nightly cell)."""
    recorded = {c.id: s for c in cells if (s := estimate(c, known)) != float("inf")}
    alike: dict[tuple[object, ...], list[float]] = {}
    for cell in cells:
        if cell.id in recorded:
            alike.setdefault(_variant(cell), []).append(recorded[cell.id])
            alike.setdefault(_variant(cell)[:2], []).append(recorded[cell.id])
    everything = list(recorded.values())
    out: dict[str, Estimate] = {}
    for cell in cells:
        if cell.id in recorded:
            out[cell.id] = Estimate(recorded[cell.id], True)
            continue
        groups = (alike.get(_variant(cell), []), alike.get(_variant(cell)[:2], []))
        group = next((g for g in groups if len(g) >= ALIKE), everything)
        out[cell.id] = Estimate(statistics.median(sorted(group)) if group else 0.0, False)
    return out


def expected_seconds(cells: Sequence[CellPlan], known: dict[str, float] | None = None) -> dict[str, float]:
    """Every cell's expected seconds by id (`estimates` from ``known``, default: the record on disk), for a
    progress display's ETA; empty when the record has none of these cells (nothing to go by)."""
    found = estimates(cells, load() if known is None else known)
    return {c: e.seconds for c, e in found.items()} if any(e.measured for e in found.values()) else {}


@dataclass(frozen=True)
class Split:
    """``cells`` shared out over len(shares) shards; ``rule`` says how ("durations" or "ids")."""

    rule: str
    shares: list[list[CellPlan]]
    seconds: dict[str, Estimate]  # every cell's estimate, by id (all 0 and unmeasured under the id rule)

    def work(self, share: int) -> float:
        """The sum of the estimates of shard ``share``'s cells (1-based), in seconds."""
        return sum(self.seconds[c.id].seconds for c in self.shares[share - 1])

    def unmeasured(self, share: int) -> int:
        return sum(not self.seconds[c.id].measured for c in self.shares[share - 1])

    def digest(self) -> str:
        """Which cell went to which shard, hashed: shards that split alike have the same digest."""
        text = json.dumps([self.rule, [[c.id for c in share] for share in self.shares]])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def split(cells: Sequence[CellPlan], n: int, known: dict[str, float]) -> Split:
    """Longest-processing-time first: the cells by estimate, longest first (ties by id), each to the shard
    with the least estimated work so far (ties to the lowest shard). Each share is listed by id. The same
    cells and record give the same split anywhere: nothing else is read (not the plan's order, not the
    machine's cores)."""
    seconds = estimates(cells, known)
    totals = [0.0] * n
    shares: list[list[CellPlan]] = [[] for _ in range(n)]
    for cell in sorted(cells, key=lambda c: (-seconds[c.id].seconds, c.id)):
        k = min(range(n), key=lambda j: (totals[j], j))
        shares[k].append(cell)
        totals[k] += seconds[cell.id].seconds
    return Split("durations", [sorted(s, key=lambda c: c.id) for s in shares], seconds)


def wall(seconds: Sequence[float], jobs: int) -> float:
    """A shard's expected wall time: its cells longest first (as a run orders them) over ``jobs`` parallel
    workers, each cell to the worker free first. Setting up (envs, databases) is not counted."""
    free = [0.0] * max(jobs, 1)
    for s in sorted(seconds, reverse=True):
        k = min(range(len(free)), key=lambda j: (free[j], j))
        free[k] += s
    return max(free)
