"""Schema drift (harness/schema.py): `differences` on hand-made shapes, each kind of difference named on one
line; the reference cache and its failures with a stand-in server start; and real cells, one of them on
PostgreSQL with drift planted for real in the upgraded store (an index dropped, a column's nullability
changed) right before the check."""

from __future__ import annotations

import copy
import json
import re
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from harness.backends import Store
from harness.results import CellResult, Check, Status
from harness.schema import References, Shape, _check_text, check_drift, differences, reflect
from harness.server import ServerStartError, StartFailure
from tests.test_cells import run_one


def metrics_table() -> dict[str, Any]:
    return {
        "columns": {
            "key": {"type": "VARCHAR(250)", "nullable": False, "default": None},
            "value": {"type": "FLOAT", "nullable": False, "default": None},
            "run_uuid": {"type": "VARCHAR(32)", "nullable": False, "default": None},
            "step": {"type": "BIGINT", "nullable": False, "default": "'0'"},
        },
        "primary_key": {"name": "metric_pk", "columns": ["key", "run_uuid", "step"]},
        "indexes": [{"name": "index_metrics_run_uuid", "columns": ["run_uuid"], "unique": False}],
        "uniques": [{"name": None, "columns": ["key", "step"]}],
        "foreign_keys": [
            {
                "name": "fk_metrics_run",
                "columns": ["run_uuid"],
                "referred_table": "runs",
                "referred_columns": ["run_uuid"],
                "ondelete": None,
            },
            {
                "name": None,
                "columns": ["key"],
                "referred_table": "keys",
                "referred_columns": ["key"],
                "ondelete": "CASCADE",
            },
        ],
        "checks": [{"name": "ck_step", "sqltext": "step >= 0"}],
    }


def runs_table() -> dict[str, Any]:
    return {
        "columns": {
            "run_uuid": {"type": "VARCHAR(32)", "nullable": False, "default": None},
            "status": {"type": "VARCHAR(20)", "nullable": False, "default": None},
        },
        "primary_key": {"name": "run_pk", "columns": ["run_uuid"]},
        "indexes": [],
        "uniques": [],
        "foreign_keys": [],
        "checks": [{"name": None, "sqltext": "status IN ('RUNNING', 'FINISHED')"}],
    }


def shape() -> Shape:
    return Shape("postgresql", "dc11669786a5", {"metrics": metrics_table(), "runs": runs_table()})


def test_the_same_schema_has_no_differences_and_a_shape_survives_json() -> None:
    again = Shape.from_json(json.loads(json.dumps(shape().to_json())))
    assert again == shape()
    assert differences(again, shape()) == []
    with pytest.raises(ValueError, match="format"):
        Shape.from_json({**shape().to_json(), "format": 0})


def test_revision_and_tables() -> None:
    up = shape()
    up.revision = "0584bdc529eb"
    up.tables["legacy"] = up.tables.pop("runs")
    assert differences(up, shape()) == [
        "alembic revision 0584bdc529eb after the upgrade (dc11669786a5 in a fresh install)",
        "table runs missing after the upgrade (fresh has it)",
        "table legacy only in the upgraded store",
    ]


def test_columns_type_nullability_and_default() -> None:
    up = shape()
    cols = up.tables["runs"]["columns"]
    cols["status"]["nullable"] = True
    cols["run_uuid"]["type"] = "VARCHAR(50)"
    up.tables["metrics"]["columns"]["step"]["default"] = None
    del up.tables["metrics"]["columns"]["value"]
    up.tables["metrics"]["columns"]["extra"] = {"type": "TEXT", "nullable": True, "default": None}
    fresh = shape()
    fresh.tables["metrics"]["columns"]["key"]["nullable"] = True
    assert sorted(differences(up, fresh)) == sorted([
        "column runs.status nullable after the upgrade (NOT NULL in a fresh install)",
        "column metrics.key NOT NULL after the upgrade (nullable in a fresh install)",
        "column runs.run_uuid is VARCHAR(50) after the upgrade (VARCHAR(32) in a fresh install)",
        "column metrics.step default (none) after the upgrade ('0' in a fresh install)",
        "column metrics.value missing after the upgrade (fresh has it)",
        "column metrics.extra only in the upgraded store",
    ])  # fmt: skip


def test_primary_key_columns_and_name() -> None:
    up = shape()
    up.tables["runs"]["primary_key"] = {"name": None, "columns": ["run_uuid"]}
    up.tables["metrics"]["primary_key"]["columns"] = ["key", "run_uuid"]
    assert differences(up, shape()) == [
        "primary key of metrics is metric_pk (key, run_uuid) after the upgrade "
        "(metric_pk (key, run_uuid, step) in a fresh install)",
        "primary key of runs is (unnamed) (run_uuid) after the upgrade "
        "(run_pk (run_uuid) in a fresh install)",
    ]


def test_indexes_missing_extra_changed_and_renamed() -> None:
    up = shape()
    up.tables["metrics"]["indexes"] = []
    assert differences(up, shape()) == ["index index_metrics_run_uuid missing on metrics (fresh has it)"]
    up.tables["metrics"]["indexes"] = [{"name": "ix_metrics_run", "columns": ["run_uuid"], "unique": False}]
    assert differences(up, shape()) == [
        "index (run_uuid) on metrics is named ix_metrics_run after the upgrade "
        "(index_metrics_run_uuid in a fresh install)"
    ]
    up.tables["metrics"]["indexes"] = [
        {"name": "index_metrics_run_uuid", "columns": ["run_uuid", "key"], "unique": True},
        {"name": "ix_extra", "columns": ["value"], "unique": False},
    ]
    assert differences(up, shape()) == [
        "index index_metrics_run_uuid on metrics is unique (run_uuid, key) after the upgrade "
        "((run_uuid) in a fresh install)",
        "index ix_extra on metrics only in the upgraded store",
    ]


def test_a_partial_index_that_lost_its_condition() -> None:
    fresh = shape()
    fresh.tables["metrics"]["indexes"][0]["options"] = {"postgresql_where": "(step > 0)"}
    assert differences(shape(), fresh) == [
        "index index_metrics_run_uuid on metrics is (run_uuid) after the upgrade "
        "((run_uuid) postgresql_where=(step > 0) in a fresh install)"
    ]


def test_column_order_of_an_index_matters() -> None:
    fresh = shape()
    fresh.tables["metrics"]["indexes"][0]["columns"] = ["run_uuid", "key"]
    up = shape()
    up.tables["metrics"]["indexes"][0]["columns"] = ["key", "run_uuid"]
    assert differences(up, fresh) == [
        "index index_metrics_run_uuid on metrics is (key, run_uuid) after the upgrade "
        "((run_uuid, key) in a fresh install)"
    ]


def test_unnamed_constraints_pair_on_what_they_are_on() -> None:
    """SQLite's constraints often have no name: equal ones are no difference, changed ones are named once."""
    up = shape()
    fk = next(f for f in up.tables["metrics"]["foreign_keys"] if f["name"] is None)
    fk["ondelete"] = None
    assert differences(up, shape()) == [
        "foreign key (key) -> keys(key) on metrics after the upgrade "
        "((key) -> keys(key) ON DELETE CASCADE in a fresh install)"
    ]
    up = shape()
    up.tables["metrics"]["uniques"] = []
    up.tables["runs"]["checks"][0]["sqltext"] = "status IN ('RUNNING')"
    assert differences(up, shape()) == [
        "unique constraint (key, step) missing on metrics (fresh has it)",
        "check constraint CHECK status IN ('RUNNING', 'FINISHED') missing on runs (fresh has it)",
        "check constraint CHECK status IN ('RUNNING') on runs only in the upgraded store",
    ]


def test_a_named_check_is_named_with_its_condition() -> None:
    """Products make up names for checks (MariaDB's CONSTRAINT_2): the line says what the check checks."""
    up = shape()
    up.tables["metrics"]["checks"] = []
    up.tables["runs"]["checks"].append({"name": "CONSTRAINT_2", "sqltext": "`is_nan` in (0,1)"})
    assert differences(up, shape()) == [
        "check constraint ck_step (CHECK step >= 0) missing on metrics (fresh has it)",
        "check constraint CONSTRAINT_2 (CHECK `is_nan` in (0,1)) on runs only in the upgraded store",
    ]


def test_named_constraints_renamed_or_changed() -> None:
    up = shape()
    up.tables["metrics"]["checks"][0]["name"] = "metrics_step_check"
    next(f for f in up.tables["metrics"]["foreign_keys"] if f["name"] == "fk_metrics_run")["ondelete"] = (
        "CASCADE"
    )
    up.tables["metrics"]["uniques"][0]["name"] = "uq_metrics_key_step"
    found = differences(up, shape())
    assert sorted(found) == sorted([
        "unique constraint (key, step) on metrics is named uq_metrics_key_step after the upgrade "
        "((unnamed) in a fresh install)",
        "check constraint CHECK step >= 0 on metrics is named metrics_step_check after the upgrade "
        "(ck_step in a fresh install)",
        "foreign key fk_metrics_run on metrics is (run_uuid) -> runs(run_uuid) ON DELETE CASCADE after the "
        "upgrade ((run_uuid) -> runs(run_uuid) in a fresh install)",
    ]), found  # fmt: skip


def test_reflect_reads_what_sqlite_declares(tmp_path: Path) -> None:
    """The inspector's view of a real database, ON DELETE of an inline REFERENCES included (SQLAlchemy's own
    reflection misses it there: SQLite's pragma is read for it)."""
    db = tmp_path / "x.db"
    with closing(sqlite3.connect(db)) as con:
        con.executescript(
            "CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY,"
            " status VARCHAR(20) NOT NULL DEFAULT 'RUNNING',"
            " CHECK (status IN ('RUNNING', 'FINISHED')));"
            "CREATE TABLE metrics (run_uuid VARCHAR(32) REFERENCES runs (run_uuid) ON DELETE CASCADE,"
            " key VARCHAR(250), step BIGINT, UNIQUE (key, step));"
            "CREATE INDEX index_metrics_run_uuid ON metrics (run_uuid, key);"
            "CREATE INDEX index_runs_running ON runs (status) WHERE status = 'RUNNING';"
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);"
            "INSERT INTO alembic_version VALUES ('dc11669786a5');"
        )
    got = reflect(f"sqlite:///{db}")
    assert got.revision == "dc11669786a5" and got.dialect == "sqlite"
    metrics = got.tables["metrics"]
    assert metrics["indexes"] == [{"name": "index_metrics_run_uuid", "columns": ["run_uuid", "key"],
                                   "unique": False}]  # fmt: skip
    assert metrics["foreign_keys"][0]["ondelete"] == "CASCADE"
    partial = {"name": "index_runs_running", "columns": ["status"], "unique": False,
               "options": {"sqlite_where": "status = 'RUNNING'"}}  # fmt: skip
    assert got.tables["runs"]["indexes"] == [partial]
    assert metrics["uniques"] == [{"name": None, "columns": ["key", "step"]}]
    assert got.tables["runs"]["columns"]["status"] == {"type": "VARCHAR(20)", "nullable": False,
                                                       "default": "'RUNNING'"}  # fmt: skip
    assert got.tables["runs"]["checks"] == [{"name": None, "sqltext": "status IN ('RUNNING', 'FINISHED')"}]
    assert Shape.from_json(json.loads(json.dumps(got.to_json()))) == got


# -- the reference: cache and failures, with a stand-in for the runtime's server start ------------------
class FakeEnv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = "9.9.9"


class FakeServer:
    def stop(self) -> int:
        return 0


def creating(ddl: str):
    """A start_server stand-in that creates a schema on the empty store, as a TO server does."""
    calls: list[Path] = []

    def start(env: Any, store: Store, log: Path, features: Any = ()) -> FakeServer:
        calls.append(store.workdir)
        engine = sa.create_engine(store.sqlalchemy_url or store.uri)
        with engine.begin() as con:
            for statement in ddl.split(";"):
                con.execute(sa.text(statement))
        engine.dispose()
        return FakeServer()

    start.calls = calls  # type: ignore[attr-defined]
    return start


SCHEMA = ("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);"
          "INSERT INTO alembic_version VALUES ('head1');"
          "CREATE TABLE runs (run_uuid VARCHAR(32) NOT NULL PRIMARY KEY, status VARCHAR(20));"
          "CREATE INDEX index_runs_status ON runs (status)")  # fmt: skip


def upgraded_store(tmp_path: Path, ddl: str) -> Store:
    from harness.backends import new_store

    store = new_store("sqlite", tmp_path / "up", servers={}, run_id="t", cell_slug="up")
    creating(ddl)(None, store, tmp_path / "x.log")
    return store


def test_the_reference_is_made_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    (tmp_path / "up").mkdir()
    store = upgraded_store(tmp_path, SCHEMA)
    start = creating(SCHEMA)
    refs = References(start, "local", {}, "t", work_root=tmp_path, root=tmp_path / "cache")
    env = FakeEnv(tmp_path / "mlflow-9.9.9-env")
    first, second = (
        Check("schema-drift", "upgrade", Status.PASS),
        Check("schema-drift", "upgrade", Status.PASS),
    )
    check_drift(first, store, env, refs, slug="ref", log=tmp_path / "ref.log", log_rel="ref.log")  # type: ignore[arg-type]
    assert first.status is Status.PASS and refs.made_seconds is not None
    assert (
        first.detail.startswith("same as a fresh 9.9.9 install on SQLite ")
        and "(2 tables, 1 indexes)" in first.detail
    )
    check_drift(second, store, env, refs, slug="ref", log=tmp_path / "ref.log", log_rel="ref.log")  # type: ignore[arg-type]
    assert second.status is Status.PASS and refs.made_seconds is None
    assert len(start.calls) == 1  # type: ignore[attr-defined]
    assert [p.name for p in (tmp_path / "cache").glob("*.json")] == [refs.path(env, store).name]  # type: ignore[arg-type]
    assert not start.calls[0].exists()  # type: ignore[attr-defined]  # the reference's store was removed


def test_drift_fails_the_check_one_problem_per_difference(tmp_path: Path) -> None:
    (tmp_path / "up").mkdir()
    drifted = SCHEMA.replace(";CREATE INDEX index_runs_status ON runs (status)", "").replace(
        "status VARCHAR(20)", "status VARCHAR(20) NOT NULL"
    )
    store = upgraded_store(tmp_path, drifted)
    refs = References(creating(SCHEMA), "local", {}, "t", work_root=tmp_path, root=tmp_path / "cache")
    check = Check("schema-drift", "upgrade", Status.PASS)
    check_drift(
        check, store, FakeEnv(tmp_path / "env"), refs, slug="ref", log=tmp_path / "r.log", log_rel="r.log"
    )  # type: ignore[arg-type]
    assert check.status is Status.FAIL
    assert [p.text for p in check.problems] == [
        "column runs.status NOT NULL after the upgrade (nullable in a fresh install)",
        "index index_runs_status missing on runs (fresh has it)",
    ]
    assert check.detail.startswith("2 difference(s) from a fresh 9.9.9 install on SQLite ")


@pytest.mark.parametrize(
    ("kind", "status"),
    [(StartFailure.TIMEOUT, Status.ERROR), (StartFailure.PORT_TAKEN, Status.ERROR),
     (StartFailure.CRASHED, Status.FAIL), (StartFailure.REFUSED_SCHEMA, Status.FAIL)],
)  # fmt: skip
def test_a_reference_the_server_would_not_make(tmp_path: Path, kind: StartFailure, status: Status) -> None:
    """The machine's trouble (no answer, a taken port) is an error; a TO server that crashes on or refuses an
    empty store is MLflow's behaviour, a failure. Nothing is cached either way."""
    (tmp_path / "up").mkdir()
    store = upgraded_store(tmp_path, SCHEMA)

    def start(env: Any, store: Store, log: Path, features: Any = ()) -> FakeServer:
        raise ServerStartError(kind, f"server said no ({kind.name})", "the log's tail")

    refs = References(start, "local", {}, "t", work_root=tmp_path, root=tmp_path / "cache")
    check = Check("schema-drift", "upgrade", Status.PASS)
    check_drift(
        check, store, FakeEnv(tmp_path / "env"), refs, slug="ref", log=tmp_path / "r.log", log_rel="r.log"
    )  # type: ignore[arg-type]
    assert check.status is status, check.detail
    assert f"server said no ({kind.name})" in check.detail
    assert not list((tmp_path / "cache").glob("*.json"))


def test_a_store_that_cannot_be_reflected_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "up").mkdir()
    store = upgraded_store(tmp_path, SCHEMA)
    store.db_path.unlink()  # type: ignore[attr-defined]
    store.db_path.mkdir()  # type: ignore[attr-defined]  # a directory where the database was: unreadable
    refs = References(creating(SCHEMA), "local", {}, "t", work_root=tmp_path, root=tmp_path / "cache")
    check = Check("schema-drift", "upgrade", Status.PASS)
    check_drift(
        check, store, FakeEnv(tmp_path / "env"), refs, slug="ref", log=tmp_path / "r.log", log_rel="r.log"
    )  # type: ignore[arg-type]
    assert check.status is Status.ERROR and check.detail.startswith("cannot reflect the schema: ")


def test_reference_shapes_are_keyed_by_env_backend_and_product(tmp_path: Path) -> None:
    (tmp_path / "up").mkdir()
    store = upgraded_store(tmp_path, SCHEMA)
    refs = References(creating(SCHEMA), "local", {}, "t", root=tmp_path / "cache")
    a, b = FakeEnv(tmp_path / "env-a"), FakeEnv(tmp_path / "env-b")
    assert refs.path(a, store) != refs.path(b, store)  # type: ignore[arg-type]
    docker = copy.copy(refs)
    docker.runtime_name = "docker"
    assert docker.path(a, store) != refs.path(a, store)  # type: ignore[arg-type]


# -- real cells ----------------------------------------------------------------------------------------
def _plant_drift(point: str, store: Store) -> None:
    """Right before the drift check, in the upgraded store: an index dropped, a column made NOT NULL."""
    if point != "before-schema-drift":
        return
    engine = sa.create_engine(store.sqlalchemy_url, poolclass=sa.pool.NullPool)
    with engine.begin() as con:
        con.execute(sa.text("DROP INDEX index_metrics_run_uuid"))
        con.execute(sa.text("ALTER TABLE runs ALTER COLUMN status SET NOT NULL"))
    engine.dispose()


def drift_check(result: CellResult) -> Check:
    found = [c for c in result.checks if c.name == "schema-drift"]
    assert len(found) == 1, [c.name for c in result.checks]
    return found[0]


@pytest.mark.cell
def test_drift_planted_in_an_upgraded_postgres_store_is_named(tmp_path: Path, databases) -> None:
    result = run_one(tmp_path, "postgres", "1.30.1:2.22.5", tamper=_plant_drift, databases=databases,
                     scenarios=("quickstart",), declared=True)  # fmt: skip
    check = drift_check(result)
    assert check.status is Status.FAIL and check.phase == "upgrade" and check.server == "2.22.5"
    failing = [p.text for p in check.problems if p.status is Status.FAIL]
    assert failing == [
        "index index_metrics_run_uuid missing on metrics (fresh has it)",
        "column runs.status NOT NULL after the upgrade (nullable in a fresh install)",
    ], check.excerpt
    assert "difference(s) from a fresh 2.22.5 install on PostgreSQL " in check.detail
    assert result.status is Status.FAIL
    # The rest of the cell went on and passed: the drift is the only failure.
    others = [c for c in result.checks if c.status is Status.FAIL and c is not check]
    assert others == [], [(c.phase, c.name, c.detail) for c in others]


@pytest.mark.cell
def test_a_clean_upgrade_is_the_same_as_a_fresh_install(tmp_path: Path) -> None:
    """SQLite, 1.30.1 -> 2.22.5: the upgraded schema is exactly what a fresh 2.22.5 install makes."""
    result = run_one(tmp_path, "sqlite", "1.30.1:2.22.5", scenarios=("quickstart",), declared=True)
    check = drift_check(result)
    assert check.status is Status.PASS, check.excerpt
    assert re.match(
        r"same as a fresh 2\.22\.5 install on SQLite [\d.]+ \(19 tables, \d+ indexes\)", check.detail
    )
    assert result.status is Status.PASS, [
        (c.phase, c.name, c.detail) for c in result.checks if c.status is not Status.PASS
    ]


def test_postgres_check_texts_compare_equal_across_a_dump_and_restore() -> None:
    """The texts PostgreSQL 15 deparsed for one CHECK before and after a pg_dump round trip (seen here):
    the same constraint, so no difference; another list of values still is one."""
    before = "status::text = ANY (ARRAY['RUNNING'::character varying, 'FINISHED'::character varying]::text[])"
    after = (
        "status::text = ANY (ARRAY['RUNNING'::character varying::text, 'FINISHED'::character varying::text])"
    )
    fresh, up = shape(), shape()
    fresh.tables["runs"]["checks"] = [
        {"name": "runs_status_check", "sqltext": _check_text("postgresql", before)}
    ]
    up.tables["runs"]["checks"] = [{"name": "runs_status_check", "sqltext": _check_text("postgresql", after)}]
    assert differences(up, fresh) == []
    other = after.replace("'FINISHED'", "'KILLED'")
    up.tables["runs"]["checks"][0]["sqltext"] = _check_text("postgresql", other)
    assert len(differences(up, fresh)) == 1
    assert _check_text("sqlite", after) == after  # only PostgreSQL's casts are folded


@pytest.mark.cell
def test_a_pg_dump_round_trip_leaves_the_reflected_schema_alone(databases) -> None:
    server = databases.get_server("postgres")
    names = ("mlflow_compat_h1_dump_a", "mlflow_compat_h1_dump_b")
    work = Path(tempfile.mkdtemp(prefix="mlflow-compat-h1-"))
    work.chmod(0o755)
    try:
        for name in names:
            server.create(name)
        engine = sa.create_engine(server.url_for(names[0]), poolclass=sa.pool.NullPool)
        with engine.begin() as con:
            con.execute(sa.text("CREATE TABLE runs (status VARCHAR(20) DEFAULT 'RUNNING', CONSTRAINT "
                                "runs_status_check CHECK (status IN ('RUNNING', 'FINISHED')))"))  # fmt: skip
            con.execute(sa.text("CREATE INDEX index_runs_status ON runs (status)"))
        engine.dispose()
        server.dump(names[0], work / "dump", work / "tools.log")
        server.restore(names[1], work / "dump", work / "tools.log")
        raw = []
        for name in names:
            engine = sa.create_engine(server.url_for(name), poolclass=sa.pool.NullPool)
            raw.append(sa.inspect(engine).get_check_constraints("runs")[0]["sqltext"])
            engine.dispose()
        assert raw[0] != raw[1]  # what PostgreSQL says of the constraint changed with the round trip ...
        original, restored = (reflect(server.url_for(name)) for name in names)
        assert differences(restored, original) == []  # ... and is still the same constraint here
    finally:
        for name in names:
            server.drop(name)
        shutil.rmtree(work, ignore_errors=True)


SEEN_ON_MARIADB = [  # the differences of the 1.22.0 -> 3.17.2 cell on MariaDB 10.11, as the check named them
    "index run_uuid on latest_metrics only in the upgraded store",
    "check constraint CONSTRAINT_2 (CHECK `is_nan` in (0,1)) on latest_metrics only in the upgraded store",
    "index run_uuid on metrics only in the upgraded store",
    "index run_uuid on params only in the upgraded store",
    "index run_uuid on tags only in the upgraded store",
]


@pytest.mark.parametrize(
    ("backend", "path", "status"),
    [("mysql", ["1.22.0", "3.17.2"], Status.XFAIL), ("mysql", ["1.30.1", "3.17.2"], Status.FAIL),
     ("postgres", ["1.22.0", "3.17.2"], Status.FAIL)],
)  # fmt: skip
def test_the_declared_drift_covers_exactly_the_old_mysql_stores(
    backend: str, path: list[str], status: Status
) -> None:
    """The shipped declarations turn what a pre-1.23 MySQL store keeps into xfail there, and nowhere else; a
    planted difference beside them stays a failure."""
    from harness import expectations

    for extra, expected in (
        ([], status),
        (["index index_metrics_run_uuid missing on metrics (fresh has it)"], Status.FAIL),
    ):
        check = Check("schema-drift", "upgrade", Status.PASS, server=path[-1])
        check.fail_each([*SEEN_ON_MARIADB, *extra])
        result = CellResult(id="x", backend=backend, runtime="local", path=path, clients=path)
        result.components["envs"] = {path[0]: {"sqlalchemy": "1.3.24"}}  # as made: 1.22's latest-mode env
        result.add(check)
        expectations.apply(result, expectations.default())
        assert check.status is expected, check.detail
