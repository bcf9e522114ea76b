"""Nightly CI beyond one machine, for real: the same cells run whole and in two shards, the shards merged;
the merged run's report.html opened in headless Chromium (Debian's package)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import chromium, run_cli

pytestmark = pytest.mark.cell

CELLS = ["--runtime", "local", "--backend", "sqlite", "--backend", "file", "--path", "1.30.1:2.22.5",
         "--scenarios", "quickstart,metric_history"]  # fmt: skip


def run(results: Path, *extra: str) -> Path:
    proc = run_cli("run", "--results-dir", str(results), *CELLS, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (results / "latest").resolve()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    whole = run(root / "whole", "-n", "2")
    shards = [run(root / f"shard{i}", "--shard", f"{i}/2") for i in (1, 2)]
    merged = root / "merged"
    proc = run_cli("report", "--merge", *map(str, shards), "--out", str(merged), "--compare", str(whole))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"whole": whole, "shard1": shards[0], "shard2": shards[1], "merged": merged}


def cells(run_dir: Path) -> dict[str, str]:
    data = json.loads((run_dir / "results.json").read_text())
    return {c["id"]: c["status"] for c in data["cells"]}


def test_merged_shards_equal_the_unsharded_run(runs: dict[str, Path]) -> None:
    one, two = cells(runs["shard1"]), cells(runs["shard2"])
    assert len(one) == len(two) == 1 and not one.keys() & two.keys()
    assert cells(runs["merged"]) == cells(runs["whole"]) == {**one, **two}
    report = (runs["merged"] / "report.md").read_text()
    assert f"## Changes since {runs['whole'].name}" in report and "No cell or check changed status." in report
    for cell in json.loads((runs["merged"] / "results.json").read_text())["cells"]:
        assert (runs["merged"] / "cells" / cell["dir"] / "logs").is_dir(), "logs travel with the merge"


def test_report_html_renders_the_grid_and_opens_a_cell(runs: dict[str, Path]) -> None:
    browser = chromium()
    html = runs["merged"] / "report.html"
    cell_dir = json.loads((runs["merged"] / "results.json").read_text())["cells"][0]["dir"]
    url = f"{html.as_uri()}#cell-{cell_dir}"
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--user-data-dir=" + str(runs["merged"] / ".chromium")]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    page = dom.stdout
    assert '<table id="grid">' in page and "old client → new server" in page
    assert page.count('class="status pass"') >= 6  # 2 cells x 3 directions, every square rendered
    opened = f'<details class="cell" id="cell-{cell_dir}" open="">'
    assert opened in page, "the cell named in the address is opened by the page itself"
    assert "run.params" not in page and "quickstart" in page  # its checks are there, and they passed
    shot = runs["merged"] / "report.png"
    subprocess.run([*flags, "--window-size=1400,1000", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)  # fmt: skip
    assert shot.stat().st_size > 10_000, "a screenshot of the rendered report is kept beside it"
    shutil.rmtree(runs["merged"] / ".chromium", ignore_errors=True)
