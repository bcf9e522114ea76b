"""The backends: where a tracking server keeps its data. One module per backend, found by looking.

Every public module of this package (file, sqlite, postgres, mysql, mssql, ...) declares one
`BACKEND = Backend(...)` named after the module; the registry below imports them all (pkgutil), so a new
backend is one new file here (plus its test and its place in harness/data/matrix.toml), never an edit
elsewhere. Modules whose names start with an underscore are the shared parts: `_base` (the descriptor and
the SQL product's shape), `_stores` (the store protocol). What lives here: stores, products, the registry
and `new_store`. What does not: a running database server (harness.databases), containers
(harness.runtime.docker), options (harness.options, which reads the descriptors).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path

from harness.backends._base import DatabaseError, SqlProduct
from harness.backends._descriptor import Backend
from harness.backends._stores import DatabaseHandle, DatabaseStore, Store, StoreError, database_name
from harness.backends.file import FileStore
from harness.backends.sqlite import SqliteStore


def _discover() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        backend = getattr(importlib.import_module(f"{__name__}.{module.name}"), "BACKEND", None)
        if not isinstance(backend, Backend) or backend.name != module.name:
            raise TypeError(
                f"harness/backends/{module.name}.py must declare BACKEND = Backend({module.name!r})"
            )
        found[backend.name] = backend
    return dict(sorted(found.items(), key=lambda item: item[1].order))


BACKENDS: dict[str, Backend] = _discover()  # name -> descriptor, in report order
DATABASE_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.product is not None)
SERVER_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.has_server)


def backend_names() -> list[str]:
    return list(BACKENDS)


def backend_order() -> list[str]:
    """The report's column order."""
    return list(BACKENDS)


def product(backend: str) -> SqlProduct:
    """The SQL product of a database backend (KeyError for an unknown one, ValueError for file/sqlite)."""
    found = BACKENDS[backend].product
    if found is None:
        raise ValueError(f"{backend} has no database server")
    return found


def new_store(
    backend: str,
    workdir: Path,
    *,
    servers: Mapping[str, DatabaseHandle],
    run_id: str,
    cell_slug: str,
    unavailable: Mapping[str, str] | None = None,
) -> Store:
    """A fresh store of ``backend`` in ``workdir`` (for a SQL backend, a new database on ``servers``'s)."""
    cls = BACKENDS[backend].store
    if issubclass(cls, DatabaseStore):
        if backend not in servers:
            why = (unavailable or {}).get(backend, "none was configured")
            raise StoreError(f"no {backend} server for this run: {why}")
        store: Store = cls(workdir, server=servers[backend], database=database_name(run_id, cell_slug))
    else:
        store = cls(workdir)
    store.create()
    return store


__all__ = [
    "BACKENDS",
    "DATABASE_BACKENDS",
    "SERVER_BACKENDS",
    "Backend",
    "DatabaseError",
    "DatabaseStore",
    "FileStore",
    "SqlProduct",
    "SqliteStore",
    "Store",
    "StoreError",
    "backend_names",
    "backend_order",
    "database_name",
    "new_store",
    "product",
]
