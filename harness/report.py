"""Results on disk: results.json (the record), report.md (for people and CI job summaries), report.html.

What lives here: gathering the cells' verdicts of a run into a RunResult (`collect`), reading one back
(`load_run`), and rendering and writing the reports (`write_reports`), at the places harness.rundir.RunDir
names. What does not: what a verdict is (harness.results), comparing and merging runs (harness.compare),
the run's steps (harness.run).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from packaging.version import InvalidVersion, Version

from harness.backends import backend_order
from harness.compare import Changes, compare
from harness.plan import CellPlan
from harness.results import CellResult, Check, RunResult, Status, worst
from harness.rundir import RunDir

SYMBOL = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error", "skip": "⏭️ skip", "xfail": "☑️ xfail",
          "xpass": "❗ xpass"}  # fmt: skip
DIRECTIONS = ("old client → new server", "new client → old server", "store and upgrade")


def collect(
    run_dir: RunDir,
    cells: list[CellPlan],
    *,
    started: str,
    options: dict[str, Any],
    harness_version: str,
    interrupted: bool,
) -> RunResult:
    """Gather every planned cell's cell.json; a planned cell without one is listed as not run."""
    results, not_run = [], []
    for plan in cells:
        path = run_dir.cell(plan.slug).json
        if path.exists():
            results.append(CellResult.read(path))
        else:
            not_run.append(plan.id)
    return RunResult(
        run_id=run_dir.run_id,
        started=started,
        ended=datetime.now(UTC).isoformat(timespec="seconds"),
        harness_version=harness_version,
        options=options,
        cells=results,
        interrupted=interrupted,
        not_run=not_run,
    )


def load_run(run_dir: RunDir) -> RunResult:
    data = json.loads(run_dir.results.read_text())
    return RunResult(
        run_id=data["run_id"],
        started=data["started"],
        ended=data["ended"],
        harness_version=data["harness_version"],
        options=data["options"],
        cells=[CellResult.from_json(c) for c in data["cells"]],
        interrupted=data["interrupted"],
        not_run=data["not_run"],
        allow_xpass=data.get("allow_xpass", False),
    )


def _grid(run: RunResult) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Rows: upgrade paths (with clients when not the default); columns: backends, each with the features its
    cells ran with (an S3 artifact store, the auth app) as a column of its own."""
    by_column = {c.column: c for c in run.cells}
    columns = sorted(by_column, key=lambda k: (backend_order().index(by_column[k].backend), k))
    rows: dict[str, dict[str, str]] = defaultdict(dict)
    for cell in run.cells:
        rows[cell.row][cell.column] = SYMBOL[cell.status.value]
    return columns, list(rows.items())


def _phase_totals(run: RunResult) -> list[tuple[str, float, float]]:
    totals: dict[str, float] = defaultdict(float)
    for cell in run.cells:
        for phase, seconds in cell.timings.items():
            totals[phase] += seconds
    whole = sum(totals.values()) or 1.0
    return [(k, v, 100 * v / whole) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]


def _scenario_totals(run: RunResult) -> list[tuple[str, dict[str, int]]]:
    """Client checks per scenario and status, over every cell: where the skew is, at a glance."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SYMBOL, 0))
    for cell in run.cells:
        for check in cell.checks:
            if check.scenario:
                totals[check.scenario][check.status.value] += 1
    return sorted(totals.items())


def templates(autoescape: bool) -> Environment:
    """The package's Jinja templates (harness/templates), escaped for HTML or not (Markdown)."""
    return Environment(
        loader=PackageLoader("harness", "templates"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=autoescape,
    )


def _direction(check: Check) -> str:
    """Which way a check goes: an old client against a newer server, a new client against an older one,
    or neither (the store, the upgrade, servers, same-version clients)."""
    if check.client and check.server:
        try:
            client, server = Version(check.client.split("@")[0]), Version(check.server.split("@")[0])
        except InvalidVersion:
            return DIRECTIONS[2]
        if client < server:
            return DIRECTIONS[0]
        if client > server:
            return DIRECTIONS[1]
    return DIRECTIONS[2]


@dataclass
class HtmlCell:
    result: CellResult
    directions: dict[str, str]  # direction -> worst status of its checks


def _html_cells(run: RunResult) -> list[HtmlCell]:
    out = []
    for cell in run.cells:
        by: dict[str, list[Status]] = defaultdict(list)
        for check in cell.checks:
            by[_direction(check)].append(check.status)
        out.append(HtmlCell(cell, {d: worst(statuses).value for d, statuses in by.items()}))
    return out


def render_html(run: RunResult, changes: Changes | None = None) -> str:
    """report.html: the grid (upgrade path x backend x direction), each square opening its cell's checks,
    timings, components and excerpts. Self-contained: no network is needed to view it."""
    backends, _ = _grid(run)
    cells = _html_cells(run)
    grid: dict[str, dict[str, HtmlCell]] = defaultdict(dict)
    for cell in cells:
        grid[cell.result.row][cell.result.column] = cell
    return (
        templates(autoescape=True)
        .get_template("report.html.j2")
        .render(
            run=run,
            counts=run.counts(),
            statuses=[s.value for s in Status],
            backends=backends,
            directions=DIRECTIONS,
            grid=list(grid.items()),
            cells=cells,
            wall=_wall_seconds(run),
            changes=changes,
        )
    )


def render_markdown(run: RunResult, changes: Changes | None = None) -> str:
    backends, rows = _grid(run)
    bad = [c for c in run.cells if c.status in (Status.FAIL, Status.ERROR, Status.XPASS)]
    return (
        templates(autoescape=False)
        .get_template("report.md.j2")
        .render(
            run=run,
            counts=run.counts(),
            backends=backends,
            rows=rows,
            bad=bad,
            symbol=SYMBOL,
            phases=_phase_totals(run),
            scenarios=_scenario_totals(run),
            changes=changes,
            wall=_wall_seconds(run),
            Status=Status,
        )
    )


def _wall_seconds(run: RunResult) -> float:
    try:
        return (datetime.fromisoformat(run.ended) - datetime.fromisoformat(run.started)).total_seconds()
    except ValueError:
        return 0.0


def write_reports(run: RunResult, run_dir: RunDir, previous: RunResult | None = None) -> None:
    """results.json, report.md and report.html; with ``previous``, both reports list what changed."""
    changes = compare(previous, run) if previous is not None else None
    run_dir.results.write_text(json.dumps(run.to_json(), indent=2))
    run_dir.report_md.write_text(render_markdown(run, changes))
    run_dir.report_html.write_text(render_html(run, changes))
