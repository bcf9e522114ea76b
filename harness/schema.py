"""Schema drift: an upgraded store's schema against a fresh install of the same MLflow version.

`reflect(url)` reads a store's schema with SQLAlchemy's inspector, in the harness's own process, into a
`Shape` (JSON, cached on disk): every table, its columns (the type as the dialect reports it, nullability,
server default), primary key, indexes (name, columns in order, uniqueness), unique constraints, foreign keys
(columns, referred table and columns, on-delete) and check constraints (name, normalised text), and the
alembic revision. `differences(upgraded, fresh)` names each difference on one line.

How constraints are matched: both shapes always come from the same product and version (the reference is
made on the cell's own database server), so names are compared as they are. An index or constraint pairs
first with its exact twin (same name, same content); then one of the same name (its content differs: named
as changed); then one of the same content under another name (named as a name difference: the "constraints
named differently per dialect" a user trips on when a later migration drops one by name); what is left is
missing on one side. Unnamed constraints (SQLite's) have no name to pair on, so they pair on content only.
Indexes that only back a unique constraint (PostgreSQL and MySQL report both) are left to the constraint.

`References` makes the fresh reference: the TO version's own server started on an empty store of the same
backend and product version (how a fresh install is made), reflected, stopped; cached per (TO env, backend,
product and version, runtime) under the cache root's ``schemas/``, built under a file lock so that parallel
workers never build one twice. `check_drift` is the `schema-drift` step's body (harness/cell.py calls it).
What does not live here: when the step runs (harness/cell.py), the rows' integrity (harness/integrity.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from filelock import FileLock

from harness import owner
from harness.backends import DatabaseHandle, Store, StoreError, new_store
from harness.envs import Env
from harness.integrity import read_revision
from harness.paths import cache_root
from harness.results import Check, Status
from harness.server import ServerStartError

FORMAT = 4  # bump when Shape's layout or what reflect() records changes: older cached references are ignored
LOCK_TIMEOUT_S = 1800.0
# A store that changes backend on its upgrade is compared with a fresh store of the backend it became.
REFERENCE_BACKEND = {"file_to_sqlite": "sqlite"}


class SchemaError(RuntimeError):
    """A schema that cannot be read, or a reference that cannot be made for the machine's reasons (error)."""


class ReferenceRefused(RuntimeError):
    """The TO server would not make a fresh store: MLflow's own behaviour (fail)."""

    def __init__(self, message: str, excerpt: str = "") -> None:
        super().__init__(message)
        self.excerpt = excerpt


# -- reflecting ----------------------------------------------------------------------------------------
@dataclass
class Shape:
    """A store's schema as data: ``tables`` maps each table to its columns, primary_key, indexes, uniques,
    foreign_keys and checks (JSON-able, sorted, so that equal schemas are equal shapes)."""

    dialect: str
    revision: str | None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def index_count(self) -> int:
        return sum(len(t["indexes"]) for t in self.tables.values())

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "dialect": self.dialect, "revision": self.revision, "tables": self.tables}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shape:
        if data.get("format") != FORMAT:
            raise ValueError(f"shape format {data.get('format')!r}, expected {FORMAT}")
        return cls(data["dialect"], data["revision"], dict(data["tables"]))


def _text(value: Any) -> str | None:
    """SQL text (a server default, a check's condition), its whitespace squeezed: stable, not rewritten."""
    if value is None:
        return None
    return " ".join(str(value).split())


# PostgreSQL deparses `col IN ('a', 'b')` on a VARCHAR column as `ARRAY['a'::character varying, ...]::text[]`,
# and the same constraint re-created from that text (a pg_dump restored, as every cell does after its
# un-upgraded start) as `ARRAY['a'::character varying::text, ...]`: one meaning, two texts. Both become
# `ARRAY['a'::character varying, ...]` (tests/test_schema_drift.py shows the round trip).
_PG_ELEMENT_CAST = re.compile(r"('(?:[^']|'')*'::character varying)::text\b")
_PG_ARRAY_CAST = re.compile(r"(ARRAY\[[^\[\]]*\])::text\[\]")


def _check_text(dialect: str, text: Any) -> str | None:
    squeezed = _text(text)
    if squeezed is None or dialect != "postgresql":
        return squeezed
    return _PG_ARRAY_CAST.sub(r"\1", _PG_ELEMENT_CAST.sub(r"\1", squeezed))


def _type(column: Mapping[str, Any], dialect: sa.Dialect) -> str:
    try:
        return str(column["type"].compile(dialect=dialect))
    except sa.exc.SQLAlchemyError:  # a type the dialect reflects but cannot render: its repr is stable
        return repr(column["type"])


def _index_columns(index: Mapping[str, Any]) -> list[str]:
    names = list(index.get("column_names") or [])
    expressions = list(index.get("expressions") or [])
    cols = [n if n is not None else f"({expressions[i] if i < len(expressions) else '?'})"
            for i, n in enumerate(names)]  # fmt: skip
    sorting = index.get("column_sorting") or {}
    return [f"{c} {' '.join(sorting[c])}" if c in sorting else c for c in cols]


def _sqlite_on_delete(con: sa.Connection, table: str) -> dict[tuple[str, ...], str]:
    """SQLite's own word on each foreign key's ON DELETE, by its columns: SQLAlchemy's reflection reads it
    from the DDL's table-level FOREIGN KEY clauses only, and misses it on a column's inline REFERENCES."""
    rows = con.exec_driver_sql(f'PRAGMA foreign_key_list("{table}")').mappings().all()
    by_id: dict[int, list[Any]] = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    return {
        tuple(r["from"] for r in sorted(fk, key=lambda r: r["seq"])): fk[0]["on_delete"]
        for fk in by_id.values()
    }


def _on_delete(fk: Mapping[str, Any], pragma: Mapping[tuple[str, ...], str]) -> str | None:
    action = pragma.get(tuple(fk["constrained_columns"])) or (fk.get("options") or {}).get("ondelete") or ""
    action = action.upper()
    return None if action in ("", "NO ACTION") else action


def _options(index: Mapping[str, Any]) -> dict[str, Any]:
    """What the dialect reflects of an index beyond its columns, where it is not the default (PostgreSQL's
    WHERE of a partial index, its access method; MySQL's prefix lengths): nothing at all for most indexes."""
    options = {}
    for key, value in sorted((index.get("dialect_options") or {}).items()):
        if value is None or (isinstance(value, list | tuple | dict) and not value):
            continue  # PostgreSQL reports an index without INCLUDE columns as postgresql_include=[]
        plain = isinstance(value, list | tuple | dict)
        options[key] = _text(json.dumps(value, sort_keys=True, default=str) if plain else value)
    return {"options": options} if options else {}


def _table(inspector: sa.Inspector, name: str, dialect: sa.Dialect) -> dict[str, Any]:
    con = inspector.bind
    pragma = (
        _sqlite_on_delete(con, name) if dialect.name == "sqlite" and isinstance(con, sa.Connection) else {}
    )
    columns = {
        c["name"]: {
            "type": _type(c, dialect),
            "nullable": bool(c["nullable"]),
            "default": _text(c.get("default")),
        }
        for c in inspector.get_columns(name)
    }
    pk = inspector.get_pk_constraint(name)
    uniques = [{"name": u.get("name"), "columns": list(u["column_names"])}
               for u in inspector.get_unique_constraints(name)]  # fmt: skip
    backing = {u["name"] for u in uniques if u["name"]}
    indexes = [
        {"name": i.get("name"), "columns": _index_columns(i), "unique": bool(i.get("unique")), **_options(i)}
        for i in inspector.get_indexes(name)
        if not i.get("duplicates_constraint") and i.get("name") not in backing
    ]
    fks = [
        {
            "name": f.get("name"),
            "columns": list(f["constrained_columns"]),
            "referred_table": f["referred_table"],
            "referred_columns": list(f["referred_columns"]),
            "ondelete": _on_delete(f, pragma),
        }
        for f in inspector.get_foreign_keys(name)
    ]
    try:
        checks = [
            {"name": c.get("name"), "sqltext": _check_text(dialect.name, c["sqltext"])}
            for c in inspector.get_check_constraints(name)
        ]
    except NotImplementedError:  # a dialect that cannot reflect them: none on either side
        checks = []
    key = lambda item: json.dumps(item, sort_keys=True)  # noqa: E731 - a stable order for equal shapes
    return {
        "columns": columns,
        "primary_key": {"name": pk.get("name"), "columns": list(pk.get("constrained_columns") or [])},
        "indexes": sorted(indexes, key=key),
        "uniques": sorted(uniques, key=key),
        "foreign_keys": sorted(fks, key=key),
        "checks": sorted(checks, key=key),
    }


def reflect(url: str | sa.URL) -> Shape:
    """Every table of the store at ``url`` and its alembic revision, as a Shape. Raises SchemaError."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            inspector = sa.inspect(con)
            names = sorted(inspector.get_table_names())
            tables = {name: _table(inspector, name, engine.dialect) for name in names}
            return Shape(engine.dialect.name, read_revision(con, names), tables)
    except sa.exc.SQLAlchemyError as exc:
        raise SchemaError(f"cannot reflect the schema: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()


# -- comparing -----------------------------------------------------------------------------------------
def _describe(kind: str, item: Mapping[str, Any]) -> str:
    """What an index or constraint is, without its name: "unique (a, b)", "(run_uuid) -> runs(run_uuid)"."""
    if kind == "check constraint":
        return f"CHECK {item['sqltext']}"
    cols = f"({', '.join(item['columns'])})"
    if kind == "index":
        options = "".join(f" {k}={v}" for k, v in item.get("options", {}).items())
        return f"{'unique ' if item['unique'] else ''}{cols}{options}"
    if kind == "foreign key":
        target = f"{item['referred_table']}({', '.join(item['referred_columns'])})"
        return f"{cols} -> {target}" + (f" ON DELETE {item['ondelete']}" if item["ondelete"] else "")
    return cols


# What makes two unnamed constraints the same one whose details changed (an unnamed check has nothing else).
_IDENTITY = {"index": ("columns",), "unique constraint": ("columns",),
             "foreign key": ("columns", "referred_table"), "check constraint": ()}  # fmt: skip


def _pair(kind: str, table: str, upgraded: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[str]:
    """Pair the indexes or constraints of one table (module docstring: exact twin, same name, same content;
    unnamed ones by what they are on); one line per difference."""
    ups, frs = list(upgraded), list(fresh)
    out: list[str] = []

    def take(match: Callable[[dict[str, Any], dict[str, Any]], bool]) -> list[tuple[dict[str, Any], ...]]:
        pairs = []
        for u in list(ups):
            twin = next((f for f in frs if match(u, f)), None)
            if twin is not None:
                ups.remove(u)
                frs.remove(twin)
                pairs.append((u, twin))
        return pairs

    def content(item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k != "name"}

    take(lambda u, f: u == f)
    for u, f in take(lambda u, f: u["name"] is not None and u["name"] == f["name"]):
        out.append(f"{kind} {u['name']} on {table} is {_describe(kind, u)} after the upgrade "
                   f"({_describe(kind, f)} in a fresh install)")  # fmt: skip
    for u, f in take(lambda u, f: content(u) == content(f)):
        named, fresh_named = u["name"] or "(unnamed)", f["name"] or "(unnamed)"
        out.append(f"{kind} {_describe(kind, u)} on {table} is named {named} after the upgrade "
                   f"({fresh_named} in a fresh install)")  # fmt: skip
    same = _IDENTITY[kind]
    unnamed = lambda u, f: u["name"] is None and f["name"] is None  # noqa: E731
    for u, f in take(lambda u, f: bool(same) and unnamed(u, f) and all(u[k] == f[k] for k in same)):
        out.append(f"{kind} {_describe(kind, u)} on {table} after the upgrade ({_describe(kind, f)} in a "
                   "fresh install)")  # fmt: skip
    out += [f"{kind} {_label(kind, f)} missing on {table} (fresh has it)" for f in frs]
    out += [f"{kind} {_label(kind, u)} on {table} only in the upgraded store" for u in ups]
    return out


def _label(kind: str, item: Mapping[str, Any]) -> str:
    """An index or constraint as a line names it: by its name (a check also by its condition, since the names
    products make up for them, MariaDB's CONSTRAINT_2, say little), else by what it is."""
    if not item["name"]:
        return _describe(kind, item)
    return f"{item['name']} ({_describe(kind, item)})" if kind == "check constraint" else str(item["name"])


def _columns(table: str, upgraded: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    out = [f"column {table}.{c} missing after the upgrade (fresh has it)" for c in fresh if c not in upgraded]
    out += [f"column {table}.{c} only in the upgraded store" for c in upgraded if c not in fresh]
    for c in (c for c in fresh if c in upgraded):
        u, f = upgraded[c], fresh[c]
        if u["type"] != f["type"]:
            out.append(
                f"column {table}.{c} is {u['type']} after the upgrade ({f['type']} in a fresh install)"
            )
        if u["nullable"] != f["nullable"]:
            null = lambda n: "nullable" if n else "NOT NULL"  # noqa: E731
            out.append(f"column {table}.{c} {null(u['nullable'])} after the upgrade "
                       f"({null(f['nullable'])} in a fresh install)")  # fmt: skip
        if u["default"] != f["default"]:
            out.append(f"column {table}.{c} default {u['default'] or '(none)'} after the upgrade "
                       f"({f['default'] or '(none)'} in a fresh install)")  # fmt: skip
    return out


def differences(upgraded: Shape, fresh: Shape) -> list[str]:
    """Each way ``upgraded`` differs from ``fresh``, one line each, naming exactly what differs."""
    out = []
    if upgraded.revision != fresh.revision:
        out.append(
            f"alembic revision {upgraded.revision} after the upgrade ({fresh.revision} in a fresh install)"
        )
    out += [
        f"table {t} missing after the upgrade (fresh has it)"
        for t in fresh.tables
        if t not in upgraded.tables
    ]
    out += [f"table {t} only in the upgraded store" for t in upgraded.tables if t not in fresh.tables]
    for name in (t for t in fresh.tables if t in upgraded.tables):
        u, f = upgraded.tables[name], fresh.tables[name]
        out += _columns(name, u["columns"], f["columns"])
        if u["primary_key"] != f["primary_key"]:
            out.append(f"primary key of {name} is {_pk(u['primary_key'])} after the upgrade "
                       f"({_pk(f['primary_key'])} in a fresh install)")  # fmt: skip
        for kind, key in (("index", "indexes"), ("unique constraint", "uniques"),
                          ("foreign key", "foreign_keys"), ("check constraint", "checks")):  # fmt: skip
            out += _pair(kind, name, u[key], f[key])
    return out


def _pk(pk: Mapping[str, Any]) -> str:
    return f"{pk['name'] or '(unnamed)'} ({', '.join(pk['columns'])})"


# -- the fresh reference -------------------------------------------------------------------------------
def product_label(store: Store) -> tuple[str, str]:
    """(product, version) of what holds a store of the reference's backend, e.g. ("PostgreSQL", "15.10")."""
    if REFERENCE_BACKEND.get(store.backend) == "sqlite" or store.backend == "sqlite":
        return "SQLite", sqlite3.sqlite_version
    desc = store.describe()
    m = re.search(r"\d+(?:\.\d+)+", desc.get("version", ""))
    return desc.get("product", store.backend), m.group(0) if m else desc.get("version", "")


@dataclass
class References:
    """Fresh reference schemas, made by starting the TO server on an empty store and cached on disk.

    ``start``: the runtime's start_server (harness/runtime); ``databases`` etc.: what a new store needs on the
    run's database servers (as harness.backends.new_store takes them)."""

    start: Callable[..., Any]
    runtime_name: str
    databases: Mapping[str, DatabaseHandle]
    run_id: str
    work_root: Path | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)
    root: Path | None = None  # the cache directory (default: the cache root's schemas/)
    made_seconds: float | None = field(default=None, init=False)  # how long the last cold build took

    def path(self, env: Env, store: Store) -> Path:
        backend = REFERENCE_BACKEND.get(store.backend, store.backend)
        product, version = product_label(store)
        material = json.dumps({"format": FORMAT, "env": env.path.name, "backend": backend, "product": product,
                               "version": version, "runtime": self.runtime_name}, sort_keys=True)  # fmt: skip
        digest = hashlib.sha256(material.encode()).hexdigest()[:16]
        root = self.root or cache_root() / "schemas"
        root.mkdir(parents=True, exist_ok=True)
        return root / f"{env.version}-{backend}-{digest}.json"

    def get(self, env: Env, store: Store, slug: str, log: Path) -> Shape:
        """The reference for ``env`` on ``store``'s backend and product: from the cache, else made now."""
        path = self.path(env, store)
        self.made_seconds = None
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            if path.exists():
                try:
                    return Shape.from_json(json.loads(path.read_text()))
                except (ValueError, KeyError, TypeError):
                    path.unlink()  # unreadable or of an older format: made again below
            started = time.monotonic()
            shape = self.make(env, REFERENCE_BACKEND.get(store.backend, store.backend), slug, log)
            self.made_seconds = round(time.monotonic() - started, 2)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(shape.to_json(), indent=1, sort_keys=True))
            tmp.replace(path)
            return shape

    def make(self, env: Env, backend: str, slug: str, log: Path) -> Shape:
        """Start ``env``'s server on an empty store of ``backend`` (it creates its schema, as on a fresh
        install), stop it, reflect the store."""
        with self.empty_store(backend, slug) as store:
            try:
                server = self.start(env, store, log, ())
            except ServerStartError as exc:
                if exc.is_infrastructure:
                    raise SchemaError(f"the reference server did not start: {exc}") from exc
                raise ReferenceRefused(f"MLflow {env.version} would not start on an empty store: {exc}",
                                       exc.excerpt) from exc  # fmt: skip
            server.stop()
            if store.sqlalchemy_url is None or store.schema_revision() is None:
                raise ReferenceRefused(
                    f"MLflow {env.version} started on an empty store but created no schema"
                )
            return reflect(store.sqlalchemy_url)

    @contextmanager
    def empty_store(self, backend: str, slug: str) -> Iterator[Store]:
        workdir = owner.mkdtemp(f"mlflow-compat-{slug}-", self.work_root)
        try:
            store = new_store(backend, workdir, servers=self.databases, run_id=self.run_id, cell_slug=slug,
                              unavailable=self.unavailable)  # fmt: skip
        except StoreError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise SchemaError(f"no store for the reference: {exc}") from exc
        try:
            yield store
        finally:
            try:
                store.close()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)


# -- the check -----------------------------------------------------------------------------------------
def check_drift(
    check: Check, store: Store, env: Env, refs: References, *, slug: str, log: Path, log_rel: str
) -> None:
    """The `schema-drift` step: ``store`` (just upgraded by ``env``'s MLflow) against a fresh install of it.
    A schema that cannot be read, or a reference the machine kept from being made, is `error`; a TO server
    that would not make a fresh store, or any difference, is `fail`."""
    url = store.sqlalchemy_url
    try:
        if url is None:
            raise SchemaError("the store has no database to reflect")
        upgraded = reflect(url)
        fresh = refs.get(env, store, slug, log)
    except (SchemaError, StoreError) as exc:
        check.status, check.detail = Status.ERROR, str(exc)
        check.logs = [log_rel] if log.exists() else []
        return
    except ReferenceRefused as exc:
        check.status, check.detail, check.excerpt = Status.FAIL, str(exc), exc.excerpt
        check.logs = [log_rel] if log.exists() else []
        return
    product, version = product_label(store)
    made = f"; reference made in {refs.made_seconds:.1f}s" if refs.made_seconds is not None else ""
    found = differences(upgraded, fresh)
    if not found:
        check.detail = (f"same as a fresh {env.version} install on {product} {version} ({len(fresh.tables)} "
                        f"tables, {fresh.index_count()} indexes){made}")  # fmt: skip
        return
    check.detail = (f"{len(found)} difference(s) from a fresh {env.version} install on {product} {version}: "
                    f"{'; '.join(found)}{made}")  # fmt: skip
    check.fail_each(found)
