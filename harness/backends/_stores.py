"""The store protocol: where a tracking server keeps its data, and how an operator backs it up.

Each cell gets a fresh ``Store``: a directory of its own (file, SQLite) or a database of its own on the
run's database server (`DatabaseStore`), so parallel cells never share state. A store knows the URI its
tracking server gets, its artifact directory (the server's proxied artifact destination, part of what is
backed up), how to back itself up and restore as an operator would, and its schema revision. The stores of
the file and SQLite backends live in their backend's module; a database server itself lives in
harness.databases (a store holds one only through the `DatabaseHandle` protocol).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL

from harness.backends._base import DatabaseError


class StoreError(RuntimeError):
    """The store itself misbehaved (infrastructure): a backup or restore could not be made."""


class DatabaseHandle(Protocol):
    """What a database store needs of its server (harness.databases.DatabaseServer is one)."""

    def url_for(self, database: str) -> URL: ...

    def mlflow_uri(self, database: str) -> str: ...

    def create(self, database: str) -> None: ...

    def drop(self, database: str) -> None: ...

    def dump(self, database: str, dest: Path, log: Path) -> float: ...

    def restore(self, database: str, src: Path, log: Path) -> float: ...

    def describe(self) -> dict[str, str]: ...


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

    def upgrade_args(self, uri: str) -> list[str]:
        """The `mlflow` command that upgrades this store to the next version, given the store's URI as that
        command sees it: `mlflow db upgrade` (a store that moves to another backend on upgrade says how)."""
        return ["db", "upgrade", uri]

    def skips(self, step: str) -> str | None:
        """Why the schema step named ``step`` (harness/cell.py) has nothing to do on this store as it is now,
        recorded as the step's skip; None: run it (harness/backends/file_to_sqlite.py says when)."""
        return None

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
class DatabaseStore(Store):
    """A database of its own on the run's server for a SQL backend (each backend names its subclass)."""

    backend: ClassVar[str] = "database"
    has_schema: ClassVar[bool] = True
    server: DatabaseHandle | None = None
    database: str = ""

    @property
    def db(self) -> DatabaseHandle:
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


def database_name(run_id: str, cell_slug: str) -> str:
    """A per-cell database name that is unique per run and cell, and short enough for every product."""
    digest = hashlib.sha256(f"{run_id}/{cell_slug}".encode()).hexdigest()[:16]
    return f"mlflow_compat_{digest}"
