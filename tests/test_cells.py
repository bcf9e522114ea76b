"""Real cells: real MLflow wheels from the index, real `mlflow server` processes, real stores.

The default run keeps to MLflow 1.30.1 and 2.22.5 (the smallest envs); the other default-matrix paths
are marked slow (`nox -s tests -- -m slow`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.backends import DatabaseStore, FileStore, SqliteStore, Store, database_name
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


def run_one(tmp_path: Path, backend: str, path: str, tamper=None, databases=None) -> CellResult:
    specs = parse_path(path)
    plan = CellPlan(backend, specs, default_clients(specs))
    servers = {backend: databases.get_server(backend)} if backend in ("postgres", "mysql") else {}
    ctx = CellContext(
        cell_dir=tmp_path / plan.slug,
        runtime=get_runtime("local"),
        envs=EnvCache(),
        work_root=tmp_path,
        tamper=tamper,
        databases=servers,
        run_id=tmp_path.name,
    )
    result = run_cell(plan, ctx)
    if servers:  # the cell dropped its database again
        assert ctx.databases[backend].databases().count(database_name(ctx.run_id, plan.slug)) == 0
    return result


def checks(result: CellResult, status: Status) -> list[str]:
    return [f"{c.phase}/{c.name}/{c.client}" for c in result.checks if c.status is status]


def test_matrix_end_to_end(tmp_path: Path, unresolvable_wheel: Path) -> None:
    """`mlflow-compat run` as a user runs it: real cells pass on the file store, SQLite and a MariaDB the run
    starts and stops itself; the cells of an MLflow that cannot be installed end as `error` with the
    resolver's reason while the others still run; nothing is left running."""
    results = tmp_path / "results"
    backends = ["--backend", "file", "--backend", "sqlite", "--backend", "mysql"]
    paths = ["--path", "1.30.1:2.22.5", "--path", f"{unresolvable_wheel}:2.22.5"]
    proc = run_cli("run", "--results-dir", str(results), "--runtime", "local", *backends, *paths, "-n", "2")
    assert proc.returncode == 3, proc.stdout + proc.stderr  # infrastructure errors only, no failure
    run_dir = (results / "latest").resolve()
    data = json.loads((run_dir / "results.json").read_text())
    cells = {c["id"]: c for c in data["cells"]}
    good = [f"{b}:1.30.1->2.22.5" for b in ("file", "sqlite", "mysql")]
    bad = [f"{b}:0.0.1@wheel->2.22.5" for b in ("file", "sqlite", "mysql")]
    assert set(cells) == {*good, *bad}
    for cid in good:
        cell = cells[cid]
        assert cell["status"] == "pass", cell["summary"]
        assert cell["from"] == "1.30.1" and cell["to"] == "2.22.5" and cell["runtime"] == "local"
        names = {(c["phase"], c["name"], c["client"]) for c in cell["checks"] if c["status"] == "pass"}
        for phase in ("before", "after"):
            for client in ("1.30.1", "2.22.5"):
                assert (phase, "write", client) in names and (phase, "read", client) in names
        assert ("rollback", "restore-read", "1.30.1") in names
        assert set(cell["components"]["artifact_modes"].values()) == {"proxied"}
    for cid in ("sqlite:1.30.1->2.22.5", "mysql:1.30.1->2.22.5"):
        by_name = {c["name"]: c for c in cells[cid]["checks"]}
        assert by_name["db-upgrade"]["detail"].startswith("revision 97727af70f4d -> 0584bdc529eb")
        assert re.match(r"all \d+ rows kept; new tables datasets, ", by_name["integrity"]["detail"])
        refusal = by_name["rollback-start"]
        assert refusal["status"] == "pass" and "Detected out-of-date database schema" in refusal["detail"]
    assert cells["mysql:1.30.1->2.22.5"]["components"]["backend"]["product"] == "MariaDB"
    for cid in bad:
        assert cells[cid]["status"] == "error"
        assert "mlflow-compat-no-such-package-anywhere" in cells[cid]["summary"]
    junit = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    assert junit is not None
    assert (junit.get("tests"), junit.get("errors"), junit.get("failures")) == ("6", "3", "0")
    report = (run_dir / "report.md").read_text()
    assert "| 1.30.1->2.22.5 | ✅ pass | ✅ pass | ✅ pass |" in report and "## Failures and errors" in report
    assert "MariaDB" in report
    assert (run_dir / "cells" / "sqlite_1.30.1_to_2.22.5" / "logs" / "before-server-1.30.1.log").exists()
    assert mlflow_processes() == []
    assert not any(Path(tempfile.gettempdir()).glob("mlflow-compat-mariadb-*")), "the run's MariaDB is left"


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


def test_postgres_multi_hop_upgrade_keeps_every_row(tmp_path: Path, databases) -> None:
    """One PostgreSQL store upgraded twice (1.30.1 -> 2.22.5 -> 3.17.2), written at each hop, read at last."""
    result = run_one(tmp_path, "postgres", "1.30.1:2.22.5:3.17.2", databases=databases)
    assert result.status is Status.PASS, result.summary
    by = {(c.phase, c.name, c.client): c for c in result.checks}
    assert by[("upgrade-1", "db-upgrade", None)].detail.startswith("revision 97727af70f4d -> 0584bdc529eb")
    assert by[("upgrade-2", "db-upgrade", None)].detail.startswith("revision 0584bdc529eb -> dc11669786a5")
    # Row counts depend on the system tags each client version sets; what matters is that all were kept.
    kept = [re.match(r"all (\d+) rows kept", by[(f"upgrade-{i}", "integrity", None)].detail) for i in (1, 2)]
    assert kept[0] and kept[1] and 20 <= int(kept[0][1]) < int(kept[1][1])
    assert by[("after-2", "read", "1.30.1")].detail.startswith("6 runs read back intact")
    backend = result.components["backend"]
    assert backend["product"] == "PostgreSQL" and backend["version"].startswith("PostgreSQL 15")


def test_mariadb_cell_is_named_mariadb(tmp_path: Path, databases) -> None:
    result = run_one(tmp_path, "mysql", "2.22.5:3.17.2", databases=databases)
    assert result.status is Status.PASS, result.summary
    assert result.components["backend"]["product"] == "MariaDB"
    assert "standing in for MySQL" in result.components["backend"]["note"]
    upgrade = next(c for c in result.checks if c.name == "db-upgrade")
    assert upgrade.detail.startswith("revision 0584bdc529eb -> dc11669786a5")


def _delete_a_param_during_the_upgrade(point: str, store: Store) -> None:
    """Between the snapshot before `mlflow db upgrade` and the one after: as if the migration lost a row."""
    if point == "before-db-upgrade":
        assert isinstance(store, DatabaseStore)
        engine = sa.create_engine(store.sqlalchemy_url)
        with engine.begin() as con:
            run = con.execute(sa.text("SELECT MIN(run_uuid) FROM params")).scalar()
            con.execute(sa.text("DELETE FROM params WHERE key = 'optimizer' AND run_uuid = :r"), {"r": run})
            con.execute(sa.text("UPDATE latest_metrics SET value = 0.5 WHERE run_uuid = :r"), {"r": run})
        engine.dispose()


def test_integrity_check_names_lost_and_changed_rows(tmp_path: Path, databases) -> None:
    result = run_one(
        tmp_path, "postgres", "1.30.1:2.22.5", tamper=_delete_a_param_during_the_upgrade, databases=databases
    )
    assert result.status is Status.FAIL
    check = next(c for c in result.checks if c.name == "integrity")
    assert check.status is Status.FAIL
    lines = check.excerpt.splitlines()
    assert any(
        line.startswith("params row (key='optimizer', run_uuid=")
        and line.endswith("missing after the upgrade")
        for line in lines
    ), lines
    assert any(
        line.startswith("latest_metrics row (key='accuracy', run_uuid=")
        and line.endswith("value 0.95 -> 0.5")
        for line in lines
    ), lines
    assert check.detail.startswith("2 row difference(s): ") and len(lines) == 2


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "sqlite", "postgres", "mysql"])
@pytest.mark.parametrize("path", ["1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2"])
def test_default_matrix_paths(tmp_path: Path, backend: str, path: str, databases) -> None:
    result = run_one(tmp_path, backend, path, databases=databases)
    assert result.status is Status.PASS, result.summary


def test_users_own_server_with_a_password(tmp_path: Path, databases) -> None:
    """`--mysql-url` with a password-protected user: the run creates and drops its databases there, leaves
    every other database alone, and the password appears nowhere in what it writes."""
    server = databases.get_server("mysql")
    password = "s3cret-Pw-1730"
    with server._engine.connect() as con:
        con.execute(sa.text(f"CREATE USER IF NOT EXISTS 'compat'@'127.0.0.1' IDENTIFIED BY '{password}'"))
        con.execute(sa.text("GRANT ALL PRIVILEGES ON *.* TO 'compat'@'127.0.0.1'"))
        con.execute(sa.text("CREATE DATABASE IF NOT EXISTS users_own_data"))
    before = set(server.databases())
    url = f"mysql://compat:{password}@127.0.0.1:{server.admin_url.port}/"
    results = tmp_path / "results"
    proc = run_cli(
        "run",
        "--results-dir",
        str(results),
        "--backend",
        "mysql",
        "--path",
        "1.30.1:2.22.5",
        "--mysql-url",
        url,
        "--runtime",
        "local",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(server.databases()) == before, "only the run's own databases may come and go"
    run_dir = (results / "latest").resolve()
    cell = json.loads((run_dir / "results.json").read_text())["cells"][0]
    assert cell["components"]["backend"]["server"].startswith("mysql+pymysql://compat:***@127.0.0.1")
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and password in p.read_text(errors="replace")]
    assert leaks == [] and password not in proc.stdout + proc.stderr
    logs = (
        run_dir / "cells" / "mysql_1.30.1_to_2.22.5" / "logs" / "upgrade-db-upgrade-2.22.5.log"
    ).read_text()
    assert "compat:***@" in logs  # the URL is there, redacted
