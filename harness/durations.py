"""How long each cell took last time, so a run starts its longest cells first.

With cells in parallel, a long cell started last keeps one worker busy while the others idle; starting
the longest first (by the last run's time) keeps the tail short. The record lives in the cache root, per
runtime, cell id and set of scenarios; only cells that reached a verdict update it. A cell last seen with
other scenarios takes the longest of those times; one never seen counts as the longest of all (it may also
have envs to build).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from filelock import FileLock

from harness.paths import cache_root
from harness.plan import CellPlan
from harness.results import CellResult, Status

FILE = "durations.json"


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


def load(root: Path | None = None) -> dict[str, float]:
    path = _path(root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


def longest_first(cells: list[CellPlan], known: dict[str, float]) -> list[CellPlan]:
    """``cells`` ordered by their last duration, longest first; unknown ones first of all, in plan order."""
    return sorted(cells, key=lambda c: -estimate(c, known))


def remember(plans: list[CellPlan], results: list[CellResult], root: Path | None = None) -> None:
    """Record the durations of the cells that reached a verdict (an error cell may have stopped early)."""
    by_id = {p.id: p for p in plans}
    done = {
        _key(by_id[c.id]): c.seconds
        for c in results
        if c.id in by_id and c.status is not Status.ERROR and c.seconds
    }
    if not done:
        return
    path = _path(root)
    with FileLock(str(path) + ".lock", timeout=60):
        merged = {**load(root), **done}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        tmp.replace(path)
