"""Two runs compared (tonight against last night), and shard results merged into one run (a shard that
produced nothing is listed as not run, never dropped). Pure functions over RunResult: the CLI loads and
writes (and finds which shard directories hold no results), the report renders."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness import __version__
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


def _shard_label(run: RunResult) -> tuple[int, int] | None:
    """The run's `--shard I/N`, as its results.json records it (None: not a shard)."""
    value = run.options.get("shard", {}).get("value")
    if not value:
        return None
    i, _, n = str(value).partition("/")
    return int(i), int(n)


def _split_digest(run: RunResult) -> str | None:
    """The digest of the split the shard ran (its resolved `shard split` ends "; split DIGEST", written by
    harness.run.describe_split); None for a run that does not record one."""
    fact = str(run.options.get("resolved", {}).get("shard split", ""))
    found = re.search(r"; split ([0-9a-f]{12})$", fact)
    return found.group(1) if found else None


def merge(runs: list[RunResult], run_id: str, missing: Sequence[str] = (), when: str = "") -> RunResult:
    """One run from shard runs: every cell once (a cell in two shards is a mistake, refused).

    Nothing a shard should have produced may vanish: ``missing`` names the shards that produced no results
    (found by the caller: a directory missing or without results.json), and the shards present tell how
    many there were (`--shard I/N`), so each I of N that none of them is counts too. Both are listed in
    `not_run`, which fails the merged verdict (exit 3, or 1 when a check failed). ``when`` stands for the
    start and end times when no shard has any. Shards that split the cells differently (another durations
    record) are refused: some cells would have run twice and others never."""
    splits = {d: r.run_id for r in runs if (d := _split_digest(r))}
    if len(splits) > 1:
        raise ValueError(f"the runs merged split the cells differently (splits {', '.join(sorted(splits))} "
                         f"in runs {', '.join(splits[d] for d in sorted(splits))}): every shard must read "
                         "the same durations record")  # fmt: skip
    cells: dict[str, CellResult] = {}
    for run in runs:
        for cell in run.cells:
            if cell.id in cells:
                raise ValueError(f"cell {cell.id} is in more than one of the runs merged")
            cells[cell.id] = cell
    labels = {run.run_id: _shard_label(run) for run in runs}
    counts = {label[1] for label in labels.values() if label}
    if len(counts) > 1:
        raise ValueError(f"the runs merged were sharded differently (--shard I/N with N in {sorted(counts)})")
    seen: dict[int, str] = {}
    for rid, label in labels.items():
        if label:
            if label[0] in seen:
                raise ValueError(
                    f"shard {label[0]}/{label[1]} is merged twice (runs {seen[label[0]]}, {rid})"
                )
            seen[label[0]] = rid
    absent = [f"shard {i}/{n}: no results among the runs merged" for n in counts for i in range(1, n + 1)
              if i not in seen]  # fmt: skip
    options = dict(runs[0].options) if runs else {}
    if counts:
        options["shard"] = {"value": ", ".join(f"{i}/{next(iter(counts))}" for i in sorted(seen)),
                            "source": "--merge"}  # fmt: skip
    options["merged_from"] = {"value": [r.run_id for r in runs], "source": "--merge"}
    return RunResult(
        run_id=run_id,
        started=min((r.started for r in runs), default=when),
        ended=max((r.ended for r in runs), default=when),
        harness_version=runs[0].harness_version if runs else __version__,
        options=options,
        cells=sorted(cells.values(), key=lambda c: c.id),
        interrupted=any(r.interrupted for r in runs),
        not_run=[*missing, *absent, *sorted({cid for r in runs for cid in r.not_run})],
        allow_xpass=all(r.allow_xpass for r in runs),
    )
