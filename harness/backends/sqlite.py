"""The SQLite backend: one mlflow.db in the cell's workdir, backed up through SQLite's online backup API.
No server (nothing for harness.databases); the store protocol is harness.backends._stores."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.backends._descriptor import Backend
from harness.backends._stores import Store


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


BACKEND = Backend(name="sqlite", order=20, store=SqliteStore)
