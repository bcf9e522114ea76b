"""Real cells: real MLflow wheels from the index, real `mlflow server` processes, real stores.

The default run keeps to MLflow 1.30.1 and 2.22.5 (the smallest envs); the other default-matrix paths
are marked slow (`nox -s tests -- -m slow`).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness import expectations
from harness.backends import DatabaseStore, SqliteStore, Store, database_name
from harness.cell import CellContext, run_cell
from harness.envs import EnvCache
from harness.plan import CellPlan, default_clients
from harness.results import CellResult, Status
from harness.runtime import get_runtime
from harness.scenarios import all_names, default_names, fitting
from harness.specs import parse_path, parse_spec
from tests.conftest import run_cli

pytestmark = pytest.mark.cell


def mlflow_processes(under: Path | None = None) -> list[str]:
    """Server processes started from the harness's env cache that are still running (``under``: only those
    whose command line names that directory, e.g. a run's private temp dir: other tests run in parallel)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "mlflow-compat/envs/" in line and " server" in line
            and (under is None or str(under) in line)]  # fmt: skip


# Scenarios whose APIs every version here has and every server answers alike: cells that must pass use them.
BASIC = ("quickstart", "metric_history", "tags_and_status", "search")


def run_one(
    tmp_path: Path,
    backend: str,
    path: str,
    tamper=None,
    databases=None,
    scenarios: tuple[str, ...] = BASIC,
    on_server=None,
    keep_store: bool = False,
    declared: bool = False,
    auth: bool = False,
    clients: tuple[str, ...] | None = None,
) -> CellResult:
    """One real cell on local servers (``databases``: the fixture with the run's PostgreSQL/MySQL servers);
    afterwards the cell's databases (its auth database too) must be gone again."""
    specs = parse_path(path)
    chosen = tuple(parse_spec(c) for c in clients) if clients else default_clients(specs)
    plan = CellPlan(backend, specs, chosen, scenarios=scenarios, auth=auth)
    servers = {backend: databases.get_server(backend)} if backend in ("postgres", "mysql") else {}
    ctx = CellContext(
        cell_dir=tmp_path / plan.slug,
        runtime=get_runtime("local"),
        envs=EnvCache(),
        work_root=tmp_path,
        tamper=tamper,
        on_server=on_server,
        keep_store=keep_store,
        databases=servers,
        run_id=tmp_path.name,
        expectations=expectations.load(None) if declared else (),
    )
    result = run_cell(plan, ctx)
    if servers and result.status is not Status.ERROR:  # the cell dropped its databases again
        names = ctx.databases[backend].databases()
        assert database_name(ctx.run_id, plan.slug) not in names
        assert database_name(ctx.run_id, f"{plan.slug}-auth") not in names
    return result


def checks(result: CellResult, status: Status) -> list[str]:
    return [
        f"{c.phase}/{c.name}/{c.scenario}/{c.client}->{c.server}" for c in result.checks if c.status is status
    ]


def test_matrix_end_to_end(tmp_path: Path, unresolvable_wheel: Path, request: pytest.FixtureRequest) -> None:
    """`mlflow-compat run` as a user runs it: real cells pass on the file store, SQLite and a MariaDB the run
    starts and stops itself; the cells of an MLflow that cannot be installed end as `error` with the
    resolver's reason while the others still run; nothing is left running."""
    results = tmp_path / "results"
    backends = ["--backend", "file", "--backend", "sqlite", "--backend", "mysql"]
    paths = ["--path", "1.30.1:2.22.5", "--path", f"{unresolvable_wheel}:2.22.5"]
    # The run's stores and database server live in a temp dir of its own: parallel tests start theirs in /tmp.
    # A short path: MariaDB's socket path must stay under 108 bytes (pytest's tmp_path is too deep).
    private = Path(tempfile.mkdtemp(prefix="mc-e2e-"))
    request.addfinalizer(lambda: shutil.rmtree(private, ignore_errors=True))
    proc = run_cli("run", "--results-dir", str(results), "--runtime", "local", *backends, *paths, "-n", "2",
                   "--scenarios", "quickstart,metric_history", env={"TMPDIR": str(private)})  # fmt: skip
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
    assert mlflow_processes(under=private) == []
    assert not any(private.glob("mlflow-compat-mariadb-*")), "the run's MariaDB is left"


def _plant_differences(point: str, store: Store) -> None:
    """One planted difference per kind of verifier, made in the store behind the clients' backs: a param
    value, a point of a metric history, an artifact's bytes, a registered model version's stage."""
    if point != "before-upgrade":
        return
    assert isinstance(store, SqliteStore)
    with closing(sqlite3.connect(store.db_path)) as con, con:
        first = "(SELECT MIN(run_uuid) FROM {table} WHERE key = '{key}')"
        changed = [
            con.execute("UPDATE params SET value = '0.02' WHERE key = 'learning_rate' AND run_uuid = "
                        + first.format(table="params", key="learning_rate")).rowcount,
            con.execute("UPDATE metrics SET value = 0.3 WHERE key = 'loss' AND step = 3 AND run_uuid = "
                        + first.format(table="metrics", key="loss")).rowcount,
            con.execute("UPDATE model_versions SET current_stage = 'Production' WHERE version = 1 AND name = "
                        "(SELECT MIN(name) FROM registered_models)").rowcount,
        ]  # fmt: skip
    assert changed == [1, 1, 1]
    large = sorted(store.artifacts_dir.rglob("large.bin"))[0]
    data = bytearray(large.read_bytes())
    data[1_000_000] ^= 0xFF  # one byte in the middle of a 6 MB file
    large.write_bytes(bytes(data))


def test_each_verifier_fails_on_a_planted_difference(tmp_path: Path) -> None:
    scenarios = ("quickstart", "metric_history", "artifacts", "registry")
    result = run_one(tmp_path, "sqlite", "1.30.1:2.22.5", tamper=_plant_differences, scenarios=scenarios)
    assert result.status is Status.FAIL
    reads_after = {"after/read", "rollback/restore-read"}
    failed = {(f"{c.phase}/{c.name}", c.scenario, c.client) for c in result.checks if c.status is Status.FAIL}
    # Every reader after the change sees every planted difference, except the 1.30.1 client reading the
    # registry from a 2.22.5 server: that read fails for a reason of its own (real skew, see test below).
    expected = {(r, s, c) for r in reads_after for s in scenarios for c in ("1.30.1", "2.22.5")}
    expected = {(r, s, c) for r, s, c in expected if r == "after/read" or c == "1.30.1"}
    expected.add(("after/write", "registry", "1.30.1"))  # the same skew, writing
    expected.add(("cell/acked-writes", None, None))  # the four changed records, named
    assert failed == expected, checks(result, Status.FAIL)
    account = next(c for c in result.checks if c.name == "acked-writes")
    acked, read_back = map(int, re.match(r"acked writes: (\d+), read back: (\d+)", account.detail).groups())
    assert acked - read_back == 4 and len({line.split(":")[0] for line in account.excerpt.splitlines()}) == 4
    assert not [c for c in result.checks if c.phase == "before" and c.status is not Status.PASS]
    details = {
        (c.phase, c.scenario, c.client): c.excerpt or ""
        for c in result.checks
        if c.scenario and c.name != "write"
    }
    assert "run.params.learning_rate: '0.02', expected '0.01'" in details[("after", "quickstart", "2.22.5")]
    assert (
        "run.metric_history.loss[3][2].float: '0.3', expected '0.125'"
        in details[("after", "metric_history", "1.30.1")]
    )
    assert (
        "run.artifacts['tree/large.bin']: bytes differ (6291456 bytes, sha256 "
        in details[("rollback", "artifacts", "1.30.1")]
    )
    assert (
        "versions['1'].current_stage: 'Production', expected 'Staging'"
        in details[("after", "registry", "2.22.5")]
    )
    for detail in details.values():  # each names who wrote the record it found changed
        assert not detail or detail.startswith("client ")


def test_postgres_multi_hop_upgrade_keeps_every_row(tmp_path: Path, databases) -> None:
    """One PostgreSQL store upgraded twice (1.30.1 -> 2.22.5 -> 3.17.2), written at each hop, read at last."""
    result = run_one(tmp_path, "postgres", "1.30.1:2.22.5:3.17.2", databases=databases)
    assert result.status is Status.PASS, result.summary
    by = {(c.phase, c.name, c.client): c for c in result.checks if c.scenario in (None, "quickstart")}
    assert by[("upgrade-1", "db-upgrade", None)].detail.startswith("revision 97727af70f4d -> 0584bdc529eb")
    assert by[("upgrade-2", "db-upgrade", None)].detail.startswith("revision 0584bdc529eb -> dc11669786a5")
    # Row counts depend on the system tags each client version sets; what matters is that all were kept.
    kept = [re.match(r"all (\d+) rows kept", by[(f"upgrade-{i}", "integrity", None)].detail) for i in (1, 2)]
    assert kept[0] and kept[1] and 20 <= int(kept[0][1]) < int(kept[1][1])
    assert by[("after-2", "read", "1.30.1")].detail.startswith("6 records read back exactly as written")
    backend = result.components["backend"]
    assert backend["product"] == "PostgreSQL" and backend["version"].startswith("PostgreSQL 15")


def test_mariadb_cell_is_named_mariadb(tmp_path: Path, databases) -> None:
    """Also: long and non-Latin values round-trip (the cell's database is utf8mb4, as a DBA would make it)."""
    result = run_one(
        tmp_path, "mysql", "2.22.5:3.17.2", databases=databases, scenarios=(*BASIC, "long_values")
    )
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
    result = run_one(tmp_path, "postgres", "1.30.1:2.22.5", tamper=_delete_a_param_during_the_upgrade,
                     databases=databases, scenarios=("quickstart",))  # fmt: skip
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
        "--scenarios",
        ",".join(BASIC),
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


# What each client really gets wrong against each server today (MLflow's behaviour, not the harness's):
# (phase/check, scenario, client, server). Issue 6 turns these into declared expectations.
KNOWN_SKEW = {
    "1.30.1:2.22.5": {
        ("before/write", "datasets", "2.22.5", "1.30.1"),  # POST runs/log-inputs: 404 (no datasets in 1.x)
        ("before/write", "long_params", "2.22.5", "1.30.1"),  # 1.x server refuses params over 500 chars
        ("before/write", "registry_aliases", "2.22.5", "1.30.1"),  # registered-models/alias: 404
        ("after/write", "registry", "1.30.1", "2.22.5"),  # 1.x client calls /preview/ endpoints: 404 on 2.x
        ("after/read", "registry", "1.30.1", "2.22.5"),
    },
    "2.22.5:3.17.2": {
        ("before/write", "logged_models", "3.17.2", "2.22.5"),  # logged-models: 404 on 2.x
        # A 3.x client lists artifact subdirectories by also searching logged models: 404 on a 2.x server.
        ("before/read", "artifacts", "3.17.2", "2.22.5"),
        # GET /api/2.0/mlflow/traces/{trace_id}: a 2.x stub that raises, HTTP 500, for a 3.x client's write
        # and for its read of any trace; and a 2.x client cannot load a trace a 3.x client wrote.
        ("before/write", "traces", "3.17.2", "2.22.5"),
        ("before/read", "traces", "3.17.2", "2.22.5"),
        ("after/read", "traces", "2.22.5", "3.17.2"),
        ("before/write", "assessments", "3.17.2", "2.22.5"),  # POST traces/{id}/assessments: 404 before 3.2
    },
}


def inf_on_sql(path: str) -> set[tuple[str | None, ...]]:
    """A SQL store keeps +-inf as +-1.7976931348623157e308 (every version; declared in the shipped
    expectations): every read of metric_values differs, and so its four records are never confirmed."""
    old, new = path.split(":")
    reads = [("before/read", old, old), ("before/read", new, old), ("after/read", old, new),
             ("after/read", new, new), ("rollback/restore-read", old, old)]  # fmt: skip
    return {(r, "metric_values", c, s) for r, c, s in reads} | {("cell/acked-writes", None, None, None)}


@pytest.mark.parametrize("path", sorted(KNOWN_SKEW))
def test_every_scenario_on_real_servers_fails_only_where_mlflow_does(tmp_path: Path, path: str) -> None:
    """All built-in scenarios, both directions, both sides of the upgrade: every check passes except the
    known incompatibilities, each with the server's own error; nothing is an infrastructure error."""
    # The 25,001-point history (metric_pages, not in the default selection) pages only on a 3.x server.
    # models is left out: it needs an env of its own per version (scikit-learn) and has its cells in
    # tests/test_models.py.
    chosen = tuple(n for n in (all_names() if "3.17.2" in path else default_names()) if n != "models")
    result = run_one(tmp_path, "sqlite", path, scenarios=fitting(chosen, frozenset()))
    failed = {(f"{c.phase}/{c.name}", c.scenario, c.client, c.server) for c in result.checks
              if c.status is Status.FAIL}  # fmt: skip
    assert failed == KNOWN_SKEW[path] | inf_on_sql(path), checks(result, Status.FAIL)
    assert checks(result, Status.ERROR) == []
    skipped = {(c.scenario, c.client) for c in result.checks if c.status is Status.SKIP and c.scenario}
    old = path.split(":")[0]
    assert ("logged_models", old) in skipped  # the old client has no API for it: skip, not fail
    probe = next(c for c in result.checks if c.name == "unupgraded-start")
    assert probe.status is Status.PASS
    assert (
        probe.detail.startswith("migrated the store itself on start: ") and "backup restored" in probe.detail
    )
    for c in result.checks:
        if c.name == "read" and c.status is Status.PASS:
            assert "records read back exactly as written" in c.detail
    account = next(c for c in result.checks if c.name == "acked-writes")
    acked, read_back = re.match(r"acked writes: (\d+), read back: (\d+)", account.detail).groups()
    # Every acknowledged write confirmed by some client, but the four metric_values records (inf, above).
    assert int(acked) - int(read_back) == 4 and int(acked) > 30, account.detail
    assert {line.split(":")[0].split("/")[-1] for line in account.excerpt.splitlines()} == {"metric_values"}


GOOD_SCRIPT = """
import os
import mlflow

mlflow.set_experiment("team-training")
with mlflow.start_run(run_name="train"):
    mlflow.log_params({"lr": 0.1, "epochs": 3})
    for step in range(3):
        mlflow.log_metric("loss", 1 / (step + 1), step=step)
    os.makedirs("out/sub", exist_ok=True)
    with open("out/sub/weights.bin", "wb") as fh:
        fh.write(bytes(range(256)) * 10)
    mlflow.log_artifacts("out", "model")
    with mlflow.start_run(nested=True, run_name="eval"):
        mlflow.log_metric("acc", 0.9)
"""

BROKEN_SCRIPT = """
import mlflow

mlflow.log_param("x", 1)
raise SystemExit("training data missing")
"""


def test_users_own_scripts_run_unmodified_as_scenarios(tmp_path: Path) -> None:
    """`--scenario PATH`: each client runs the script in its own venv; what it wrote is learnt from the
    server and every client's view of it is held to that, on both sides of the upgrade. A script that fails
    fails its own check, with its output."""
    good, broken = tmp_path / "train.py", tmp_path / "broken.py"
    good.write_text(GOOD_SCRIPT)
    broken.write_text(BROKEN_SCRIPT)
    results = tmp_path / "results"
    proc = run_cli("run", "--results-dir", str(results), "--runtime", "local", "--backend", "sqlite",
                   "--path", "1.30.1:2.22.5", "--scenarios", "none", "--scenario", str(good),
                   "--scenario", str(broken))  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_dir = (results / "latest").resolve()
    (cell,) = json.loads((run_dir / "results.json").read_text())["cells"]
    mine = [c for c in cell["checks"] if c["scenario"] == "script:train.py"]
    assert {(c["phase"], c["name"], c["client"]) for c in mine} == {
        *((p, n, v) for p in ("before", "after") for n in ("write", "read") for v in ("1.30.1", "2.22.5")),
        ("rollback", "restore-read", "1.30.1"),
    }
    assert all(c["status"] == "pass" for c in mine), [c["detail"] for c in mine if c["status"] != "pass"]
    assert next(c for c in mine if c["phase"] == "after" and c["name"] == "read")["detail"].startswith(
        "4 records read back exactly as written"
    )
    failing = [c for c in cell["checks"] if c["status"] == "fail"]
    assert {(c["name"], c["scenario"]) for c in failing} == {("write", "script:broken.py")}
    assert all("broken.py exited with code 1" in c["detail"] and "training data missing" in c["detail"]
               for c in failing)  # fmt: skip
    written = json.loads((run_dir / "cells" / cell["dir"] / "logs" / "before-write-1.30.1.json").read_text())
    runs = written["results"]["script:train.py"]["record"]["runs"]
    assert len(runs) == 2  # the run and its nested child
    train = next(r for r in runs.values() if r["run"]["tags"]["mlflow.runName"] == "train")
    history = train["run"]["metric_history"]["loss"]
    assert [(p[0], p[2]["float"]) for p in history] == [(0, "1.0"), (1, "0.5"), (2, repr(1 / 3))]
    assert train["run"]["info"]["run_name"] == "train" and train["experiment"] == "team-training"
    assert train["run"]["artifacts"]["model/sub/weights.bin"]["size"] == 2560
    assert train["run"]["params"] == {"lr": "0.1", "epochs": "3"}


def test_a_sql_backend_without_a_server_ends_the_cell_saying_why(tmp_path: Path) -> None:
    """The run could not provide a database server: the cell's store step is an `error` with the run's
    reason (CellContext.unavailable, from run.json), and nothing else is started."""
    specs = parse_path("2.22.5:3.17.2")
    plan = CellPlan("postgres", specs, default_clients(specs), scenarios=("quickstart",))
    why = "the local server did not start: initdb failed"
    ctx = CellContext(cell_dir=tmp_path / plan.slug, runtime=get_runtime("local"), envs=EnvCache(),
                      work_root=tmp_path, run_id=tmp_path.name, unavailable={"postgres": why})  # fmt: skip
    result = run_cell(plan, ctx)
    assert result.status is Status.ERROR
    assert [(c.name, c.status) for c in result.checks if c.name != "env"] == [("store", Status.ERROR)]
    assert result.checks[-1].detail == f"no postgres server for this run: {why}"
    assert (
        CellResult.read(tmp_path / plan.slug / "cell.json").summary
        == f"env store: {result.checks[-1].detail}"
    )


def _trace_read(result: CellResult, client: str) -> list:
    return [
        c
        for c in result.checks
        if (c.phase, c.name, c.scenario, c.client) == ("after", "read", "traces", client)
    ]


def test_traces_across_the_3_0_line(tmp_path: Path) -> None:
    """Traces written by a 2.x client survive the upgrade to 3.x and are read back exactly, spans included, by
    both clients; what fails across the 3.0 line fails only as declared (a 3.x client on a 2.x server, a 2.x
    client on a 3.x-written trace), and nothing else."""
    result = run_one(tmp_path, "sqlite", "2.22.5:3.17.2", scenarios=("traces",), declared=True)
    assert result.status is Status.XFAIL, result.summary
    assert {c.expected for c in result.checks if c.status is Status.XFAIL} == {
        "3.x-trace-client-on-2.x-server-write", "3.x-trace-client-on-2.x-server-read",
        "old-clients-cannot-load-spans-kept-in-the-tracking-store"}  # fmt: skip
    (new_reads_all,) = _trace_read(result, "3.17.2")
    assert new_reads_all.status is Status.PASS and new_reads_all.detail.startswith(
        "3 records read back exactly"
    )
    restore = [c for c in result.checks if c.name == "restore-read" and c.scenario == "traces"]
    assert [c.status for c in restore] == [Status.PASS]
    assert next(c for c in result.checks if c.name == "acked-writes").status is Status.PASS


def _drop_a_span(point: str, store: Store) -> None:
    """Before the upgrade, the child span vanishes from the trace data the server keeps (every trace's: the
    2.x client's, and what the 3.x client's failed write left on the 2.x server)."""
    if point != "before-upgrade":
        return
    found = list(store.artifacts_dir.glob("*/traces/*/artifacts/traces.json"))
    assert found, "no trace data to tamper with"
    for data in found:
        trace = json.loads(data.read_text())
        trace["spans"] = [s for s in trace["spans"] if s["name"] != "retrieve"]
        data.write_text(json.dumps(trace))


def test_a_lost_span_fails_the_read(tmp_path: Path) -> None:
    result = run_one(tmp_path, "sqlite", "2.22.5:3.17.2", tamper=_drop_a_span, scenarios=("traces",))
    (new_reads_all,) = _trace_read(result, "3.17.2")
    assert new_reads_all.status is Status.FAIL
    lost = [p.text for p in new_reads_all.problems if "retrieve" in p.text]
    assert lost and all("client 2.22.5 -> server 2.22.5 (before)" in t for t in lost), new_reads_all.excerpt
