"""Proof that a migration kept every row: snapshots of the tracking tables, compared across an upgrade.

Before `mlflow db upgrade` and after it, every tracking table that exists is read in full. Each row
that existed before must exist after (matched on the primary key it had before) with the same value in
every column it had before. Only what migrations are documented to do is allowed: new tables, new
columns, new rows, and converted types (values are compared after normalising numbers, booleans and
timestamps). A lost or changed row is named with its table and key.

The GenAI tables are covered too, wherever a version's schema has them: traces (trace_info, trace_tags,
trace_request_metadata, trace_metrics, spans, span_metrics), assessments, logged models (and their params,
tags and metrics) and entity_associations (what 3.x links prompts to); prompts themselves are registered
models and model versions, covered with the registry. One migration moves rows instead of keeping them:
75868b020152 (3.17's "add sql trace analytics schema") deletes the trace tag `mlflow.traceName`, the trace
metadata `mlflow.trace.session`, `mlflow.trace.tokenUsage` and `mlflow.trace.cost`, the token-count rows of
trace_metrics and the cost rows of span_metrics, after copying their values into new columns of trace_info
and spans. Such a row counts as kept only when the upgrade added the column it was moved to and that column
now holds exactly the row's value (every field of a JSON value; a value the migration truncated or could not
parse is a difference); each one is named in the report as moved. What does not live here: when snapshots
are taken (harness/cell.py).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

TRACKING_TABLES = (
    "experiments",
    "runs",
    "params",
    "metrics",
    "latest_metrics",
    "tags",
    "experiment_tags",
    "registered_models",
    "model_versions",
    "registered_model_tags",
    "model_version_tags",
    "registered_model_aliases",
    "datasets",
    "inputs",
    "input_tags",
    # GenAI: traces (2.14+), logged models (3.0+), assessments and spans (3.2+), later trace/span metrics.
    "trace_info",
    "trace_tags",
    "trace_request_metadata",
    "trace_metrics",
    "spans",
    "span_metrics",
    "assessments",
    "logged_models",
    "logged_model_params",
    "logged_model_tags",
    "logged_model_metrics",
    "entity_associations",
)

Key = tuple[Any, ...]


@dataclass
class Table:
    columns: list[str]
    key: list[str]
    rows: dict[Key, dict[str, Any]]


@dataclass
class Snapshot:
    revision: str | None
    tables: dict[str, Table] = field(default_factory=dict)

    def row_count(self) -> int:
        return sum(len(t.rows) for t in self.tables.values())


def normalise(value: Any) -> Any:
    """One representation per value, whatever column type a migration converted it to."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal | float):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def snapshot(url: str | sa.URL) -> Snapshot:
    """The tracking tables at ``url`` (those of TRACKING_TABLES that exist), read in full; the revision."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            present = set(sa.inspect(con).get_table_names())
            revision = read_revision(con, present)
            return Snapshot(revision, read_tables(con, [t for t in TRACKING_TABLES if t in present]))
    finally:
        engine.dispose()


def read_revision(con: sa.Connection, present: set[str] | list[str]) -> str | None:
    """The tracking schema's alembic revision (None before there is one); ``present``: the tables there."""
    if "alembic_version" not in present:
        return None
    return con.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def read_tables(con: sa.Connection, names: list[str]) -> dict[str, Table]:
    """Each of ``names`` read in full, keyed by its primary key (every column, where it has none), each value
    normalised: what `compare` compares. Also for other databases than the tracking store (the auth app's)."""
    inspector = sa.inspect(con)
    tables = {}
    for name in names:
        columns = [c["name"] for c in inspector.get_columns(name)]
        key = inspector.get_pk_constraint(name).get("constrained_columns") or columns
        table = sa.table(name, *[sa.column(c) for c in columns])
        rows = {}
        for row in con.execute(sa.select(table)).mappings():
            values = {c: normalise(row[c]) for c in columns}
            rows[tuple(values[k] for k in key)] = values
        tables[name] = Table(columns, list(key), rows)
    return tables


TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                 "cache_creation_input_tokens", "cache_creation_input_tokens_above_1hr")  # fmt: skip
COST_COLUMNS = ("input_cost", "output_cost", "total_cost")


def _as_int(value: Any) -> int | None:
    try:
        number = decimal.Decimal(str(value))
    except (decimal.InvalidOperation, TypeError, ValueError):
        return None
    return int(number) if number.is_finite() and number == number.to_integral_value() else None


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _json_fields(columns: tuple[str, ...], convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON object whose every field is one of ``columns``: {column: converted value}; anything else (an
    unknown field, a value that does not convert, no JSON object) is None, i.e. not movable."""

    def fields(value: Any) -> dict[str, Any] | None:
        try:
            data = json.loads(value)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict) or not set(data) <= set(columns):
            return None
        out = {k: convert(v) for k, v in data.items()}
        return None if any(v is None for v in out.values()) else out

    return fields


def _one(column: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def fields(value: Any) -> dict[str, Any] | None:
        converted = convert(value)
        return None if converted is None else {column: converted}

    return fields


# Rows migration 75868b020152 moves into columns: (table, key) -> (target table, {row column: target column}
# to find the target row, the row's value as {target column: value}). The key "*" is any of the columns.
_MOVES: dict[tuple[str, str], tuple[str, dict[str, str], Callable[[Any], Any]]] = {
    ("trace_tags", "mlflow.traceName"): ("trace_info", {"request_id": "request_id"}, _one("trace_name", str)),
    ("trace_request_metadata", "mlflow.trace.session"): (
        "trace_info", {"request_id": "request_id"}, _one("session_id", str)),
    ("trace_request_metadata", "mlflow.trace.tokenUsage"): (
        "trace_info", {"request_id": "request_id"}, _json_fields(TOKEN_COLUMNS, _as_int)),
    ("trace_request_metadata", "mlflow.trace.cost"): (
        "trace_info", {"request_id": "request_id"}, _json_fields(COST_COLUMNS, _as_float)),
    **{("trace_metrics", c): ("trace_info", {"request_id": "request_id"}, _one(c, _as_int))
       for c in TOKEN_COLUMNS},
    **{("span_metrics", c): ("spans", {"trace_id": "trace_id", "span_id": "span_id"}, _one(c, _as_float))
       for c in COST_COLUMNS},
}  # fmt: skip


def _moved(name: str, row: dict[str, Any], before: Snapshot, after: Snapshot) -> str | None:
    """Why a row missing after the upgrade was in fact moved into new columns (verified), or None."""
    move = _MOVES.get((name, str(row.get("key"))))
    if move is None:
        return None
    target, match, fields = move
    old, new = before.tables.get(target), after.tables.get(target)
    values = fields(row.get("value"))
    if new is None or values is None:
        return None
    if old is not None and any(c in old.columns for c in values):
        return None  # the column was there before: this upgrade did not move the row, it lost it
    found = [r for r in new.rows.values() if all(r.get(t) == row.get(s) for s, t in match.items())]
    if len(found) != 1:
        return None
    for column, value in values.items():
        held = found[0].get(column)
        if column not in new.columns or held is None or normalise(held) != normalise(value):
            return None
    return f"{target}.{'/'.join(sorted(values))}"


@dataclass
class IntegrityReport:
    differences: list[str]
    rows_before: int
    new_tables: list[str]
    new_columns: list[str]
    moved: list[str] = field(default_factory=list)
    dropped_empty: list[str] = field(default_factory=list)  # columns dropped that held no value in any row

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        if not self.ok:
            more = f" (+{len(self.differences) - 3} more)" if len(self.differences) > 3 else ""
            return f"{len(self.differences)} row difference(s): " + "; ".join(self.differences[:3]) + more
        added = []
        if self.new_tables:
            added.append(f"new tables {', '.join(self.new_tables)}")
        if self.new_columns:
            added.append(f"new columns {', '.join(self.new_columns)}")
        if self.dropped_empty:
            added.append(f"dropped columns that held no value: {', '.join(self.dropped_empty)}")
        kept = f"all {self.rows_before} rows kept"
        if self.moved:
            kept += f" ({len(self.moved)} moved into new columns, each verified: {', '.join(self.moved[:3])}"
            kept += f" (+{len(self.moved) - 3} more))" if len(self.moved) > 3 else ")"
        return kept + (f"; {'; '.join(added)}" if added else "")


def _key_text(key: list[str], values: Key) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in zip(key, values, strict=True))


def compare(before: Snapshot, after: Snapshot) -> IntegrityReport:
    diffs: list[str] = []
    new_columns: list[str] = []
    moved: list[str] = []
    dropped_empty: list[str] = []
    for name, old in before.tables.items():
        new = after.tables.get(name)
        if new is None:
            if old.rows:
                diffs.append(f"table {name} with {len(old.rows)} rows is gone")
            continue
        new_columns += [f"{name}.{c}" for c in new.columns if c not in old.columns]
        # A dropped column loses data only where a row held a value in it (a table that had no rows, or only
        # NULLs there, loses nothing; said in the summary all the same).
        for c in (c for c in old.columns if c not in new.columns):
            held = sum(row[c] is not None for row in old.rows.values())
            if held:
                diffs.append(f"{name}.{c}: column dropped, with the values of {held} row(s)")
            else:
                dropped_empty.append(f"{name}.{c}")
        kept = [c for c in old.columns if c in new.columns]
        if not all(k in new.columns for k in old.key):
            diffs.append(f"{name}: key columns {old.key} no longer exist; rows cannot be matched")
            continue
        by_old_key = {tuple(row[k] for k in old.key): row for row in new.rows.values()}
        for key, row in old.rows.items():
            where = f"{name} row ({_key_text(old.key, key)})"
            match = by_old_key.get(key)
            if match is None:
                into = _moved(name, row, before, after)
                if into is None:
                    diffs.append(f"{where} missing after the upgrade")
                else:
                    moved.append(f"{where} -> {into}")
                continue
            for column in kept:
                if row[column] != match[column]:
                    diffs.append(f"{where}: {column} {row[column]!r} -> {match[column]!r}")
    new_tables = sorted(set(after.tables) - set(before.tables))
    return IntegrityReport(diffs, before.row_count(), new_tables, new_columns, moved, dropped_empty)
