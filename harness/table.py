"""The compatibility table: what works between which MLflow client and server, and which store upgrades kept
the data, read from one or more finished runs (`mlflow-compat table RUN... [--out DIR]`).

What lives here: the one data table that maps scenarios to API areas (`AREA_OF`), turning a run's checks into
a verdict per client x server pair and area (works / fails, declared or not / not available / not tested /
could not tell), and per store upgrade hop whether the data survived (the `integrity` check, the TO server's
own migration on start, and the pre-upgrade records read back through the TO server), merging several runs
(the worst outcome wins, and the table says when runs or cells disagreed), and rendering `compat-table.md`
and a self-contained `compat-table.html` (templates/table.*.j2). What does not: running anything, deciding
any check's status (harness.cell, harness.clientsteps, harness.expectations), the run report
(harness.report).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from packaging.version import InvalidVersion, Version

from harness import expectations
from harness.report import load_run, templates
from harness.results import CellResult, Check, RunResult, Status
from harness.rundir import RunDir

MD_NAME, HTML_NAME = "compat-table.md", "compat-table.html"

AREAS = (
    "runs and metrics",
    "artifacts",
    "registry",
    "aliases",
    "datasets",
    "logged models",
    "traces",
    "auth",
)
OTHER = "other scenarios"  # a team's own scenarios and scripts (--scenario-dir, --scenario), not in AREA_OF

# Which API area each built-in scenario exercises (tests/test_table.py: every shipped scenario is here).
AREA_OF: dict[str, str] = {
    "quickstart": "runs and metrics",
    "metric_history": "runs and metrics",
    "metric_values": "runs and metrics",
    "metric_pages": "runs and metrics",
    "tags_and_status": "runs and metrics",
    "run_lifecycle": "runs and metrics",
    "nested_and_batch": "runs and metrics",
    "search": "runs and metrics",
    "experiment_lifecycle": "runs and metrics",
    "long_values": "runs and metrics",
    "long_params": "runs and metrics",
    "artifacts": "artifacts",
    "s3_artifacts": "artifacts",
    "registry": "registry",
    "prompts": "registry",  # the prompt registry is kept as registered models and versions
    "registry_aliases": "aliases",
    "datasets": "datasets",
    "logged_models": "logged models",
    "models": "logged models",  # a model logged, registered and loaded back by every client
    "traces": "traces",
    "assessments": "traces",
    "auth": "auth",
}


def area_of(scenario: str) -> str:
    return AREA_OF.get(scenario, OTHER)


class Verdict(Enum):
    """An area's outcome for one pair, worst first (the order merging uses)."""

    FAILS = ("fails", "❌", "fails")
    DECLARED = ("declared", "☑️", "fails (declared)")
    UNKNOWN = ("unknown", "⚠️", "could not tell")
    WORKS = ("works", "✅", "works")
    NOT_AVAILABLE = ("not-available", "⏭️", "not available")
    NOT_TESTED = ("not-tested", "·", "not tested")

    def __init__(self, css: str, symbol: str, text: str) -> None:
        self.css, self.symbol, self.text = css, symbol, text

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.text}"


CHECK_VERDICT = {
    Status.FAIL: Verdict.FAILS,
    Status.XFAIL: Verdict.DECLARED,
    Status.ERROR: Verdict.UNKNOWN,
    Status.PASS: Verdict.WORKS,
    Status.XPASS: Verdict.WORKS,  # passed although declared to fail: it works (the declaration is stale)
    Status.SKIP: Verdict.NOT_AVAILABLE,
}


@dataclass(frozen=True)
class Declared:
    """A declared incompatibility, as the table shows it."""

    id: str
    reason: str
    link: str


@dataclass(frozen=True)
class Seen:
    """One cell's outcome for one pair and area (or one upgrade hop): its verdict and what to say about it."""

    verdict: Verdict
    text: str
    run_id: str
    cell_id: str
    declared: tuple[Declared, ...] = ()


@dataclass
class Entry:
    """Every cell's outcome for one pair and area (or one hop); the table shows the worst and says when the
    cells disagreed."""

    seen: list[Seen] = field(default_factory=list)

    @property
    def worst(self) -> Seen:
        return min(self.seen, key=lambda s: s.verdict.rank)

    @property
    def verdict(self) -> Verdict:
        return self.worst.verdict if self.seen else Verdict.NOT_TESTED

    @property
    def varies(self) -> bool:
        return len({s.verdict for s in self.seen}) > 1

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(s.run_id for s in self.seen))

    def disagreement(self) -> str:
        """Empty when every cell agreed; else which cells (of which runs) saw what, worst first."""
        if not self.varies:
            return ""
        runs = self.runs
        by: dict[Verdict, list[str]] = defaultdict(list)
        for s in self.seen:
            by[s.verdict].append(s.cell_id + (f" of run {s.run_id}" if len(runs) > 1 else ""))
        parts = []
        for verdict, where in sorted(by.items(), key=_rank):
            where = list(dict.fromkeys(where))
            more = f" (+{len(where) - 3} more)" if len(where) > 3 else ""
            parts.append(f"{verdict.text} in {', '.join(where[:3])}{more}")
        across = f"{len(runs)} runs" if len(runs) > 1 else "1 run"
        return f"outcomes differ ({len(self.seen)} cells, {across}), the worst shown: " + "; ".join(parts)

    @property
    def declared(self) -> list[Declared]:
        worst = self.worst
        return list({d.id: d for s in self.seen if s.verdict is worst.verdict for d in s.declared}.values())


def _rank(item: tuple[Verdict, list[str]]) -> int:
    return item[0].rank


@dataclass
class Hop:
    """One store upgrade (backend with features x FROM -> TO) on one database product and version."""

    store: str  # the cell's column: backend and features ("sqlite + auth")
    from_: str
    to: str
    database: str  # "SQLite 3.40.1", "MariaDB 10.11.6", "file store (mlruns directory)"
    survived: Entry = field(default_factory=Entry)
    rows: Entry = field(default_factory=Entry)  # integrity (and the TO server's own migration on start)
    reads: Entry = field(default_factory=Entry)  # pre-upgrade records read back through the TO server


@dataclass
class Table:
    runs: list[RunResult]
    pairs: dict[tuple[str, str], dict[str, Entry]]  # (client, server) -> area -> entry
    areas: list[str]
    hops: list[Hop]
    not_run: list[str]

    def entry(self, pair: tuple[str, str], area: str) -> Entry:
        return self.pairs[pair].get(area) or Entry()

    def varies(self) -> bool:
        entries = [e for areas in self.pairs.values() for e in areas.values()]
        entries += [h.survived for h in self.hops]
        return any(e.varies for e in entries)


# -- the runs' checks as verdicts ---------------------------------------------------------------------
class Declarations:
    """Declared incompatibilities by id: the shipped ones and those of the files each run was given."""

    def __init__(self, runs: Iterable[RunResult]) -> None:
        self.by_id: dict[str, Declared] = {}
        for e in expectations.default():
            self.by_id[e.id] = Declared(e.id, e.reason, e.link)
        for run in runs:
            for path in _extra_files(run):
                try:
                    for e in expectations.load(Path(path)):
                        self.by_id[e.id] = Declared(e.id, e.reason, e.link)
                except (expectations.ExpectationError, OSError):
                    continue  # gone or changed since the run: the check's own text says why (below)

    def of(self, check: Check) -> tuple[Declared, ...]:
        ids = [i.strip() for i in (check.expected or "").split(",") if i.strip()]
        ids += [p.expected for p in check.problems if p.expected and p.expected not in ids]
        return tuple(self.by_id.get(i) or Declared(i, check.detail, "") for i in ids)


def _extra_files(run: RunResult) -> list[str]:
    """The expectation files a run was given beside the shipped one, as its options recorded them."""
    value = run.options.get("expectations", {})
    value = value.get("value") if isinstance(value, dict) else value
    if not value:
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pair_seen(checks: list[Check], run: RunResult, cell: CellResult, known: Declarations) -> Seen:
    """One cell's checks of one pair and area as one outcome: the worst check's, said in words."""
    worst = min((CHECK_VERDICT[c.status] for c in checks), key=lambda v: v.rank)
    mine = [c for c in checks if CHECK_VERDICT[c.status] is worst]
    scenarios = sorted({c.scenario or "" for c in mine})
    more = f" (+{len(mine) - 1} more)" if len(mine) > 1 else ""
    first = mine[0]
    declared: tuple[Declared, ...] = ()
    if worst is Verdict.FAILS:
        text = f"{first.label()}: {_short(first.detail)}{more}"
    elif worst is Verdict.DECLARED:
        declared = tuple({d.id: d for c in mine for d in known.of(c)}.values())
        text = f"{first.label()}{more}"
    elif worst is Verdict.UNKNOWN:
        text = f"harness or machine error in {first.label()}: {_short(first.detail)}{more}"
    elif worst is Verdict.NOT_AVAILABLE:
        reasons = list(dict.fromkeys(f"{c.scenario}: {c.detail}" for c in mine))
        text = "; ".join(reasons)
    else:
        stale = [c for c in mine if c.status is Status.XPASS]
        text = f"{len(mine)} check(s) passed ({', '.join(scenarios)})"
        if stale:
            text += f"; declared to fail but passed (stale): {stale[0].label()}"
        skipped = [c for c in checks if c.status is Status.SKIP]
        if skipped:
            text += "; not available: " + "; ".join(
                dict.fromkeys(f"{c.scenario}: {c.detail}" for c in skipped)
            )
    return Seen(worst, text, run.run_id, cell.id, declared)


def _hop_phases(cell: CellResult) -> list[tuple[str, str, str, str]]:
    """(from, to, upgrade phase, after phase) for each hop of the cell's path, as harness.cell names them."""
    path = cell.path
    if len(path) == 2:
        return [(path[0], path[1], "upgrade", "after")]
    return [(path[k - 1], path[k], f"upgrade-{k}", f"after-{k}") for k in range(1, len(path))]


def _database(cell: CellResult) -> str:
    """The product and version the cell's store ran on, as its components recorded them (e.g. "PostgreSQL
    15.18 (Debian 15.18-0+deb12u1)", "MariaDB 10.11.19-MariaDB-0+deb12u1 (standing in for MySQL ...)")."""
    backend = cell.components.get("backend") or {}
    product, version = str(backend.get("product", "")), str(backend.get("version", ""))
    if not product:
        return f"{cell.backend} (product not recorded)"
    version = version.split(", compiled by")[0].split(" on x86_64")[0].split(" on aarch64")[0]
    text = version if version.lower().startswith(product.lower()) else f"{product} {version}".strip()
    return f"{text} ({backend['note']})" if backend.get("note") else text


def _rows_seen(run: RunResult, cell: CellResult, up: str, known: Declarations) -> Seen:
    """Did every row survive this hop's `mlflow db upgrade` (and the TO server's own migration on start)?"""
    here = [c for c in cell.checks if c.phase == up]
    integrity = [c for c in here if c.name == "integrity"]
    on_start = [c for c in here if c.name == "unupgraded-start" and c.problems]
    upgrade = [c for c in here if c.name == "db-upgrade"]
    lost = [c for c in integrity + on_start if c.status is Status.FAIL]
    if lost:
        said = [f"{c.label()}: {_short(c.detail or '; '.join(p.text for p in c.problems))}" for c in lost]
        return Seen(Verdict.FAILS, "; ".join(said), run.run_id, cell.id)
    declared = [c for c in integrity + on_start if c.status is Status.XFAIL]
    if declared:
        return Seen(Verdict.DECLARED, declared[0].label(), run.run_id, cell.id,
                    tuple(d for c in declared for d in known.of(c)))  # fmt: skip
    if broken := [c for c in integrity if c.status is Status.ERROR]:
        return Seen(Verdict.UNKNOWN, f"{broken[0].label()}: {_short(broken[0].detail)}", run.run_id, cell.id)
    if integrity and integrity[0].status is Status.SKIP:
        return Seen(Verdict.NOT_AVAILABLE, f"rows not compared: {integrity[0].detail}", run.run_id, cell.id)
    if integrity:
        extra = (
            f"; the TO server migrated the store itself on start: {on_start[0].detail}" if on_start else ""
        )
        return Seen(Verdict.WORKS, _short(integrity[0].detail) + extra, run.run_id, cell.id)
    failed = [c for c in upgrade if c.status in (Status.FAIL, Status.XFAIL, Status.ERROR)]
    if failed:
        return Seen(Verdict.UNKNOWN, f"rows not compared: the upgrade did not finish ({failed[0].label()}: "
                    f"{_short(failed[0].detail)})", run.run_id, cell.id)  # fmt: skip
    skipped = [c for c in here if c.status is Status.SKIP]
    if skipped:  # a store without a schema (the file store): nothing to compare row by row
        return Seen(Verdict.NOT_AVAILABLE, f"rows not compared: {skipped[0].detail}", run.run_id, cell.id)
    return Seen(Verdict.UNKNOWN, "rows not compared: the cell ended before this upgrade", run.run_id, cell.id)


def _reads_seen(run: RunResult, cell: CellResult, after: str, known: Declarations) -> Seen:
    """Were the records written before this hop read back exactly through the TO server?"""
    reads = [c for c in cell.checks if c.phase == after and c.name == "read" and c.scenario]
    older = [c for c in reads if any(w.get("phase") != after for w in c.writers)]
    if not older:
        return Seen(Verdict.NOT_TESTED, "no pre-upgrade record was read back after it", run.run_id, cell.id)
    problems = [(c, p) for c in older for p in c.problems if (p.written_by or {}).get("phase") != after]
    for status, verdict in ((Status.FAIL, Verdict.FAILS), (Status.XFAIL, Verdict.DECLARED),
                            (Status.ERROR, Verdict.UNKNOWN)):  # fmt: skip
        bad = [(c, p) for c, p in problems if p.status is status]
        if bad:
            c, p = bad[0]
            more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
            declared = tuple({d.id: d for c, p in bad for d in known.of(c) if d.id == p.expected}.values())
            return Seen(verdict, f"{c.label()}: {_short(p.text)}{more}", run.run_id, cell.id, declared)
    readers = sorted({c.client or "" for c in older}, key=version_key)
    return Seen(Verdict.WORKS, f"read back exactly by client(s) {', '.join(readers)} ({len(older)} checks)",
                run.run_id, cell.id)  # fmt: skip


def _survived(rows: Seen, reads: Seen) -> Seen:
    """The hop's answer. The rows decide (a lost or changed row: no); records written before the upgrade that
    no longer read back as written through the TO server count against it too, unless declared: a declared
    read difference (e.g. +-inf kept as the largest double by every SQL store, before the upgrade as after)
    is said, not counted as lost data. A store without rows to compare (the file store) is judged by the
    reads alone."""
    run_id, cell_id = rows.run_id, rows.cell_id
    if rows.verdict is Verdict.FAILS:
        return Seen(Verdict.FAILS, "no: rows were lost or changed", run_id, cell_id)
    if reads.verdict is Verdict.FAILS:
        return Seen(Verdict.FAILS, "no: pre-upgrade records no longer read back as written", run_id, cell_id)
    if rows.verdict is Verdict.DECLARED:
        return Seen(Verdict.DECLARED, "rows changed as declared", run_id, cell_id, rows.declared)
    if Verdict.UNKNOWN in (rows.verdict, reads.verdict):
        return Seen(Verdict.UNKNOWN, "could not tell", run_id, cell_id)
    if rows.verdict is Verdict.WORKS:
        note = {
            Verdict.DECLARED: "; some pre-upgrade records read back differently, as declared (see reads)",
            Verdict.NOT_TESTED: "; no pre-upgrade record was read back through the new server",
        }.get(reads.verdict, "")
        return Seen(Verdict.WORKS, "yes: every row kept" + note, run_id, cell_id)
    if reads.verdict is Verdict.DECLARED:  # no rows to compare: what the reads found is the answer
        return Seen(Verdict.DECLARED, "pre-upgrade records read back changed, as declared", run_id, cell_id,
                    reads.declared)  # fmt: skip
    if reads.verdict is Verdict.WORKS:
        return Seen(Verdict.WORKS, "yes: pre-upgrade records read back exactly (no rows to compare)", run_id,
                    cell_id)  # fmt: skip
    return Seen(Verdict.NOT_TESTED, "not checked", run_id, cell_id)


def version_key(label: str) -> tuple[int, Version | str]:
    try:
        return (0, Version(label.split("@")[0]))
    except InvalidVersion:
        return (1, label)


def build(runs: list[RunResult]) -> Table:
    """The table of ``runs`` merged: every pair and area, every upgrade hop, worst outcome first."""
    known = Declarations(runs)
    pairs: dict[tuple[str, str], dict[str, Entry]] = defaultdict(lambda: defaultdict(Entry))
    hops: dict[tuple[str, str, str, str], Hop] = {}
    other = False
    for run in runs:
        for cell in run.cells:
            grouped: dict[tuple[str, str, str], list[Check]] = defaultdict(list)
            for check in cell.checks:
                if check.scenario and check.client and check.server:
                    area = area_of(check.scenario)
                    other |= area == OTHER
                    grouped[(check.client, check.server, area)].append(check)
            for (client, server, area), checks in grouped.items():
                pairs[(client, server)][area].seen.append(_pair_seen(checks, run, cell, known))
            for from_, to, up, after in _hop_phases(cell):
                key = (cell.column, from_, to, _database(cell))
                hop = hops.setdefault(key, Hop(cell.column, from_, to, key[3]))
                rows, reads = _rows_seen(run, cell, up, known), _reads_seen(run, cell, after, known)
                hop.rows.seen.append(rows)
                hop.reads.seen.append(reads)
                hop.survived.seen.append(_survived(rows, reads))
    ordered = dict(sorted(pairs.items(), key=lambda kv: (version_key(kv[0][0]), version_key(kv[0][1]))))
    hop_list = sorted(
        hops.values(), key=lambda h: (h.store, version_key(h.from_), version_key(h.to), h.database)
    )
    not_run = [f"{cid} (run {run.run_id})" for run in runs for cid in run.not_run]
    areas = [*AREAS, OTHER] if other else list(AREAS)
    return Table(runs, {k: dict(v) for k, v in ordered.items()}, areas, hop_list, not_run)


# -- rendering -----------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown(table: Table) -> str:
    return (
        templates(autoescape=False)
        .get_template("table.md.j2")
        .render(t=table, Verdict=Verdict, Entry=Entry, md=_md_cell)
    )


def render_html(table: Table) -> str:
    return (
        templates(autoescape=True).get_template("table.html.j2").render(t=table, Verdict=Verdict, Entry=Entry)
    )


class TableInput(ValueError):
    """A path given to the table that is not a readable run directory (the command line: bad input)."""


def load_runs(paths: list[Path]) -> list[RunResult]:
    """The runs at ``paths`` (each a run directory; the same one given twice counts once)."""
    runs, seen = [], set()
    for path in paths:
        run_dir = RunDir(path)
        if not run_dir.is_run():
            raise TableInput(f"table {path}: no results.json there (a run directory is needed)")
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            runs.append(load_run(run_dir))
        except (ValueError, KeyError, TypeError) as exc:
            raise TableInput(
                f"table {path}: results.json cannot be read ({type(exc).__name__}: {exc})"
            ) from None
    return runs


def write_table(runs: list[RunResult], out: Path) -> tuple[Path, Path]:
    """compat-table.md and compat-table.html of ``runs`` merged, in ``out``. Returns their paths."""
    table = build(runs)
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / MD_NAME, out / HTML_NAME
    md.write_text(render_markdown(table))
    html.write_text(render_html(table))
    return md, html
