"""How long each cell took last time, so a run starts its longest cells first.

With cells in parallel, a long cell started last keeps one worker busy while the others idle; starting
the longest first (by the last run's time) keeps the tail short. The record lives in the cache root,
per runtime and cell id, and only cells that ran their whole timeline update it. A cell never seen before
counts as the longest: it may also have envs to build.
"""

from __future__ import annotations

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


def _key(runtime: str, cell_id: str) -> str:
    return f"{runtime} {cell_id}"


def load(root: Path | None = None) -> dict[str, float]:
    path = _path(root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


def longest_first(cells: list[CellPlan], known: dict[str, float]) -> list[CellPlan]:
    """``cells`` ordered by their last duration, longest first; unknown ones first of all, in plan order."""
    unknown = float("inf")
    return sorted(cells, key=lambda c: -known.get(_key(c.runtime, c.id), unknown))


def remember(cells: list[CellResult], root: Path | None = None) -> None:
    """Record the durations of the cells that ran to a verdict (an error cell may have stopped early)."""
    done = {_key(c.runtime, c.id): c.seconds for c in cells if c.status is not Status.ERROR and c.seconds}
    if not done:
        return
    path = _path(root)
    with FileLock(str(path) + ".lock", timeout=60):
        merged = {**load(root), **done}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        tmp.replace(path)
