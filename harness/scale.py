"""Migrations at scale: seeding a FROM store with SIZE metric points, reading a sample of it back through a
server, in-database checksums of every column, and what an upgrade costs (store sizes, table locks).

Seeding (`seed`): bulk SQL run inside the database, at the schema the FROM server created (the tables and
columns that exist are reflected; a required column the seeder has no value for is an error naming it).
Every table is filled with one `INSERT ... SELECT` over a generated series (a cross join of a ten-row digits
subquery, which PostgreSQL, MariaDB/MySQL and SQLite all run), never by Python row loops. Every value is a
function of the row's indexes (`Plan`), so `expected_sample` knows what a sample must read back.
SIZE points become `runs x KEYS x STEPS` (KEYS=10 keys of STEPS=100 steps per run: runs = SIZE/1000, rounded
up), in `runs/50` experiments; each run has 10 params, 5 tags, one dataset input; latest_metrics holds each
history's point at the highest step (MLflow's rule: the max step, then the max timestamp, then the max value;
steps and timestamps rise together here, so that is the last step); `runs/100` registered models of 5
versions each, with tags and an alias. Tables the schema does not have (datasets before 2.4, aliases before
2.3) are left out.

Checksums (`checksums`, `compare`): per table the row count, per column the sum of a 32-bit hash of each
value's text over all rows (order-independent), and the same over whole rows (every column's text joined),
which catches values that moved between rows without changing any column's multiset.
Computed in the database: PostgreSQL `hashtext`, MariaDB/MySQL `CRC32`, SQLite a Python CRC32 registered
as an SQL function. What is normalised, so that a documented type conversion is not a difference: booleans
and integers as their integer text (a boolean is 1 or 0, whatever type holds it); floating and fixed-point
numbers as the text of the double (PostgreSQL float8 text, MariaDB's double text, SQLite Python's repr), an
integral number as an integer; NULL as a marker; text as it is; anything else as the product's text cast.
The columns are the ones the table had before the upgrade. Unlike harness/integrity.py, new rows in
a table cannot be told apart from old ones here: a table that grew is reported as a difference, and rows a
migration moves into new columns (integrity's 3.17 trace moves) are not recognised (seeding writes none).

Sizes and locks (`watch`): the database's size before and after (PostgreSQL pg_database_size, MariaDB/MySQL
information_schema after ANALYZE TABLE, SQLite the file), and the longest time each table was held by a lock
that blocks writers while the upgrade ran (tables it created are left out), sampled every 0.1 s by a thread
(PostgreSQL pg_locks joined to pg_class; MariaDB/MySQL performance_schema.metadata_locks where it is on, else
the metadata_lock_info plugin's table; otherwise the reason). A lock shorter than the sampling interval may go
unseen. On PostgreSQL the upgrade is one transaction, so a table keeps its lock until the commit.

What does not live here: when these run in a cell (harness/cell.py), the probe process (scenarios/
scale_probe.py).
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness import procs
from harness.envs import Env
from harness.integrity import TRACKING_TABLES, read_revision
from harness.paths import SCENARIOS_DIR
from harness.plan import scale_label
from harness.results import Check, Status

KEYS = 10  # metric keys per run
STEPS = 100  # steps per metric history
PARAMS = 10  # params per run
TAGS = 5  # tags per run
RUNS_PER_EXPERIMENT = 50
RUNS_PER_MODEL = 100
VERSIONS = 5  # versions per registered model
EXP_BASE = 900000  # seeded experiment ids start here (far above what the cell's scenarios create)
T0 = 1_700_000_000_000  # ms: seeded times start here
RUN_PREFIX = "5ca1e0000000000000000"  # + an 11-digit number: a 32-character hex-looking run id
SAMPLE_RUNS = 5
SEARCH_MAX = 1000
NULL = "~NULL~"
LOCK_INTERVAL_S = 0.1


class SeedError(RuntimeError):
    """The store could not be seeded (the harness's trouble, or a schema it does not know)."""


# -- the plan: how many of each, and every value as a function of its indexes --------------------------------
@dataclass(frozen=True)
class Plan:
    runs: int
    experiments: int
    models: int

    @property
    def points(self) -> int:
        return self.runs * KEYS * STEPS

    @classmethod
    def for_points(cls, points: int) -> Plan:
        if points < KEYS * STEPS:
            raise ValueError(f"at least {KEYS * STEPS} metric points, got {points}")
        runs = math.ceil(points / (KEYS * STEPS))
        return cls(runs, math.ceil(runs / RUNS_PER_EXPERIMENT), math.ceil(runs / RUNS_PER_MODEL))

    def rows(self) -> dict[str, int]:
        """The rows each table gets (where the schema has it)."""
        return {
            "experiments": self.experiments,
            "experiment_tags": self.experiments,
            "runs": self.runs,
            "params": self.runs * PARAMS,
            "tags": self.runs * TAGS,
            "metrics": self.points,
            "latest_metrics": self.runs * KEYS,
            "registered_models": self.models,
            "registered_model_tags": self.models,
            "model_versions": self.models * VERSIONS,
            "model_version_tags": self.models * VERSIONS,
            "registered_model_aliases": self.models,
            "datasets": self.experiments,
            "inputs": self.runs,
            "input_tags": self.runs,
        }

    def sample_runs(self) -> list[int]:
        picks = {0, self.runs // 3, self.runs // 2, (2 * self.runs) // 3, self.runs - 1}
        return sorted(picks)[:SAMPLE_RUNS]

    def sample_versions(self) -> list[tuple[int, int]]:
        return sorted({(0, 1), (self.models - 1, VERSIONS)})


def run_id(r: int) -> str:
    return f"{RUN_PREFIX}{10_000_000_000 + r}"


def experiment_id(plan: Plan, r: int) -> int:
    return EXP_BASE + r % plan.experiments


def metric_value(r: int, k: int, s: int) -> float:
    return ((r * 7919 + k * 104729 + s * 31) % 100003) * 0.125


def metric_timestamp(r: int, k: int, s: int) -> int:
    return T0 + r * 1_000_000 + s * 100 + k


def model_version_run(plan: Plan, m: int, v: int) -> int:
    return (m * VERSIONS + v) % plan.runs


def expected_sample(plan: Plan) -> dict[str, Any]:
    """What the sample the probe reads must hold, from the same formulas the SQL below encodes."""
    runs = {}
    for r in plan.sample_runs():
        k = r % KEYS
        last = STEPS - 1
        runs[run_id(r)] = {
            "name": f"scale-run-{r}",
            "experiment_id": str(experiment_id(plan, r)),
            "start_time": T0 + r * 1000,
            "end_time": T0 + r * 1000 + 500,
            "status": "FINISHED",
            "params": {f"p{j}": f"{r}.{j}" for j in range(PARAMS)},
            "tags": {f"scale.t{j}": f"tag-{r}-{j}" for j in range(TAGS)},
            "metrics": {f"m{kk}": repr(metric_value(r, kk, last)) for kk in range(KEYS)},
            "history_key": f"m{k}",
            "history": [[s, metric_timestamp(r, k, s), repr(metric_value(r, k, s))] for s in range(STEPS)],
        }
    versions = {}
    for m, v in plan.sample_versions():
        versions[f"scale-model-{m}/{v}"] = {
            "run_id": run_id(model_version_run(plan, m, v - 1)),
            "source": f"mlflow-artifacts:/scale/{model_version_run(plan, m, v - 1)}/model",
            "description": f"seeded version {m}.{v}",
            "tags": {"scale.v": f"{m}.{v}"},
        }
    return {"runs": runs, "model_versions": versions}


def probe_spec(plan: Plan) -> dict[str, Any]:
    """What scenarios/scale_probe.py is asked to read."""
    sample = expected_sample(plan)
    return {
        "experiment_ids": [str(EXP_BASE + e) for e in range(plan.experiments)],
        "search_max": SEARCH_MAX,
        "runs": {rid: want["history_key"] for rid, want in sample["runs"].items()},
        "model_versions": [[f"scale-model-{m}", str(v)] for m, v in plan.sample_versions()],
    }


def compare_sample(plan: Plan, got: dict[str, Any]) -> list[str]:
    """Each difference between what the probe read and what was seeded, named by its place."""
    want = expected_sample(plan)
    diffs = []
    expect_found = min(plan.runs, SEARCH_MAX)
    if got.get("search_count") != expect_found:
        diffs.append(f"search_runs found {got.get('search_count')} seeded runs, expected {expect_found}")
    for rid, expected in want["runs"].items():
        seen = got.get("runs", {}).get(rid)
        if seen is not None:  # the seeded tags only (MLflow adds its own)
            tags = {k: v for k, v in (seen.get("tags") or {}).items() if k.startswith("scale.")}
            seen = {**seen, "tags": tags}
        diffs += _differences(f"run {rid}", seen, expected, RUN_FIELDS)
    for key, expected in want["model_versions"].items():
        seen = got.get("model_versions", {}).get(key)
        diffs += _differences(f"model version {key}", seen, expected, tuple(expected))
    return diffs


RUN_FIELDS = (
    "name",
    "experiment_id",
    "start_time",
    "end_time",
    "status",
    "params",
    "metrics",
    "history",
    "tags",
)


def _differences(
    what: str, seen: dict[str, Any] | None, expected: dict[str, Any], fields: tuple[str, ...]
) -> list[str]:
    """``what``'s fields as read against what was seeded, one line per wrong one ("not read": none at all)."""
    if seen is None:
        return [f"{what}: not read"]
    return [f"{what}.{name}: {_short(seen.get(name))}, expected {_short(expected[name])}"
            for name in fields if seen.get(name) != expected[name]]  # fmt: skip


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


# -- SQL per product ---------------------------------------------------------------------------------------
class Dialect:
    """The few expressions that differ between PostgreSQL, MariaDB/MySQL and SQLite."""

    def __init__(self, engine: sa.Engine) -> None:
        self.name = engine.dialect.name
        self.preparer = engine.dialect.identifier_preparer

    def q(self, ident: str) -> str:
        return str(self.preparer.quote(ident))

    def cat(self, *parts: str) -> str:
        if self.name == "mysql":
            return f"CONCAT({', '.join(parts)})"
        return "(" + " || ".join(parts) + ")"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS CHAR)" if self.name == "mysql" else f"CAST({expr} AS TEXT)"

    def bigint(self, expr: str) -> str:
        return f"CAST({expr} AS SIGNED)" if self.name == "mysql" else f"CAST({expr} AS BIGINT)"

    def series(self, n: int, alias: str) -> str:
        """A derived table ``alias`` with one column ``n``: 0 .. n-1 (filtered by the caller's WHERE)."""
        digits = "(SELECT 0 AS i " + " ".join(f"UNION ALL SELECT {d}" for d in range(1, 10)) + ")"
        width = max(1, len(str(max(n - 1, 0))))
        terms = " + ".join(f"{10**p} * d{p}.i" if p else "d0.i" for p in range(width))
        joins = " CROSS JOIN ".join(f"{digits} d{p}" for p in range(width))
        return f"(SELECT {self.bigint(terms)} AS n FROM {joins}) {alias}"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _tables_sql(d: Dialect, plan: Plan) -> list[tuple[str, dict[str, str], list[tuple[str, int]]]]:
    """(table, {column: expression}, [(series alias, length)]) in insertion order (parents first)."""
    cat, txt = d.cat, d.text
    run = cat(_lit(RUN_PREFIX), txt("10000000000 + r.n"))
    run_of = lambda e: cat(_lit(RUN_PREFIX), txt(f"10000000000 + ({e})"))  # noqa: E731
    exp_of_run = f"{EXP_BASE} + r.n % {plan.experiments}"
    ds_uuid = lambda e: cat(_lit("5ca1ed00-0000-0000-0000-"), txt(f"100000000000 + ({e})"))  # noqa: E731
    vrun = f"(m.n * {VERSIONS} + v.n) % {plan.runs}"
    value = "((r.n * 7919 + k.n * 104729 + s.n * 31) % 100003) * 0.125"
    last_value = f"((r.n * 7919 + k.n * 104729 + {STEPS - 1} * 31) % 100003) * 0.125"
    R, E, M = [("r", plan.runs)], [("e", plan.experiments)], [("m", plan.models)]
    return [
        ("experiments", {
            "experiment_id": f"{EXP_BASE} + e.n",
            "name": cat(_lit("scale-exp-"), txt("e.n")),
            "artifact_location": cat(_lit("mlflow-artifacts:/scale/exp-"), txt("e.n")),
            "lifecycle_stage": "'active'",
            "creation_time": f"{T0} + e.n",
            "last_update_time": f"{T0} + e.n",
        }, E),
        ("experiment_tags", {
            "key": "'scale.kind'", "value": cat(_lit("exp-"), txt("e.n")),
            "experiment_id": f"{EXP_BASE} + e.n",
        }, E),
        ("runs", {
            "run_uuid": run, "name": cat(_lit("scale-run-"), txt("r.n")), "source_type": "'LOCAL'",
            "source_name": "''", "entry_point_name": "''", "user_id": "'scale'", "status": "'FINISHED'",
            "start_time": f"{T0} + r.n * 1000", "end_time": f"{T0} + r.n * 1000 + 500",
            "source_version": "''",
            "lifecycle_stage": "'active'", "artifact_uri": cat(_lit("mlflow-artifacts:/scale/"), txt("r.n")),
            "experiment_id": exp_of_run,
        }, R),
        ("params", {
            "key": cat("'p'", txt("j.n")), "value": cat(txt("r.n"), "'.'", txt("j.n")), "run_uuid": run,
        }, [*R, ("j", PARAMS)]),
        ("tags", {
            "key": cat("'scale.t'", txt("j.n")), "value": cat("'tag-'", txt("r.n"), "'-'", txt("j.n")),
            "run_uuid": run,
        }, [*R, ("j", TAGS)]),
        ("metrics", {
            "key": cat("'m'", txt("k.n")), "value": value,
            "timestamp": f"{T0} + r.n * 1000000 + s.n * 100 + k.n", "run_uuid": run, "step": "s.n",
            "is_nan": "FALSE",
        }, [*R, ("k", KEYS), ("s", STEPS)]),
        ("latest_metrics", {
            "key": cat("'m'", txt("k.n")), "value": last_value,
            "timestamp": f"{T0} + r.n * 1000000 + {(STEPS - 1) * 100} + k.n", "step": str(STEPS - 1),
            "is_nan": "FALSE", "run_uuid": run,
        }, [*R, ("k", KEYS)]),
        ("registered_models", {
            "name": cat("'scale-model-'", txt("m.n")), "creation_time": f"{T0} + m.n",
            "last_updated_time": f"{T0} + m.n", "description": cat("'seeded model '", txt("m.n")),
        }, M),
        ("registered_model_tags", {
            "key": "'scale.owner'", "value": cat("'team-'", txt("m.n")),
            "name": cat("'scale-model-'", txt("m.n")),
        }, M),
        ("model_versions", {
            "name": cat("'scale-model-'", txt("m.n")), "version": "v.n + 1", "creation_time": f"{T0} + v.n",
            "last_updated_time": f"{T0} + v.n",
            "description": cat("'seeded version '", txt("m.n"), "'.'", txt("v.n + 1")),
            "user_id": "'scale'", "current_stage": "'None'",
            "source": cat(_lit("mlflow-artifacts:/scale/"), txt(vrun), "'/model'"),
            "run_id": run_of(vrun), "status": "'READY'",
            "storage_location": cat(_lit("mlflow-artifacts:/scale/"), txt(vrun), "'/model'"),
        }, [*M, ("v", VERSIONS)]),
        ("model_version_tags", {
            "key": "'scale.v'", "value": cat(txt("m.n"), "'.'", txt("v.n + 1")),
            "name": cat("'scale-model-'", txt("m.n")), "version": "v.n + 1",
        }, [*M, ("v", VERSIONS)]),
        ("registered_model_aliases", {
            "alias": "'champion'", "version": str(VERSIONS), "name": cat("'scale-model-'", txt("m.n")),
        }, M),
        ("datasets", {
            "dataset_uuid": ds_uuid("e.n"), "experiment_id": f"{EXP_BASE} + e.n",
            "name": cat("'scale-ds-'", txt("e.n")), "digest": cat("'d'", txt("e.n")),
            "dataset_source_type": "'http'",
            "dataset_source": cat(_lit('{"url": "https://example.com/scale/'), txt("e.n"), _lit('.csv"}')),
        }, E),
        ("inputs", {
            "input_uuid": cat(_lit("5ca1e100-0000-0000-0000-"), txt("100000000000 + r.n")),
            "source_type": "'DATASET'", "source_id": ds_uuid(f"r.n % {plan.experiments}"),
            "destination_type": "'RUN'", "destination_id": run,
        }, R),
        ("input_tags", {
            "input_uuid": cat(_lit("5ca1e100-0000-0000-0000-"), txt("100000000000 + r.n")),
            "name": "'mlflow.data.context'", "value": "'training'",
        }, R),
    ]  # fmt: skip


def insert_statements(engine: sa.Engine, plan: Plan) -> list[tuple[str, str]]:
    """(table, INSERT ... SELECT) for every seeded table the store's schema has, at its own columns."""
    d = Dialect(engine)
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    out = []
    for table, columns, series in _tables_sql(d, plan):
        if table not in present:
            continue
        reflected = inspector.get_columns(table)
        names = {c["name"] for c in reflected}
        missing = [
            c["name"]
            for c in reflected
            if c["name"] not in columns
            and not c.get("nullable", True)
            and c.get("default") is None
            and c.get("autoincrement") is not True
        ]
        if missing:
            raise SeedError(f"{table}: no seed value for required column(s) {', '.join(missing)}")
        use = [c for c in columns if c in names]
        sources = " CROSS JOIN ".join(d.series(n, alias) for alias, n in series)
        where = " AND ".join(f"{alias}.n < {n}" for alias, n in series)
        sql = (
            f"INSERT INTO {d.q(table)} ({', '.join(d.q(c) for c in use)}) "
            f"SELECT {', '.join(columns[c] for c in use)} FROM {sources} WHERE {where}"
        )
        out.append((table, sql))
    return out


def _engine(url: str | sa.URL) -> sa.Engine:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_functions)
    return engine


@dataclass
class Seeded:
    plan: Plan
    seconds: float
    rows: dict[str, int]


def seed(url: str | sa.URL, points: int) -> Seeded:
    """Fill the store at ``url`` (its schema already created by the FROM server) with ``points`` metric
    points and everything around them; the rows each table got, and the seconds it took."""
    plan = Plan.for_points(points)
    engine = _engine(url)
    started = time.monotonic()
    rows: dict[str, int] = {}
    try:
        for table, sql in insert_statements(engine, plan):
            with engine.begin() as con:
                rows[table] = con.execute(sa.text(sql)).rowcount
    except sa.exc.SQLAlchemyError as exc:
        raise SeedError(f"seeding failed: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
    return Seeded(plan, time.monotonic() - started, rows)


# -- checksums ----------------------------------------------------------------------------------------------
def _py_text(value: Any) -> str | None:
    """SQLite's normalised text of a value (the same rules the SQL of the other products encodes)."""
    if value is None:
        return None
    if isinstance(value, bool | int):
        return str(int(value))
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _crc(*values: Any) -> int:
    return zlib.crc32("|".join(NULL if v is None else v for v in map(_py_text, values)).encode())


def _sqlite_functions(dbapi_con: Any, _record: Any) -> None:
    dbapi_con.create_function("scale_crc", -1, _crc, deterministic=True)


def _kind(column_type: Any) -> str:
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, sa.Integer):
        return "int"
    if isinstance(column_type, sa.Float | sa.Numeric):
        return "float"
    if isinstance(column_type, sa.String):
        return "text"
    return "other"


def _norm(d: Dialect, col: str, kind: str) -> str:
    """The SQL of a column's normalised text (NULL stays NULL)."""
    c = d.q(col)
    if d.name == "postgresql":
        if kind == "bool":
            return f"CASE WHEN {c} THEN '1' WHEN NOT {c} THEN '0' END"
        if kind == "int":
            return f"CAST(CAST({c} AS BIGINT) AS TEXT)"
        if kind == "float":
            return f"CAST(CAST({c} AS DOUBLE PRECISION) AS TEXT)"
        return f"CAST({c} AS TEXT)"
    # MariaDB/MySQL
    if kind in ("bool", "int"):
        return f"CAST(CAST({c} AS SIGNED) AS CHAR)"
    if kind == "float":
        return f"CAST(CAST({c} AS DOUBLE) AS CHAR)"
    return f"CAST({c} AS CHAR)" if kind != "text" else c


@dataclass
class TableSum:
    rows: int
    columns: dict[str, int]  # column -> checksum of its values (a multiset: order-independent)
    whole_rows: (
        int  # checksum of whole rows (every column of ``columns``, in order): values moved between rows
    )


@dataclass
class Sums:
    """Row counts and column checksums of a store's tracking tables; the alembic revision."""

    revision: str | None
    tables: dict[str, TableSum] = field(default_factory=dict)
    seconds: float = 0.0

    def row_count(self) -> int:
        return sum(t.rows for t in self.tables.values())


def _table_sql(d: Dialect, table: str, kinds: dict[str, str], columns: list[str]) -> str:
    """SELECT the row count, each column's checksum, then the whole rows' checksum."""
    if d.name == "sqlite":
        sums = [f"SUM(scale_crc({d.q(c)}))" for c in columns]
        whole = f"SUM(scale_crc({', '.join(d.q(c) for c in columns)}))" if columns else "0"
    else:
        texts = [f"COALESCE({_norm(d, c, kinds[c])}, '{NULL}')" for c in columns]
        hash_ = "hashtext" if d.name == "postgresql" else "CRC32"
        sums = [f"SUM({hash_}({t}))" for t in texts]
        joined = [part for t in texts for part in (t, "'|'")][:-1]
        whole = f"SUM({hash_}({d.cat(*joined)}))" if columns else "0"
    return f"SELECT COUNT(*), {whole}{''.join(', ' + x for x in sums)} FROM {d.q(table)}"


def checksums(url: str | sa.URL, like: Sums | None = None) -> Sums:
    """Counts and checksums of every tracking table at ``url`` (harness.integrity.TRACKING_TABLES), or, with
    ``like``, of ``like``'s tables and the columns they had that still exist."""
    engine = _engine(url)
    started = time.monotonic()
    try:
        d = Dialect(engine)
        with engine.connect() as con:
            inspector = sa.inspect(con)
            present = set(inspector.get_table_names())
            out = Sums(read_revision(con, present))
            names = list(like.tables) if like is not None else [t for t in TRACKING_TABLES if t in present]
            for table in names:
                if table not in present:
                    continue
                reflected = {c["name"]: _kind(c["type"]) for c in inspector.get_columns(table)}
                columns = list(reflected)
                if like is not None:
                    columns = [c for c in like.tables[table].columns if c in reflected]
                row = con.execute(sa.text(_table_sql(d, table, reflected, columns))).one()
                sums = {c: int(row[i + 2] or 0) for i, c in enumerate(columns)}
                out.tables[table] = TableSum(int(row[0]), sums, int(row[1] or 0))
    finally:
        engine.dispose()
    out.seconds = time.monotonic() - started
    return out


@dataclass
class ChecksumReport:
    differences: list[str]
    rows_before: int
    tables: int
    columns: int
    seconds: float

    def summary(self) -> str:
        if self.differences:
            more = f" (+{len(self.differences) - 3} more)" if len(self.differences) > 3 else ""
            return f"{len(self.differences)} difference(s): " + "; ".join(self.differences[:3]) + more
        return (
            f"all {self.rows_before:,} rows kept: row counts and checksums of {self.columns} columns in "
            f"{self.tables} tables unchanged (computed in the database, {self.seconds:.1f}s)"
        )


def compare(before: Sums, after: Sums) -> ChecksumReport:
    diffs = []
    columns = 0
    for table, old in before.tables.items():
        new = after.tables.get(table)
        if new is None:
            if old.rows:
                diffs.append(f"table {table} with {old.rows:,} rows is gone")
            continue
        columns += len(old.columns)
        if new.rows < old.rows:
            diffs.append(f"{table}: {old.rows - new.rows:,} of {old.rows:,} rows lost")
            continue
        if new.rows > old.rows:
            diffs.append(
                f"{table}: {new.rows - old.rows:,} rows more after the upgrade ({old.rows:,} before): the "
                "checksums cannot tell whether the old rows are intact"
            )
            continue
        named = []
        for column, value in old.columns.items():
            if column not in new.columns:
                named.append(f"{table}.{column}: column dropped")
            elif new.columns[column] != value:
                named.append(f"{table}.{column} changed (checksum)")
        if not named and new.whole_rows != old.whole_rows:
            named.append(f"{table}: values moved between rows (checksum of whole rows)")
        diffs += named
    return ChecksumReport(diffs, before.row_count(), len(before.tables), columns, after.seconds)


# -- sizes and locks ---------------------------------------------------------------------------------------
def database_size(url: str | sa.URL) -> int:
    """The store's size in bytes, as the product counts it."""
    engine = _engine(url)
    try:
        name = engine.dialect.name
        if name == "sqlite":
            path = Path(str(engine.url.database))
            return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        with engine.begin() as con:
            if name == "postgresql":
                return int(con.execute(sa.text("SELECT pg_database_size(current_database())")).scalar() or 0)
            tables = [r[0] for r in con.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_type = 'BASE TABLE'"))]  # fmt: skip
            for t in tables:
                con.execute(
                    sa.text(f"ANALYZE TABLE {engine.dialect.identifier_preparer.quote(t)}")
                ).fetchall()
            total = con.execute(sa.text(
                "SELECT SUM(data_length + index_length) FROM information_schema.tables "
                "WHERE table_schema = DATABASE()")).scalar()  # fmt: skip
            return int(total or 0)
    finally:
        engine.dispose()


# Lock modes that keep writers out (a SELECT's ACCESS SHARE / MDL_SHARED_READ does not count).
PG_BLOCKING = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
MDL_BLOCKING = ("MDL_EXCLUSIVE", "MDL_SHARED_NO_WRITE", "MDL_SHARED_NO_READ_WRITE", "MDL_SHARED_READ_ONLY")


def _lock_query(con: sa.Connection, dialect: str) -> tuple[str | None, str]:
    """The SQL that lists (table) held under a blocking lock by other sessions, or None and why not."""
    if dialect == "postgresql":
        modes = ", ".join(f"'{m}'" for m in PG_BLOCKING)
        return (
            "SELECT DISTINCT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_database d ON d.oid = l.database WHERE d.datname = current_database() AND l.granted "
            f"AND l.pid <> pg_backend_pid() AND c.relkind IN ('r', 'p') AND l.mode IN ({modes})"
        ), ""
    if dialect != "mysql":
        return None, f"{dialect} has no lock table to sample"
    modes = ", ".join(f"'{m}'" for m in MDL_BLOCKING)
    ps_modes = ", ".join(f"'{m.removeprefix('MDL_')}'" for m in MDL_BLOCKING)  # performance_schema's names
    if con.execute(sa.text("SELECT @@performance_schema")).scalar() in (1, "1", "ON"):
        return (
            "SELECT DISTINCT object_name FROM performance_schema.metadata_locks WHERE object_type = 'TABLE' "
            f"AND object_schema = DATABASE() AND lock_status = 'GRANTED' AND lock_type IN ({ps_modes}) "
            "AND owner_thread_id <> (SELECT thread_id FROM performance_schema.threads "
            "WHERE processlist_id = CONNECTION_ID())"
        ), ""
    plugin = con.execute(sa.text(
        "SELECT plugin_status FROM information_schema.plugins WHERE plugin_name = 'METADATA_LOCK_INFO'"
    )).scalar()  # fmt: skip
    if plugin == "ACTIVE":
        return (
            "SELECT DISTINCT table_name FROM information_schema.metadata_lock_info WHERE table_schema = "
            f"DATABASE() AND lock_mode IN ({modes}) AND thread_id <> CONNECTION_ID()"
        ), ""
    return None, (
        "the server has neither performance_schema nor the metadata_lock_info plugin on: it cannot tell "
        "which tables are locked"
    )


class LockSampler(threading.Thread):
    """Every LOCK_INTERVAL_S, which tables another session holds under a blocking lock; the longest
    continuous stretch per table (from the first sample that saw it to the last one in a row). Only
    ``tables`` count when given: those the store had before the upgrade (a table being created is locked by
    its creator, which keeps no one out; PostgreSQL does not even show it before the commit)."""

    def __init__(self, url: str | sa.URL, tables: set[str] | None = None) -> None:
        super().__init__(daemon=True, name="scale-locks")
        self.engine = _engine(url)
        self.tables = tables
        self.stop_event = threading.Event()
        self.longest: dict[str, float] = {}
        self.reason = ""
        self.samples = 0
        self._open: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with self.engine.connect() as con:
                sql, self.reason = _lock_query(con, self.engine.dialect.name)
                self.ready.set()
                while sql is not None and not self.stop_event.is_set():
                    seen = {r[0] for r in con.execute(sa.text(sql))}
                    con.commit()
                    self._record(seen, time.monotonic())
                    self.samples += 1
                    self.stop_event.wait(LOCK_INTERVAL_S)
                self._record(set(), time.monotonic())
        except sa.exc.SQLAlchemyError as exc:
            self.reason = f"lock sampling failed: {str(exc).splitlines()[0]}"
        finally:
            self.ready.set()
            self.engine.dispose()

    def _record(self, seen: set[str], at: float) -> None:
        for table in seen:
            self._open.setdefault(table, at)
        for table in list(self._open):
            if table not in seen:
                start = self._open.pop(table)
                self.longest[table] = max(self.longest.get(table, 0.0), at - start)

    def result(self) -> dict[str, float] | str:
        if self.reason:
            return self.reason
        held = [(t, s) for t, s in self.longest.items() if self.tables is None or t in self.tables]
        return {t: round(s, 2) for t, s in sorted(held, key=lambda kv: -kv[1])}


@dataclass
class Watch:
    sizes: dict[str, int | None] = field(default_factory=dict)
    locks: dict[str, float] | str = ""


@contextmanager
def watch(url: str | sa.URL) -> Iterator[Watch]:
    """Around an upgrade: the store's size before and after, and the longest blocking lock per table."""
    seen = Watch()
    seen.sizes["before"] = _size_or_none(url)
    sampler = LockSampler(url, _table_names(url))
    sampler.start()
    sampler.ready.wait(10)
    try:
        yield seen
    finally:
        sampler.stop_event.set()
        sampler.join(30)
        seen.locks = sampler.result()
        seen.sizes["after"] = _size_or_none(url)


def _table_names(url: str | sa.URL) -> set[str] | None:
    engine = _engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def _size_or_none(url: str | sa.URL) -> int | None:
    """The size, or None when the database did not answer (the upgrade step says why, if it matters)."""
    try:
        return database_size(url)
    except (sa.exc.SQLAlchemyError, OSError):
        return None


# -- the cell's steps: seed and read back, first search after the upgrade -------------------------------
PROBE = SCENARIOS_DIR / "scale_probe.py"
PROBE_TIMEOUT_S = 900.0


@dataclass
class Probe:
    """What scenarios/scale_probe.py read (``data``), or why it read nothing (``trouble``: the harness's)."""

    data: dict[str, Any] | None
    seconds: float
    trouble: str = ""
    log: Path | None = None


def run_probe(env: Env, tracking_uri: str, extra_env: dict[str, str], base: Path, plan: Plan) -> Probe:
    """The probe in ``env``'s venv against the server at ``tracking_uri``; its files are ``base``-*."""
    spec, out, log = (base.with_name(f"{base.name}-{s}") for s in ("spec.json", "out.json", "log.txt"))
    spec.write_text(json.dumps(probe_spec(plan)))
    out.unlink(missing_ok=True)
    environ = {**env.environ(), **extra_env, "MLFLOW_TRACKING_URI": tracking_uri}
    cmd = [str(env.interpreter), str(PROBE), str(spec), str(out)]
    code, seconds = procs.run(cmd, env=environ, log=log, timeout=PROBE_TIMEOUT_S)
    if code is None:
        return Probe(None, seconds, f"the probe timed out after {seconds:.0f}s", log)
    if not out.exists():
        return Probe(None, seconds, f"the probe exited with code {code} before writing a result", log)
    return Probe(json.loads(out.read_text()), seconds, "", log)


def judge(check: Check, plan: Plan, probe: Probe) -> bool:
    """The check's status from what the probe read: True when the sample is intact."""
    if probe.data is None:
        check.status, check.detail = Status.ERROR, probe.trouble
        check.excerpt = procs.tail(probe.log) if probe.log else None
        return False
    if error := probe.data.get("error"):
        answered = bool(error.get("answered"))
        check.status = Status.FAIL if answered else Status.ERROR
        how = "the server answered" if answered else "no answer from the server to"
        check.detail = f"{how} {error.get('call')}: {error.get('error', '')[:300]}"
        return False
    diffs = compare_sample(plan, probe.data)
    if diffs:
        check.fail_each(diffs)
        check.detail = f"{len(diffs)} difference(s) in the sample read back: " + "; ".join(diffs[:3])
        return False
    return True


def seed_check(
    check: Check, url: str | sa.URL, points: int, version: str, record: dict[str, Any], probe: Any
) -> bool:
    """Seed the store, then read a sample back through the running FROM server (``probe(plan)``). False
    when seeding itself failed (the cell cannot go on)."""
    try:
        seeded = seed(url, points)
    except (SeedError, ValueError) as exc:
        check.status, check.detail = Status.ERROR, str(exc)
        return False
    plan = seeded.plan
    record.update(points=plan.points, label=scale_label(plan.points), seed_seconds=round(seeded.seconds, 1),
                  rows=seeded.rows)  # fmt: skip
    what = (
        f"seeded {plan.points:,} metric points ({plan.runs:,} runs x {KEYS} keys x {STEPS} steps in "
        f"{plan.experiments:,} experiments, {plan.models:,} models x {VERSIONS} versions) "
        f"in {seeded.seconds:.0f} s"
    )
    result = probe(plan)
    if judge(check, plan, result):
        check.detail = (
            f"{what}; sample of {len(plan.sample_runs())} runs read back intact through MLflow {version}"
        )
    else:
        check.detail = f"{what}; {check.detail}"
    return True


def search_check(check: Check, version: str, record: dict[str, Any], probe: Any) -> None:
    """The next server's first `search_runs` on the seeded store, timed; the sample must still read back."""
    if "points" not in record:
        check.status, check.detail = Status.SKIP, "the store was not seeded"
        return
    plan = Plan.for_points(int(record["points"]))
    result = probe(plan)
    if result.data and "search_seconds" in result.data:
        record["first_search_seconds"] = result.data["search_seconds"]
    if judge(check, plan, result):
        check.detail = (
            f"first search_runs over the seeded experiments on MLflow {version}: "
            f"{record['first_search_seconds']:.2f} s ({result.data['search_count']} runs); "  # type: ignore[index]
            f"sample of {len(plan.sample_runs())} runs intact"
        )


def record_watch(record: dict[str, Any], phase: str, seen: Watch) -> None:
    record.setdefault("sizes", {})[phase] = dict(seen.sizes)
    record.setdefault("locks", {})[phase] = seen.locks
