"""Proof that a migration kept every row: snapshots of the tracking tables, compared across an upgrade.

Before `mlflow db upgrade` and after it, every tracking table that exists is read in full. Each row
that existed before must exist after (matched on the primary key it had before) with the same value in
every column it had before. Only what migrations are documented to do is allowed: new tables, new
columns, new rows, and converted types (values are compared after normalising numbers, booleans and
timestamps). A lost or changed row is named with its table and key.
"""

from __future__ import annotations

import datetime as dt
import decimal
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
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            inspector = sa.inspect(con)
            present = set(inspector.get_table_names())
            revision = None
            if "alembic_version" in present:
                revision = con.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            snap = Snapshot(revision)
            for name in TRACKING_TABLES:
                if name not in present:
                    continue
                columns = [c["name"] for c in inspector.get_columns(name)]
                key = inspector.get_pk_constraint(name).get("constrained_columns") or columns
                table = sa.table(name, *[sa.column(c) for c in columns])
                rows = {}
                for row in con.execute(sa.select(table)).mappings():
                    values = {c: normalise(row[c]) for c in columns}
                    rows[tuple(values[k] for k in key)] = values
                snap.tables[name] = Table(columns, list(key), rows)
            return snap
    finally:
        engine.dispose()


@dataclass
class IntegrityReport:
    differences: list[str]
    rows_before: int
    new_tables: list[str]
    new_columns: list[str]

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
        return f"all {self.rows_before} rows kept" + (f"; {'; '.join(added)}" if added else "")


def _key_text(key: list[str], values: Key) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in zip(key, values, strict=True))


def compare(before: Snapshot, after: Snapshot) -> IntegrityReport:
    diffs: list[str] = []
    new_columns: list[str] = []
    for name, old in before.tables.items():
        new = after.tables.get(name)
        if new is None:
            if old.rows:
                diffs.append(f"table {name} with {len(old.rows)} rows is gone")
            continue
        new_columns += [f"{name}.{c}" for c in new.columns if c not in old.columns]
        dropped = [c for c in old.columns if c not in new.columns]
        diffs += [f"{name}.{c}: column dropped" for c in dropped]
        kept = [c for c in old.columns if c in new.columns]
        if not all(k in new.columns for k in old.key):
            diffs.append(f"{name}: key columns {old.key} no longer exist; rows cannot be matched")
            continue
        by_old_key = {tuple(row[k] for k in old.key): row for row in new.rows.values()}
        for key, row in old.rows.items():
            where = f"{name} row ({_key_text(old.key, key)})"
            match = by_old_key.get(key)
            if match is None:
                diffs.append(f"{where} missing after the upgrade")
                continue
            for column in kept:
                if row[column] != match[column]:
                    diffs.append(f"{where}: {column} {row[column]!r} -> {match[column]!r}")
    new_tables = sorted(set(after.tables) - set(before.tables))
    return IntegrityReport(diffs, before.row_count(), new_tables, new_columns)
