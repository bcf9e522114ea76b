"""The compatibility table (`mlflow-compat table`): the scenario -> area mapping and the verdicts on small
synthetic runs; then, for real, a matrix cell run through the CLI, its table read as Markdown and rendered in
headless Chromium, and faults planted in copies of that real run (a failing check of one area, a row lost in
the upgrade) that the table must show."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness import integrity, scenarios, table
from harness.results import CellResult, Check, Problem, RunResult, Status
from tests.conftest import chromium, run_cli


# -- units: the mapping and the verdicts --------------------------------------------------------------------
def test_every_shipped_scenario_has_an_area() -> None:
    assert set(scenarios.all_names()) <= set(table.AREA_OF), "a new scenario needs its area in AREA_OF"
    assert set(table.AREA_OF.values()) == set(table.AREAS), "every area is exercised by some scenario"


def _check(status: Status, scenario: str, client: str, server: str, **kw: object) -> Check:
    return Check("write", "before", status, client=client, server=server, scenario=scenario, **kw)  # type: ignore[arg-type]


def _run(run_id: str, *cells: CellResult) -> RunResult:
    return RunResult(run_id, "2026-11-29T00:00:00+00:00", "2026-11-29T00:01:00+00:00", "0", {}, list(cells))


def _cell(cid: str, checks: list[Check], path: tuple[str, str] = ("2.22.5", "3.17.2")) -> CellResult:
    cell = CellResult(cid, cid.split(":")[0], "local", list(path), list(path), checks=checks)
    cell.finish()
    return cell


def test_each_status_becomes_its_area_verdict() -> None:
    checks = [
        _check(Status.PASS, "quickstart", "2.22.5", "2.22.5"),
        _check(Status.SKIP, "quickstart", "2.22.5", "2.22.5"),  # passing beats a skip in the same area
        _check(Status.FAIL, "artifacts", "2.22.5", "2.22.5", detail="files['a.bin']: bytes differ"),
        _check(
            Status.XFAIL,
            "logged_models",
            "2.22.5",
            "2.22.5",
            expected="logged-models-need-a-3.0-server",
            detail="expected (...): 404",
        ),
        _check(Status.SKIP, "datasets", "2.22.5", "2.22.5", detail="MLflow 2.22.5 has no log_input"),
        _check(Status.ERROR, "traces", "2.22.5", "2.22.5", detail="the client process timed out"),
        _check(Status.PASS, "my_team_flow", "2.22.5", "2.22.5"),
    ]
    t = table.build([_run("r1", _cell("sqlite:2.22.5->3.17.2", checks))])
    pair = ("2.22.5", "2.22.5")
    got = {a: t.entry(pair, a).verdict for a in t.areas}
    assert got == {
        "runs and metrics": table.Verdict.WORKS,
        "artifacts": table.Verdict.FAILS,
        "registry": table.Verdict.NOT_TESTED,
        "aliases": table.Verdict.NOT_TESTED,
        "datasets": table.Verdict.NOT_AVAILABLE,
        "logged models": table.Verdict.DECLARED,
        "traces": table.Verdict.UNKNOWN,
        "auth": table.Verdict.NOT_TESTED,
        table.OTHER: table.Verdict.WORKS,
    }
    assert "files['a.bin']: bytes differ" in t.entry(pair, "artifacts").worst.text
    assert "before/write artifacts client 2.22.5 server 2.22.5" in t.entry(pair, "artifacts").worst.text
    [declared] = t.entry(pair, "logged models").declared
    assert declared.id == "logged-models-need-a-3.0-server" and declared.link.startswith("https://")
    assert "logged models are a 3.0 entity" in declared.reason  # the shipped declaration's own reason
    assert "has no log_input" in t.entry(pair, "datasets").worst.text
    md = table.render_markdown(t)
    assert "| 2.22.5 → 2.22.5 | ✅ works | ❌ fails | · not tested |" in md
    assert "declared `logged-models-need-a-3.0-server`: logged models are a 3.0 entity" in md


def test_merged_runs_show_the_worst_and_say_so() -> None:
    good = _run("good", _cell("sqlite:2.22.5->3.17.2", [_check(Status.PASS, "registry", "3.17.2", "2.22.5")]))
    failing = _check(Status.FAIL, "registry", "3.17.2", "2.22.5", detail="versions['1'].stage: differs")
    bad = _run("bad", _cell("sqlite:2.22.5->3.17.2", [failing]))
    for runs in ([good, bad], [bad, good]):
        entry = table.build(runs).entry(("3.17.2", "2.22.5"), "registry")
        assert entry.verdict is table.Verdict.FAILS and entry.varies
        said = entry.disagreement()
        assert "2 runs" in said and "fails in sqlite:2.22.5->3.17.2 of run bad" in said
        assert "works in sqlite:2.22.5->3.17.2 of run good" in said
    md = table.render_markdown(table.build([good, bad]))
    assert "| 3.17.2 → 2.22.5 | · not tested | · not tested | ❌ fails * |" in md
    same = table.build([good, good]).entry(("3.17.2", "2.22.5"), "registry")
    assert not same.varies and same.disagreement() == ""


def test_a_lost_row_means_the_data_did_not_survive() -> None:
    def cell(integrity_check: Check) -> CellResult:
        up = [Check("db-upgrade", "upgrade", Status.PASS, server="3.17.2"), integrity_check]
        read = Check("read", "after", Status.PASS, client="3.17.2", server="3.17.2", scenario="quickstart",
                     writers=[{"client": "2.22.5", "server": "2.22.5", "phase": "before"}])  # fmt: skip
        return _cell("sqlite:2.22.5->3.17.2", [*up, read])

    kept = Check("integrity", "upgrade", Status.PASS, "all 40 rows kept", server="3.17.2")
    lost = Check("integrity", "upgrade", Status.PASS, server="3.17.2")
    lost.fail_each(["params row (key='lr', run_uuid='r1') missing after the upgrade"])
    [hop] = table.build([_run("r", cell(kept))]).hops
    assert hop.survived.verdict is table.Verdict.WORKS and hop.survived.worst.text.startswith("yes")
    [hop] = table.build([_run("r", cell(lost))]).hops
    assert hop.survived.verdict is table.Verdict.FAILS and hop.survived.worst.text.startswith("no")
    assert "missing after the upgrade" not in hop.survived.worst.text  # the rows column names it
    assert hop.rows.verdict is table.Verdict.FAILS
    # The upgrade itself failed: no rows were compared, and the table does not call that survival.
    failed = _cell("sqlite:2.22.5->3.17.2", [Check("db-upgrade", "upgrade", Status.FAIL, "exited with code 1",
                                                    server="3.17.2")])  # fmt: skip
    [hop] = table.build([_run("r", failed)]).hops
    assert (
        hop.survived.verdict is table.Verdict.UNKNOWN and "the upgrade did not finish" in hop.rows.worst.text
    )


def test_rows_the_new_server_lost_migrating_on_start_and_each_hop_of_a_long_path() -> None:
    """The TO server's own migration on start (unupgraded-start) losing rows counts as lost data; a path
    A -> B -> C is two hops, each judged by its own phases (upgrade-1/after-1, upgrade-2/after-2)."""
    start = Check("unupgraded-start", "upgrade-2", Status.PASS, server="3.17.2")
    start.fail_each(["runs row (run_uuid='r1') missing after the upgrade"])
    checks = [
        Check("integrity", "upgrade-1", Status.PASS, "all 10 rows kept", server="2.22.5"),
        Check("integrity", "upgrade-2", Status.PASS, "all 20 rows kept", server="3.17.2"),
        start,
    ]
    path = ("1.30.1", "2.22.5", "3.17.2")
    cell = CellResult(
        "postgres:1.30.1->2.22.5->3.17.2", "postgres", "local", list(path), list(path), checks=checks
    )
    cell.components["backend"] = {
        "product": "PostgreSQL",
        "version": "PostgreSQL 15.18 (Debian) on x86_64-pc",
    }
    first, second = table.build([_run("r", cell)]).hops
    assert (first.from_, first.to, second.from_, second.to) == ("1.30.1", "2.22.5", "2.22.5", "3.17.2")
    assert first.database == "PostgreSQL 15.18 (Debian)"
    assert first.survived.verdict is table.Verdict.WORKS and first.rows.worst.text == "all 10 rows kept"
    assert second.survived.verdict is table.Verdict.FAILS
    assert "runs row (run_uuid='r1') missing" in second.rows.worst.text


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_cli("table", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "no results.json there" in proc.stderr
    proc = run_cli("table")
    assert proc.returncode == 2, proc.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    proc = run_cli("table", str(tmp_path / "run"))
    assert proc.returncode == 2 and "results.json cannot be read" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    good = tmp_path / "good"
    good.mkdir()
    (good / "results.json").write_text(json.dumps(_run("r", _cell("sqlite:2.22.5->3.17.2", [])).to_json()))
    proc = run_cli("table", str(good), "--out", "/proc/no-such-dir")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "mlflow-compat: error: --out /proc/no-such-dir is not"
    )
    assert not list(good.glob("compat-table.*")), "nothing written on bad input"
    proc = run_cli("table", str(good))  # default: the first run's directory
    assert proc.returncode == 0 and proc.stdout.split() == [
        str(good / table.MD_NAME),
        str(good / table.HTML_NAME),
    ]


def test_the_browser_test_fails_under_ci_without_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        chromium()


# -- for real: a cell through the CLI, its table in Markdown and in Chromium ---------------------------------
# Seven of the eight areas (auth needs an --auth cell: 3x the time here), with declared failures in three.
SCENARIOS = "quickstart,artifacts,registry,registry_aliases,datasets,logged_models,traces"
REAL = ["--runtime", "local", "--backend", "sqlite", "--path", "2.22.5:3.17.2", "-n", "1", "--scenarios",
        SCENARIOS]  # fmt: skip


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    proc = run_cli("run", "--results-dir", str(root / "results"), *REAL)
    # exit 0: every failure in it is declared (xfail)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (root / "results" / "latest").resolve()


def make_table(tmp: Path, *runs: Path) -> tuple[str, Path]:
    proc = run_cli("table", *map(str, runs), "--out", str(tmp))
    assert proc.returncode == 0, proc.stderr
    md, html = (Path(line) for line in proc.stdout.split())
    assert md == tmp / "compat-table.md" and html == tmp / "compat-table.html"
    return md.read_text(), html


def row(md: str, start: str) -> list[str]:
    """The cells of the Markdown table row that starts with ``start`` (the first such row)."""
    line = next(x for x in md.splitlines() if x.startswith(start))
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def details(md: str, pair: str) -> dict[str, list[str]]:
    """One pair's details table: area -> [outcome, details]."""
    section = md.split(f"### client {pair.replace('→', '→ server')}\n", 1)[1].split("\n### ", 1)[0]
    section = section.split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| area", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


@pytest.mark.cell
def test_real_run_table_markdown(real: Path, tmp_path: Path) -> None:
    md, _ = make_table(tmp_path, real)
    header = row(md, "| client → server |")
    assert header == ["client → server", *table.AREAS]
    # Every client x server pair the cell exercised: 2.22.5 and 3.17.2 clients on both servers.
    grid = md.split("## Clients and servers", 1)[1].split("\n### ", 1)[0]
    pairs = [line.split(" | ")[0][2:] for line in grid.splitlines() if line.startswith(("| 2", "| 3"))]
    assert pairs == ["2.22.5 → 2.22.5", "2.22.5 → 3.17.2", "3.17.2 → 2.22.5", "3.17.2 → 3.17.2"]
    areas = dict(zip(table.AREAS, row(md, "| 3.17.2 → 2.22.5 |")[1:], strict=True))
    # A 3.x client on a 2.x server: logged models and traces fail as declared; runs, registry work.
    assert areas["runs and metrics"] == "✅ works" and areas["registry"] == "✅ works"
    assert areas["logged models"] == "☑️ fails (declared)" and areas["traces"] == "☑️ fails (declared)"
    assert areas["artifacts"] == "☑️ fails (declared)"  # listing a subdirectory searches logged models: 404
    d = details(md, "3.17.2 → 2.22.5")
    assert (
        "declared `logged-models-need-a-3.0-server`: logged models are a 3.0 entity" in d["logged models"][1]
    )
    assert "([upstream](https://mlflow.org/docs/latest/ml/mlflow-3/))" in d["logged models"][1]
    assert "before/write logged_models client 3.17.2 server 2.22.5" in d["logged models"][1]
    # A 2.x client has no logged models API: not available, with the skip's reason; not a failure.
    old = dict(zip(table.AREAS, row(md, "| 2.22.5 → 3.17.2 |")[1:], strict=True))
    assert old["logged models"] == "⏭️ not available"
    said = details(md, "2.22.5 → 3.17.2")["logged models"][1]
    assert "logged_models: MLflow 2.22.5 has no logged_models (since 3.0.0)" in said
    assert old["datasets"] == "✅ works" and old["aliases"] == "✅ works"
    same = dict(zip(table.AREAS, row(md, "| 3.17.2 → 3.17.2 |")[1:], strict=True))
    assert same["logged models"] == "✅ works" and same["datasets"] == "✅ works"
    assert [a for a, v in same.items() if v == "· not tested"] == ["auth"], "no --auth: auth is not tested"
    # The store upgrade: SQLite, its version as the cell recorded it; every row kept.
    upgrade = row(md, "| sqlite | 2.22.5 → 3.17.2 |")
    data = json.loads((real / "results.json").read_text())
    recorded = data["cells"][0]["components"]["backend"]
    assert upgrade[2] == f"SQLite {recorded['version']}"
    assert upgrade[3].startswith("✅ yes: every row kept")
    assert upgrade[4].startswith("✅ all ") and " rows kept" in upgrade[4]


class Cells(HTMLParser):
    """What Chromium rendered: each grid cell (pair, area) and each upgrade row's cells, with classes."""

    def __init__(self) -> None:
        super().__init__()
        self.grid: dict[tuple[str, str], tuple[str, str]] = {}
        self.hops: dict[str, list[tuple[str, str]]] = {}
        self._pair: str | None = None
        self._hop: str | None = None
        self._open: list[str] | None = None  # [key, class, text] of the cell being read
        self._in_grid = self._in_hops = False
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._in_grid = a.get("id") == "pairs"
            self._in_hops = a.get("id") == "upgrades"
        if tag == "tr":
            self._pair, self._hop = a.get("data-pair"), a.get("data-hop")
            if self._hop is not None and self._in_hops:
                self.hops[self._hop] = []
        if tag == "td" and self._open is None:
            if self._in_grid and self._pair:
                self._open = [f"{self._pair}|{a.get('data-area')}", a.get("class", ""), ""]
            elif self._in_hops and self._hop:
                self._open = ["hop", a.get("class", ""), ""]
            self._depth = 0
        elif tag == "td":
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            if self._depth:
                self._depth -= 1
                return
            key, cls, text = self._open
            if key == "hop":
                self.hops[str(self._hop)].append((cls, " ".join(text.split())))
            else:
                pair, area = key.split("|")
                self.grid[(pair, area)] = (cls, " ".join(text.split()))
            self._open = None
        if tag == "table":
            self._in_grid = self._in_hops = False

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[2] += data


def rendered(html: Path) -> Cells:
    """The page as headless Chromium built it (its DOM after loading), parsed."""
    flags = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--user-data-dir=" + str(html.parent / ".chromium")]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True)  # fmt: skip
    shutil.rmtree(html.parent / ".chromium", ignore_errors=True)
    assert '<table id="pairs">' in dom.stdout, dom.stderr[-2000:]
    cells = Cells()
    cells.feed(dom.stdout)
    return cells


@pytest.mark.cell
def test_real_run_table_in_chromium(real: Path, tmp_path: Path) -> None:
    _, html = make_table(tmp_path, real)
    source = html.read_text()
    for remote in ("<script", "<link", "@import", "url(", "src="):
        assert remote not in source, f"self-contained: no {remote} (nothing fetched, nothing run)"
    page = rendered(html)
    assert len(page.grid) == 4 * len(table.AREAS), "every pair x area cell rendered"
    cls, text = page.grid[("3.17.2→2.22.5", "logged models")]
    assert cls == "verdict declared" and text == "☑️ fails (declared)"
    cls, text = page.grid[("2.22.5→3.17.2", "logged models")]
    assert cls == "verdict not-available" and text == "⏭️ not available"
    assert page.grid[("3.17.2→3.17.2", "logged models")] == ("verdict works", "✅ works")
    assert page.grid[("2.22.5→2.22.5", "auth")] == ("verdict not-tested", "· not tested")
    hop = page.hops["sqlite 2.22.5→3.17.2"]
    recorded = json.loads((real / "results.json").read_text())["cells"][0]["components"]["backend"]
    assert hop[2] == ("database", f"SQLite {recorded['version']}")
    assert hop[3][0] == "survived works" and hop[3][1].startswith("✅ yes: every row kept")
    assert hop[4][0] == "rows works" and " rows kept" in hop[4][1]


def planted(real: Path, dest: Path) -> tuple[Path, dict]:
    """A copy of the real run (its results.json and its cells' integrity snapshots) to plant a fault in, as a
    run of its own (another night's)."""
    shutil.copytree(real, dest, ignore=shutil.ignore_patterns("logs", "scratch", "*.log"))
    data = json.loads((dest / "results.json").read_text())
    data["run_id"] += "-planted"
    return dest, data


@pytest.mark.cell
def test_planted_failing_check_shows_its_area_as_fails(real: Path, tmp_path: Path) -> None:
    run_dir, data = planted(real, tmp_path / "run")
    cell = CellResult.from_json(data["cells"][0])
    check = next(c for c in cell.checks if (c.name, c.phase, c.scenario, c.client, c.server, c.status)
                 == ("read", "after", "artifacts", "2.22.5", "3.17.2", Status.PASS))  # fmt: skip
    check.problems.append(Problem("files['tree/large.bin']: bytes differ", Status.FAIL))
    check.settle()
    check.detail = "1 difference(s) in 2 records: files['tree/large.bin']: bytes differ"
    cell.finish()
    data["cells"][0] = cell.to_json()
    (run_dir / "results.json").write_text(json.dumps(data))
    md, html = make_table(tmp_path / "one", run_dir)
    areas = dict(zip(table.AREAS, row(md, "| 2.22.5 → 3.17.2 |")[1:], strict=True))
    assert areas["artifacts"] == "❌ fails" and areas["runs and metrics"] == "✅ works"
    said = details(md, "2.22.5 → 3.17.2")["artifacts"][1]
    assert said.startswith("after/read artifacts client 2.22.5 server 3.17.2: 1 difference(s)")
    assert rendered(html).grid[("2.22.5→3.17.2", "artifacts")] == ("verdict fails", "❌ fails")
    # Merged with the real run, where the same pair worked: the worst is shown, and the table says so.
    md, _ = make_table(tmp_path / "merged", real, run_dir)
    assert (
        dict(zip(table.AREAS, row(md, "| 2.22.5 → 3.17.2 |")[1:], strict=True))["artifacts"] == "❌ fails *"
    )
    said = details(md, "2.22.5 → 3.17.2")["artifacts"][1]
    assert f"fails in {cell.id} of run {data['run_id']}" in said and "2 runs" in said


@pytest.mark.cell
def test_planted_lost_row_shows_the_data_did_not_survive(real: Path, tmp_path: Path) -> None:
    """The integrity check recomputed from the cell's own before/after snapshots with one params row dropped
    from the after side, as harness.cell.check_integrity records it."""
    run_dir, data = planted(real, tmp_path / "run")
    cell = CellResult.from_json(data["cells"][0])
    kept = json.loads((run_dir / "cells" / cell.dir / "integrity" / "upgrade.json").read_text())

    def snap(side: dict) -> integrity.Snapshot:
        tables = {name: integrity.Table(t["columns"], t["key"], {tuple(r[k] for k in t["key"]): r
                                                                 for r in t["rows"]})
                  for name, t in side["tables"].items()}  # fmt: skip
        return integrity.Snapshot(side["revision"], tables)

    before, after = snap(kept["before"]), snap(kept["after"])
    assert integrity.compare(before, after).ok, "the real upgrade kept every row"
    params = after.tables["params"].rows
    dropped = next(iter(params))
    del params[dropped]
    report = integrity.compare(before, after)
    assert len(report.differences) == 1 and "missing after the upgrade" in report.differences[0]
    check = next(c for c in cell.checks if c.name == "integrity")
    check.detail = report.summary()
    check.fail_each(report.differences)
    cell.finish()
    data["cells"][0] = cell.to_json()
    (run_dir / "results.json").write_text(json.dumps(data))
    md, html = make_table(tmp_path / "out", run_dir)
    upgrade = row(md, "| sqlite | 2.22.5 → 3.17.2 |")
    assert upgrade[3] == "❌ no: rows were lost or changed"
    assert upgrade[4].startswith("❌ upgrade/integrity server 3.17.2: 1 row difference(s): params row")
    assert "missing after the upgrade" in upgrade[4]
    hop = rendered(html).hops["sqlite 2.22.5→3.17.2"]
    assert hop[3] == ("survived fails", "❌ no: rows were lost or changed")
