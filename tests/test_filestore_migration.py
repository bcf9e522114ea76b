"""The file store moved into SQLite by `mlflow migrate-filestore` (backend file_to_sqlite, issue 15 part 5).

The store's own behaviour (a file store until migrated, then the database; its backups either side of the
move; the command it hands the runtime; which paths it refuses) is checked on its own; the command's refusal
of a PostgreSQL target against a real PostgreSQL server; then real cells: a file store written by 2.22.5
(and, marked slow, 1.30.1) clients, migrated by 3.17.2, every record read back by every client through the
3.17.2 server, failing only as declared; and the fault it exists to catch, planted for real: a run lost and
a metric changed between the file store and the database make the reads fail, naming them.
"""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.backends import BACKENDS, Store
from harness.backends.file_to_sqlite import FileToSqliteStore
from harness.envs import EnvCache
from harness.results import CellResult, Check, Status
from harness.specs import parse_spec
from harness.versions import MlflowVersion
from tests.conftest import run_cli
from tests.test_cells import run_one as run_cell_on

HEAD_3_17 = "dc11669786a5"
# Every kind of record the file store holds and migrate-filestore moves: experiments, runs with params,
# metrics and tags, datasets as run inputs, the registry with aliases, logged models, traces; and artifacts.
MIGRATED = ("quickstart", "metric_history", "metric_values", "tags_and_status", "run_lifecycle",
            "nested_and_batch", "search", "experiment_lifecycle", "long_values", "long_params", "artifacts",
            "registry", "registry_aliases", "datasets", "logged_models", "traces")  # fmt: skip


def _fake_migration(store: FileToSqliteStore, revision: str) -> None:
    """What migrate-filestore leaves beside mlruns, as far as the store can tell: a WAL-mode mlflow.db."""
    with closing(sqlite3.connect(store.db_path)) as con:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        con.commit()


def test_the_store_is_a_file_store_until_migrated_then_the_database(tmp_path: Path) -> None:
    store = FileToSqliteStore(tmp_path)
    store.create()
    assert store.uri == (tmp_path / "mlruns").as_uri() and store.root.is_dir()
    target = f"sqlite:///{tmp_path}/mlflow.db"
    assert store.upgrade_args(store.uri) == [
        "migrate-filestore",
        "--source",
        str(tmp_path),
        "--target",
        target,
    ]
    assert store.schema_revision() is None  # no tracking tables anywhere yet
    assert store.skips("unupgraded-start") and store.skips("integrity")
    assert store.skips("db-upgrade") is None and store.skips("rollback-start") is None
    file_backup = store.backup("as-a-file-store")
    assert not (file_backup / "mlflow.db").exists()

    _fake_migration(store, HEAD_3_17)
    assert store.uri == f"sqlite:///{tmp_path}/mlflow.db" == store.sqlalchemy_url
    assert store.schema_revision() == HEAD_3_17
    assert store.upgrade_args(store.uri) == ["db", "upgrade", store.uri]  # a later hop: an ordinary upgrade
    assert all(store.skips(step) is None for step in ("unupgraded-start", "db-upgrade", "integrity"))
    db_backup = store.backup("as-a-database")
    assert (db_backup / "mlflow.db").exists() and (db_backup / "mlruns").is_dir()

    store.restore(file_backup)  # the rollback: the file store again, with nothing of the database left
    assert not any(tmp_path.glob("mlflow.db*")) and store.uri.startswith("file:")
    assert store.schema_revision() is None
    store.restore(db_backup)
    assert store.schema_revision() == HEAD_3_17


def test_the_migration_as_a_container_sees_the_store(tmp_path: Path) -> None:
    store = FileToSqliteStore(tmp_path)
    store.create()
    mount = Path("/mlflow-compat/store")
    assert store.upgrade_args(store.uri_at(mount)) == [
        "migrate-filestore", "--source", "/mlflow-compat/store",
        "--target", "sqlite:////mlflow-compat/store/mlflow.db"]  # fmt: skip


def test_a_path_whose_first_upgrade_lacks_migrate_filestore_is_refused() -> None:
    backend = BACKENDS["file_to_sqlite"]
    v = MlflowVersion.parse
    why = backend.path_lacks((v("2.22.5"), v("3.9.0")))
    assert why == (
        "file_to_sqlite: MLflow 3.9.0 has no migrate_filestore (since 3.10.0), which migrates the file "
        "store into SQLite"
    )
    assert backend.path_lacks((v("2.22.5"), v("2.22.5"), v("3.17.2"))) is not None  # the first hop decides
    assert backend.path_lacks((v("1.30.1"), v("3.10.0"))) is None
    assert backend.path_lacks((v("1.30.1"), v("3.10.0"), v("3.17.2"))) is None  # then an ordinary db upgrade
    assert backend.path_lacks((v("2.22.5"), None)) is None  # `latest`, not resolved yet


def test_a_to_version_without_migrate_filestore_leaves_the_cell_out(tmp_path: Path) -> None:
    """Planned out with the reason, as an auth cell on a server without the auth app is: alone it is bad input
    (one line, exit 2, nothing started); beside cells that can run, a note."""
    why = (
        "file_to_sqlite: MLflow 3.9.0 has no migrate_filestore (since 3.10.0), which migrates the file store"
    )
    alone = run_cli("run", "--runtime", "local", "--backend", "file_to_sqlite", "--path", "2.22.5:3.9.0",
                    "--results-dir", str(tmp_path))  # fmt: skip
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1, alone.stderr
    assert "no cell to run" in alone.stderr and why in alone.stderr
    assert not any(tmp_path.iterdir())
    mixed = run_cli("run", "--runtime", "local", "--backend", "file", "--backend", "file_to_sqlite",
                    "--path", "2.22.5:3.9.0", "--path", "2.22.5:3.17.2", "--list")  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    assert mixed.stdout.split() == [
        "file:2.22.5->3.9.0", "file:2.22.5->3.17.2", "file_to_sqlite:2.22.5->3.17.2"]  # fmt: skip
    assert why in mixed.stderr


@pytest.mark.cell
def test_migrate_filestore_refuses_a_postgres_target(tmp_path: Path, databases) -> None:
    """migrate-filestore writes SQLite only: given a real PostgreSQL database it refuses (a usage error, exit
    2) and writes nothing there. So there is no file->postgres (or file->mysql) backend."""
    env = EnvCache().ensure(parse_spec("3.17.2"), tmp_path / "env.log")
    source = tmp_path / "store"
    (source / "mlruns" / "0").mkdir(parents=True)
    (source / "mlruns" / "0" / "meta.yaml").write_text(
        "experiment_id: '0'\nname: Default\nartifact_location: /tmp\nlifecycle_stage: active\n"
    )
    server = databases.get_server("postgres")
    database = f"fsmig_{tmp_path.name.lower()}"[:60].replace("-", "_")
    server.create(database)
    try:
        target = server.url_for(database).render_as_string(hide_password=False)
        proc = subprocess.run(
            [str(env.bin / "mlflow"), "migrate-filestore", "--source", str(source), "--target", target],
            capture_output=True, text=True, env=env.environ(), timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "Must be a SQLite URI starting with 'sqlite:///'" in proc.stderr
        engine = sa.create_engine(server.url_for(database), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as con:
                assert sa.inspect(con).get_table_names() == []
        finally:
            engine.dispose()
    finally:
        server.drop(database)


# -- real cells ------------------------------------------------------------------------------------------
def run_one(
    tmp_path: Path, path: str, scenarios: tuple[str, ...], tamper=None, declared: bool = True, clients=None
) -> CellResult:
    return run_cell_on(tmp_path, "file_to_sqlite", path, tamper=tamper, scenarios=scenarios,
                       declared=declared, clients=clients)  # fmt: skip


def one(result: CellResult, phase: str, name: str) -> Check:
    (found,) = [c for c in result.checks if c.phase == phase and c.name == name]
    return found


def one_read(result: CellResult, scenario: str, client: str) -> Check:
    (found,) = [
        c
        for c in result.checks
        if (c.phase, c.name, c.scenario, c.client) == ("after", "read", scenario, client)
    ]
    return found


def not_passed(result: CellResult) -> list[str]:
    return [
        f"{c.phase}/{c.name}/{c.scenario}/{c.client}: {c.status.value} {c.expected or ''} {c.detail[:200]}"
        for c in result.checks
        if c.status not in (Status.PASS, Status.SKIP)
    ]


def assert_migrated_and_read_back(result: CellResult, ours: set[str]) -> None:
    """The migration ran and reached the head; every record was read back by every client through the TO
    server (or failed exactly as declared: ``ours``, this hop's own declarations, among them); the FROM server
    refused the database and served the restored file store again, every record intact."""
    migration = one(result, "upgrade", "db-upgrade")
    assert migration.status is Status.PASS and migration.detail.startswith(
        f"revision None -> {HEAD_3_17} in "
    )
    assert result.components["revisions"]["upgrade"] == {
        "before": None,
        "after": HEAD_3_17,
        "expected": HEAD_3_17,
    }
    assert "migrate-filestore" in result.components["backend"]["product"]
    for step in ("unupgraded-start", "integrity"):  # nothing to do on a file store (the store says why)
        assert one(result, "upgrade", step).status is Status.SKIP
    assert one(result, "rollback", "rollback-start").status is Status.PASS
    assert "refused the upgraded store" in one(result, "rollback", "rollback-start").detail
    reads = [c for c in result.checks if c.phase == "after" and c.name == "read"]
    assert reads and all(c.status in (Status.PASS, Status.XFAIL, Status.SKIP) for c in reads), not_passed(
        result
    )
    declared = {c.expected for c in result.checks if c.status is Status.XFAIL}
    assert ours <= declared, declared
    restored = [c for c in result.checks if c.name == "restore-read"]
    assert restored and all(c.status in (Status.PASS, Status.SKIP) for c in restored), not_passed(result)
    # Every acked write confirmed, or unconfirmed only by declared reads (xfail).
    assert one(result, "cell", "acked-writes").status in (Status.PASS, Status.XFAIL)
    assert result.status in (Status.PASS, Status.XFAIL), not_passed(result)


@pytest.mark.cell
def test_a_2_x_file_store_migrated_by_3_17_is_read_back_whole(tmp_path: Path) -> None:
    """Every kind of record (MIGRATED), written by 2.22.5 and 3.17.2 clients on a 2.22.5 file store, migrated
    into SQLite by 3.17.2 and read back by both through the 3.17.2 server."""
    # Without traces: the 2.22.5 client's read of the trace the 3.17.2 client writes after the move fails
    # one of two ways from run to run (declared "cannot load traces created with MLflow 3.x", or HTTP 404
    # "missing span data": its spans are in the database), as on any SQL store; the 3.x cell migrates traces.
    result = run_one(tmp_path, "2.22.5:3.17.2", tuple(s for s in MIGRATED if s != "traces"))
    assert_migrated_and_read_back(
        result,
        {"migrate-filestore-keeps-inf-as-max-double", "migrate-filestore-latest-versions-lose-aliases"},
    )


@pytest.mark.cell
@pytest.mark.slow
def test_a_1_x_file_store_migrated_by_3_17_is_read_back_whole(tmp_path: Path) -> None:
    # without traces: a 3.x client writing one gets HTTP 404 from a 1.30.1 server, on any backend
    result = run_one(tmp_path, "1.30.1:3.17.2", tuple(s for s in MIGRATED if s != "traces"))
    assert_migrated_and_read_back(
        result,
        {
            "migrate-filestore-keeps-inf-as-max-double",
            "migrate-filestore-1.x-deleted-experiments-come-back-active",
        },
    )


@pytest.mark.cell
@pytest.mark.slow
def test_a_3_x_file_store_with_genai_records_migrated_by_3_17(tmp_path: Path) -> None:
    """A 3.2.0 server's file store: traces with assessments (3.2+) besides everything else, written by the
    3.17.2 client (a 3.2.0 client cannot read the traces a 3.17.2 client writes to a 3.17.2 server on any SQL
    store: their spans live in the database, not in a traces.json artifact). A trace whose expectation
    holds a dict is unreadable after the migration (declared). logged_models is left out: its read fails on
    the 3.2.0 file store itself, before any migration (a source run's metric step read back as 0)."""
    scenarios = (*[s for s in MIGRATED if s != "logged_models"], "assessments")
    result = run_one(tmp_path, "3.2.0:3.17.2", scenarios, clients=("3.17.2",))
    assert_migrated_and_read_back(
        result,
        {"migrate-filestore-keeps-inf-as-max-double", "migrate-filestore-latest-versions-lose-aliases",
         "migrate-filestore-loses-structured-expectation-values"},
    )  # fmt: skip


def _lose_a_run_and_change_a_metric(seen: dict[str, list[str]]):
    """Between the backup and the migration, the quickstart runs vanish from the file store and the first
    point of every `loss` history changes: the database the TO server reads then lacks and differs."""

    def tamper(point: str, store: Store) -> None:
        if point != "before-db-upgrade":
            return
        assert isinstance(store, FileToSqliteStore) and not store.migrated
        for params in store.root.glob("*/*/params/learning_rate"):
            run_dir = params.parent.parent
            seen["runs"].append(run_dir.name)
            subprocess.run(["rm", "-r", str(run_dir)], check=True)
        for loss in store.root.glob("*/*/metrics/loss"):
            lines = loss.read_text().splitlines()
            timestamp, _value, step = lines[0].split(" ")
            lines[0] = f"{timestamp} 0.3 {step}"
            loss.write_text("\n".join(lines) + "\n")
            seen["metrics"].append(loss.parent.parent.name)

    return tamper


@pytest.mark.cell
@pytest.mark.fault
def test_a_run_lost_or_a_metric_changed_by_the_migration_fails_the_reads(tmp_path: Path) -> None:
    seen: dict[str, list[str]] = {"runs": [], "metrics": []}
    tamper = _lose_a_run_and_change_a_metric(seen)
    result = run_one(tmp_path, "2.22.5:3.17.2", ("quickstart", "metric_history"), tamper=tamper)
    assert len(seen["runs"]) == 2 and len(seen["metrics"]) == 2, seen  # one record per client
    assert result.status is Status.FAIL
    failed = {(c.phase, c.name, c.scenario, c.client) for c in result.checks if c.status is Status.FAIL}
    assert failed == {
        *{("after", "read", s, c) for s in ("quickstart", "metric_history") for c in ("2.22.5", "3.17.2")},
        ("cell", "acked-writes", None, None),
    }, result.summary
    for client in ("2.22.5", "3.17.2"):
        lost, changed = (one_read(result, scenario, client) for scenario in ("quickstart", "metric_history"))
        for run_id in seen["runs"]:  # each lost run, named by its id, for what each client wrote
            assert any(f"Run with id={run_id} not found" in p.text for p in lost.problems), lost.excerpt
        texts = sorted(p.text for p in changed.problems)
        difference = "run.metric_history.loss[0][2].float: '0.3', expected '1.0'"
        assert texts == [f"client {w} -> server 2.22.5 (before): {difference}" for w in ("2.22.5", "3.17.2")]
    # The backup was taken before the tampering: the FROM server on the restored file store reads all of it.
    restored = [c for c in result.checks if c.name == "restore-read"]
    assert restored and all(c.status is Status.PASS for c in restored)
