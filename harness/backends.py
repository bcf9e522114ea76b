"""Backend stores: where a tracking server keeps its data, and how an operator backs it up.

A ``Backend`` makes a fresh ``Store`` for each cell, in the cell's own directory (or, for database
servers, its own database), so parallel cells never share state. A store knows its server URI, its
artifact directory (the server's proxied artifact destination, part of what is backed up), how to back
itself up and restore, and which schema revision it is at.
"""

from __future__ import annotations

import shutil
import sqlite3
from abc import ABC, abstractmethod
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


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
    @abstractmethod
    def uri(self) -> str:
        """The --backend-store-uri a server gets."""

    @abstractmethod
    def _backup_data(self, dest: Path) -> None: ...

    @abstractmethod
    def _restore_data(self, src: Path) -> None: ...

    def create(self) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)

    def schema_revision(self) -> str | None:
        """The alembic revision of the tracking schema; None without a schema (or before one exists)."""
        return None

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
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"backup {name} failed: {exc}") from exc
        return dest

    def restore(self, src: Path) -> None:
        try:
            self._restore_data(src)
            shutil.rmtree(self.artifacts_dir, ignore_errors=True)
            if (src / "artifacts").exists():
                shutil.copytree(src / "artifacts", self.artifacts_dir)
        except (OSError, sqlite3.Error) as exc:
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

    @property
    def uri(self) -> str:
        return self.root.as_uri()

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

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db_path}"

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

    def schema_revision(self) -> str | None:
        if not self.db_path.exists():
            return None
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            con.close()
        return row[0] if row else None

    def describe(self) -> dict[str, str]:
        return {"product": "SQLite", "version": sqlite3.sqlite_version}


STORES: dict[str, type[Store]] = {cls.backend: cls for cls in (FileStore, SqliteStore)}
PLANNED = ("postgres", "mysql")  # issue 3


def backend_names() -> list[str]:
    return list(STORES)


def new_store(backend: str, workdir: Path) -> Store:
    store = STORES[backend](workdir)
    store.create()
    return store
