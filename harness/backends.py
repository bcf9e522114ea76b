"""Backend stores: where a tracking server keeps its data, and how an operator backs it up.

Each cell gets a fresh ``Store``: a directory of its own (file, SQLite) or a database of its own on
the run's database server (postgres, mysql), so parallel cells never share state. A store knows the
URI its tracking server gets, its artifact directory (the server's proxied artifact destination, part of
what is backed up), how to back itself up and restore as an operator would, and its schema revision.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from abc import ABC, abstractmethod
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import sqlalchemy as sa

from harness.databases import DatabaseError, DatabaseServer


class StoreError(RuntimeError):
    """The store itself misbehaved (infrastructure): a backup or restore could not be made."""


@dataclass
class Store(ABC):
    backend: ClassVar[str]
    has_schema: ClassVar[bool]
    workdir: Path

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def uri(self) -> str:
        """The --backend-store-uri a server on this machine gets."""
        return self.uri_at(self.workdir)

    @abstractmethod
    def uri_at(self, mount: Path) -> str:
        """The store URI for a server that sees the workdir at ``mount`` (a container's bind mount)."""

    @abstractmethod
    def _backup_data(self, dest: Path) -> None: ...

    @abstractmethod
    def _restore_data(self, src: Path) -> None: ...

    def create(self) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)

    @property
    def sqlalchemy_url(self) -> str | sa.URL | None:
        """Where the tracking tables can be read (None for the file store)."""
        return None

    def schema_revision(self) -> str | None:
        """The alembic revision of the tracking schema; None without a schema (or before one exists)."""
        url = self.sqlalchemy_url
        if url is None:
            return None
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as con:
                if not sa.inspect(con).has_table("alembic_version"):
                    return None
                return con.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot read the schema revision: {exc}") from exc
        finally:
            engine.dispose()

    def describe(self) -> dict[str, str]:
        """Product and version of what holds the data, for the report."""
        return {"product": self.backend}

    def backup(self, name: str) -> Path:
        dest = self.workdir / "backups" / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        try:
            self._backup_data(dest)
            if self.artifacts_dir.exists():
                shutil.copytree(self.artifacts_dir, dest / "artifacts")
        except (OSError, sqlite3.Error, DatabaseError) as exc:
            raise StoreError(f"backup {name} failed: {exc}") from exc
        return dest

    def restore(self, src: Path) -> None:
        try:
            self._restore_data(src)
            shutil.rmtree(self.artifacts_dir, ignore_errors=True)
            if (src / "artifacts").exists():
                shutil.copytree(src / "artifacts", self.artifacts_dir)
        except (OSError, sqlite3.Error, DatabaseError) as exc:
            raise StoreError(f"restore from {src.name} failed: {exc}") from exc

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for stores that live in their workdir
        """Release what the store holds outside its workdir (databases); the workdir goes with the cell."""


@dataclass
class FileStore(Store):
    backend: ClassVar[str] = "file"
    has_schema: ClassVar[bool] = False

    @property
    def root(self) -> Path:
        return self.workdir / "mlruns"

    def uri_at(self, mount: Path) -> str:
        return (mount / "mlruns").as_uri()

    def create(self) -> None:
        super().create()
        self.root.mkdir(parents=True, exist_ok=True)

    def _backup_data(self, dest: Path) -> None:
        shutil.copytree(self.root, dest / "mlruns")

    def _restore_data(self, src: Path) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(src / "mlruns", self.root)

    def describe(self) -> dict[str, str]:
        return {"product": "file store (mlruns directory)"}


@dataclass
class SqliteStore(Store):
    backend: ClassVar[str] = "sqlite"
    has_schema: ClassVar[bool] = True

    @property
    def db_path(self) -> Path:
        return self.workdir / "mlflow.db"

    def uri_at(self, mount: Path) -> str:
        return f"sqlite:///{mount / 'mlflow.db'}"

    def _copy(self, src: Path, dest: Path) -> None:
        """A consistent copy through SQLite's online backup API (safe even if a writer were connected)."""
        with closing(sqlite3.connect(src)) as source, closing(sqlite3.connect(dest)) as target:
            source.backup(target)

    def _backup_data(self, dest: Path) -> None:
        if self.db_path.exists():
            self._copy(self.db_path, dest / "mlflow.db")

    def _restore_data(self, src: Path) -> None:
        self.db_path.unlink(missing_ok=True)
        if (src / "mlflow.db").exists():
            self._copy(src / "mlflow.db", self.db_path)

    @property
    def sqlalchemy_url(self) -> str | None:
        return self.uri if self.db_path.exists() else None

    def describe(self) -> dict[str, str]:
        return {"product": "SQLite", "version": sqlite3.sqlite_version}


@dataclass
class DatabaseStore(Store):
    """A database of its own on the run's PostgreSQL or MySQL-compatible server."""

    backend: ClassVar[str] = "database"
    has_schema: ClassVar[bool] = True
    server: DatabaseServer | None = None
    database: str = ""

    @property
    def db(self) -> DatabaseServer:
        assert self.server is not None
        return self.server

    def uri_at(self, mount: Path) -> str:
        return self.db.mlflow_uri(self.database)  # servers reach the database over the network

    @property
    def sqlalchemy_url(self) -> sa.URL:
        return self.db.url_for(self.database)

    def create(self) -> None:
        super().create()
        try:
            self.db.create(self.database)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot create database {self.database}: {exc}") from exc

    def _backup_data(self, dest: Path) -> None:
        self.db.dump(self.database, dest / "dump", self.workdir / "db-tools.log")

    def _restore_data(self, src: Path) -> None:
        self.db.restore(self.database, src / "dump", self.workdir / "db-tools.log")

    def describe(self) -> dict[str, str]:
        return {**self.db.describe(), "database": self.database}

    def close(self) -> None:
        try:
            self.db.drop(self.database)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"database {self.database} could not be dropped: {exc}") from exc


@dataclass
class PostgresStore(DatabaseStore):
    backend: ClassVar[str] = "postgres"


@dataclass
class MySQLStore(DatabaseStore):
    backend: ClassVar[str] = "mysql"


STORES: dict[str, type[Store]] = {
    cls.backend: cls for cls in (FileStore, SqliteStore, PostgresStore, MySQLStore)
}
DATABASE_BACKENDS = ("postgres", "mysql")
UNAVAILABLE_ENV = "MLFLOW_COMPAT_{backend}_UNAVAILABLE"  # why the controller has no server for a backend


def backend_names() -> list[str]:
    return list(STORES)


def database_name(run_id: str, cell_slug: str) -> str:
    """A per-cell database name that is unique per run and cell, and short enough for every product."""
    digest = hashlib.sha256(f"{run_id}/{cell_slug}".encode()).hexdigest()[:16]
    return f"mlflow_compat_{digest}"


def new_store(
    backend: str, workdir: Path, *, servers: dict[str, DatabaseServer], run_id: str, cell_slug: str
) -> Store:
    cls = STORES[backend]
    if issubclass(cls, DatabaseStore):
        if backend not in servers:
            why = os.environ.get(UNAVAILABLE_ENV.format(backend=backend.upper()), "none was configured")
            raise StoreError(f"no {backend} server for this run: {why}")
        store: Store = cls(workdir, server=servers[backend], database=database_name(run_id, cell_slug))
    else:
        store = cls(workdir)
    store.create()
    return store
