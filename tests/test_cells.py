"""Real cells: real MLflow wheels from the index, real `mlflow server` processes, real stores.

The default run keeps to MLflow 1.30.1 and 2.22.5 (the smallest envs); the other default-matrix paths
are marked slow (`nox -s tests -- -m slow`).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path

import pytest

from harness.backends import FileStore, SqliteStore, Store
from harness.cell import CellContext, run_cell
from harness.envs import EnvCache
from harness.plan import CellPlan, default_clients
from harness.results import CellResult, Status
from harness.runtime import get_runtime
from harness.specs import parse_path
from tests.conftest import run_cli

pytestmark = pytest.mark.cell


def mlflow_processes() -> list[str]:
    """Server processes started from the harness's env cache that are still running."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "mlflow-compat/envs/" in line and " server" in line]


def run_one(tmp_path: Path, backend: str, path: str, tamper=None) -> CellResult:
    specs = parse_path(path)
    plan = CellPlan(backend, specs, default_clients(specs))
    ctx = CellContext(
        cell_dir=tmp_path / plan.slug,
        runtime=get_runtime("local"),
        envs=EnvCache(),
        work_root=tmp_path,
        tamper=tamper,
    )
    return run_cell(plan, ctx)


def checks(result: CellResult, status: Status) -> list[str]:
    return [f"{c.phase}/{c.name}/{c.client}" for c in result.checks if c.status is status]


def test_matrix_end_to_end(tmp_path: Path, unresolvable_wheel: Path) -> None:
    """`mlflow-compat run` as a user runs it: two real cells pass, and the cells of an MLflow that cannot
    be installed end as `error` with the resolver's reason while the others still run."""
    results = tmp_path / "results"
    proc = run_cli(
        "run",
        "--results-dir",
        str(results),
        "--backend",
        "sqlite",
        "--backend",
        "file",
        "--path",
        "1.30.1:2.22.5",
        "--path",
        f"{unresolvable_wheel}:2.22.5",
        "-n",
        "2",
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr  # infrastructure errors only, no failure
    run_dir = (results / "latest").resolve()
    data = json.loads((run_dir / "results.json").read_text())
    cells = {c["id"]: c for c in data["cells"]}
    assert set(cells) == {
        "sqlite:1.30.1->2.22.5",
        "file:1.30.1->2.22.5",
        "sqlite:0.0.1@wheel->2.22.5",
        "file:0.0.1@wheel->2.22.5",
    }
    for cid in ("sqlite:1.30.1->2.22.5", "file:1.30.1->2.22.5"):
        cell = cells[cid]
        assert cell["status"] == "pass", cell["summary"]
        assert cell["from"] == "1.30.1" and cell["to"] == "2.22.5" and cell["runtime"] == "local"
        names = {(c["phase"], c["name"], c["client"]) for c in cell["checks"] if c["status"] == "pass"}
        for phase in ("before", "after"):
            for client in ("1.30.1", "2.22.5"):
                assert (phase, "write", client) in names and (phase, "read", client) in names
        assert ("rollback", "restore-read", "1.30.1") in names
        assert set(cell["components"]["artifact_modes"].values()) == {"proxied"}
    sqlite_cell = cells["sqlite:1.30.1->2.22.5"]
    upgrade = next(c for c in sqlite_cell["checks"] if c["name"] == "db-upgrade")
    assert upgrade["detail"].startswith("revision 97727af70f4d -> 0584bdc529eb")
    refusal = next(c for c in sqlite_cell["checks"] if c["name"] == "rollback-start")
    assert refusal["status"] == "pass" and "Detected out-of-date database schema" in refusal["detail"]
    for cid in ("sqlite:0.0.1@wheel->2.22.5", "file:0.0.1@wheel->2.22.5"):
        assert cells[cid]["status"] == "error"
        assert "mlflow-compat-no-such-package-anywhere" in cells[cid]["summary"]
    junit = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    assert junit is not None
    assert (junit.get("tests"), junit.get("errors"), junit.get("failures")) == ("4", "2", "0")
    report = (run_dir / "report.md").read_text()
    assert "| 1.30.1->2.22.5 | ✅ pass | ✅ pass |" in report and "## Failures and errors" in report
    assert (run_dir / "cells" / "sqlite_1.30.1_to_2.22.5" / "logs" / "before-server-1.30.1.log").exists()
    assert mlflow_processes() == []


def _tamper_sqlite_param(point: str, store: Store) -> None:
    if point == "before-upgrade":
        assert isinstance(store, SqliteStore)
        with closing(sqlite3.connect(store.db_path)) as con, con:
            changed = con.execute(
                "UPDATE params SET value = '0.02' WHERE key = 'learning_rate' AND run_uuid = "
                "(SELECT MIN(run_uuid) FROM params)"
            ).rowcount
        assert changed == 1


def test_param_changed_behind_the_clients_back_fails(tmp_path: Path) -> None:
    result = run_one(tmp_path, "sqlite", "1.30.1:2.22.5", tamper=_tamper_sqlite_param)
    assert result.status is Status.FAIL
    assert checks(result, Status.FAIL) == [
        "after/read/1.30.1",
        "after/read/2.22.5",
        "rollback/restore-read/1.30.1",
    ]
    assert "before/read/1.30.1" in checks(result, Status.PASS)  # the reads before the change agreed
    bad = next(c for c in result.checks if c.status is Status.FAIL)
    assert "param 'learning_rate' is '0.02', expected '0.01'" in bad.detail
    assert result.summary.startswith("after read (client 1.30.1 -> server 2.22.5): 1 difference(s) in 4 runs")


def _tamper_file_store_artifact(point: str, store: Store) -> None:
    if point == "before-upgrade":
        assert isinstance(store, FileStore)
        files = sorted(store.artifacts_dir.rglob("model_config.txt"))
        assert len(files) == 2
        files[0].write_text("model_type: LogisticRegression\nn_estimators: 100\n")


def test_artifact_bytes_changed_in_a_file_store_fail(tmp_path: Path) -> None:
    result = run_one(tmp_path, "file", "1.30.1:2.22.5", tamper=_tamper_file_store_artifact)
    assert result.status is Status.FAIL
    failed = [c for c in result.checks if c.status is Status.FAIL]
    assert {c.phase for c in failed} == {"after", "rollback"}
    assert all("artifact 'model_config.txt' bytes differ" in c.detail for c in failed)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "sqlite"])
@pytest.mark.parametrize("path", ["2.22.5:3.17.2", "1.30.1:3.17.2"])
def test_default_matrix_paths(tmp_path: Path, backend: str, path: str) -> None:
    result = run_one(tmp_path, backend, path)
    assert result.status is Status.PASS, result.summary
