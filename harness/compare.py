"""Two runs compared (tonight against last night), and shard results merged into one run. Pure functions
over RunResult: the CLI loads and writes, the report renders."""

from __future__ import annotations

from dataclasses import dataclass

from harness.results import CellResult, Check, RunResult, Status

# How bad a status is, for ordering changes: new failures first.
_ORDER = (Status.FAIL, Status.XPASS, Status.ERROR, Status.XFAIL, Status.SKIP, Status.PASS)
_SEVERITY = {status: i for i, status in enumerate(_ORDER)}
GONE = "absent"


@dataclass(frozen=True)
class Change:
    what: str  # "cell sqlite:1.30.1->2.22.5", or a check: "sqlite:1.30.1->2.22.5 after/read registry (...)"
    was: str  # a status, or "absent"
    now: str

    @property
    def worse(self) -> bool:
        return _rank(self.now) < _rank(self.was)


def _rank(status: str) -> int:
    return len(_SEVERITY) if status == GONE else _SEVERITY[Status(status)]


@dataclass(frozen=True)
class Changes:
    previous: str  # the previous run's id
    items: list[Change]


def _check_key(cell: CellResult, check: Check) -> str:
    who = " -> ".join(x for x in (check.client and f"client {check.client}", check.server and f"server "
                                  f"{check.server}") if x)  # fmt: skip
    scenario = f" {check.scenario}" if check.scenario else ""
    return f"{cell.id} {check.phase}/{check.name}{scenario}" + (f" ({who})" if who else "")


def _checks(run: RunResult) -> dict[str, str]:
    out: dict[str, str] = {}
    for cell in run.cells:
        for check in cell.checks:
            key = _check_key(cell, check)
            # The same step may repeat (a backup per server start); keep the worst of them.
            if key not in out or _rank(check.status.value) < _rank(out[key]):
                out[key] = check.status.value
    return out


def compare(previous: RunResult, current: RunResult) -> Changes:
    """Cells and checks whose status changed, new failures first, then other changes for the worse, then
    improvements."""
    items: list[Change] = []
    was_cells = {c.id: c.status.value for c in previous.cells}
    now_cells = {c.id: c.status.value for c in current.cells}
    for cid in sorted(was_cells.keys() | now_cells.keys()):
        was, now = was_cells.get(cid, GONE), now_cells.get(cid, GONE)
        if was != now:
            items.append(Change(f"cell {cid}", was, now))
    was_checks, now_checks = _checks(previous), _checks(current)
    common_cells = was_cells.keys() & now_cells.keys()
    for key in sorted(was_checks.keys() | now_checks.keys()):
        if key.split(" ", 1)[0] not in common_cells:
            continue  # a cell that came or went is listed once, above
        was, now = was_checks.get(key, GONE), now_checks.get(key, GONE)
        if was != now:
            items.append(Change(key, was, now))
    items.sort(key=lambda c: (not c.worse, _rank(c.now), c.what))
    return Changes(previous=previous.run_id, items=items)


def merge(runs: list[RunResult], run_id: str) -> RunResult:
    """One run from shard runs: every cell once (a cell in two shards is a mistake, refused)."""
    cells: dict[str, CellResult] = {}
    for run in runs:
        for cell in run.cells:
            if cell.id in cells:
                raise ValueError(f"cell {cell.id} is in more than one of the runs merged")
            cells[cell.id] = cell
    return RunResult(
        run_id=run_id,
        started=min(r.started for r in runs),
        ended=max(r.ended for r in runs),
        harness_version=runs[0].harness_version,
        options={**runs[0].options, "merged_from": {"value": [r.run_id for r in runs], "source": "--merge"}},
        cells=sorted(cells.values(), key=lambda c: c.id),
        interrupted=any(r.interrupted for r in runs),
        not_run=sorted({cid for r in runs for cid in r.not_run}),
        allow_xpass=all(r.allow_xpass for r in runs),
    )
