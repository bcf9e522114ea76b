"""The file_to_sqlite backend: a file store that its upgrade moves into SQLite (`mlflow migrate-filestore`).

MLflow 3 deprecates the file store; from 3.10.0 `mlflow migrate-filestore --source DIR --target sqlite:///DB
[--progress/--no-progress]` ("Migrate MLflow FileStore data to a SQLite database") copies every experiment,
run (params, tags, metrics and their latest values), dataset and run input, logged-model output, trace
(info, tags, request metadata), assessment, logged model (params, tags, metrics) and the model registry
(registered models, versions, tags, aliases) into a fresh database at the version's head schema. It writes
no artifact: experiments and runs keep their artifact locations, so the artifacts stay where the file store's
server put them. It refuses any target that is not `sqlite:` (a PostgreSQL or MySQL URL is a click usage
error, exit 2), asks before overwriting an existing database file, and leaves the database in WAL mode
(journal_mode=WAL is kept in the file: a database MLflow's own servers create is not in WAL mode).

So this store is the `file` backend's mlruns directory until the first upgrade, whose command
(`upgrade_args`) is the TO version's `migrate-filestore` into `mlflow.db` beside it; from then on its `uri`
is that database (every later server, the TO server and the rollback's FROM server on the upgraded store),
and a later hop of a multi-hop path is an ordinary `mlflow db upgrade` of it. Which one it is comes from the
disk (does mlflow.db exist?), so a backup restored from before the migration is a file store again: the
rollback's FROM server reads the restored mlruns directory. Being a FileStore, every server on it gets the
file backend's MLFLOW_ALLOW_FILE_STORE=true (3.13+ refuse a file store without it; a database ignores it).
Before the migration there are no tracking tables anywhere: `sqlalchemy_url` is then an empty in-memory SQLite
database, whose snapshot is empty and whose revision is None. `skips` names the schema steps that have nothing
to do while the store is still a file store (the TO server on the un-migrated directory; the row-by-row
integrity check, which has no rows from before to compare: the ledger's reads after the migration, every
client through the TO server, verify every record instead). The descriptor's `path_lacks` says which paths
cannot be this hop (a first TO version without migrate-filestore). Nothing else lives here: the file store
itself is harness.backends.file, the store protocol harness.backends._stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from harness.backends._descriptor import Backend
from harness.backends.file import FileStore
from harness.versions import MlflowVersion

CAPABILITY = "migrate_filestore"  # harness/data/versions.toml: the TO version must have the command
DATABASE = "mlflow.db"
NO_TABLES = "sqlite://"  # an empty in-memory database: where the tracking tables are before the migration

# What the schema steps of harness/cell.py have to do while the store is still the file store.
NOTHING_TO_DO = {
    "unupgraded-start": (
        "the file store has no schema for the next server to refuse or migrate: `mlflow migrate-filestore` "
        "moves it into the database (a server on the un-migrated mlruns directory serves it as a file "
        "store, which the file backend's cells cover)"
    ),
    "integrity": (
        "the file store has no rows to compare the database's with: every record is read back through the "
        "next server after the migration (the ledger's reads)"
    ),
}


@dataclass
class FileToSqliteStore(FileStore):
    backend: ClassVar[str] = "file_to_sqlite"
    has_schema: ClassVar[bool] = True  # once migrated; until then `skips` says which steps have nothing to do

    @property
    def db_path(self) -> Path:
        return self.workdir / DATABASE

    @property
    def migrated(self) -> bool:
        """The store is the SQLite database (migrate-filestore made it), else still the mlruns directory."""
        return self.db_path.exists()

    def uri_at(self, mount: Path) -> str:
        if self.migrated:
            return f"sqlite:///{mount / DATABASE}"
        return super().uri_at(mount)

    def upgrade_args(self, uri: str) -> list[str]:
        """The file store's upgrade is the TO version's `migrate-filestore` into mlflow.db beside mlruns
        (``uri``: mlruns as the command sees it); once migrated, an ordinary `mlflow db upgrade`."""
        if not uri.startswith("file:"):
            return super().upgrade_args(uri)
        root = Path(url2pathname(urlparse(uri).path)).parent
        return ["migrate-filestore", "--source", str(root), "--target", f"sqlite:///{root / DATABASE}"]

    @property
    def sqlalchemy_url(self) -> str:
        return self.uri if self.migrated else NO_TABLES

    def skips(self, step: str) -> str | None:
        """Why the schema step named ``step`` has nothing to do on this store now (None: run it)."""
        return None if self.migrated else NOTHING_TO_DO.get(step)

    @staticmethod
    def _copy(src: Path, dest: Path) -> None:
        """A consistent copy through SQLite's online backup API (WAL included)."""
        with closing(sqlite3.connect(src)) as source, closing(sqlite3.connect(dest)) as target:
            source.backup(target)

    def _backup_data(self, dest: Path) -> None:
        super()._backup_data(dest)  # mlruns: the store itself before the migration, its source after
        if self.migrated:
            self._copy(self.db_path, dest / DATABASE)

    def _restore_data(self, src: Path) -> None:
        super()._restore_data(src)
        # migrate-filestore leaves the database in WAL mode: a stale -wal/-shm must not meet a restored file
        for suffix in ("", "-wal", "-shm"):
            self.db_path.with_name(DATABASE + suffix).unlink(missing_ok=True)
        if (src / DATABASE).exists():
            self._copy(src / DATABASE, self.db_path)

    def describe(self) -> dict[str, str]:
        return {
            "product": "file store (mlruns directory), migrated to SQLite by `mlflow migrate-filestore`",
            "version": f"SQLite {sqlite3.sqlite_version}",
        }


@dataclass(frozen=True)
class MigratingBackend(Backend):
    """A backend whose first upgrade moves the store to another backend with a command the TO version must
    have (``capability``)."""

    capability: str = CAPABILITY

    def path_lacks(self, path: Sequence[MlflowVersion | None]) -> str | None:
        """Why a path cannot be this hop (None when it can): its first upgrade's TO version lacks the command.
        A version not known yet (None: `latest` before it is resolved) is not held against the path."""
        if len(path) < 2 or path[1] is None:
            return None
        if why := path[1].lacks((self.capability,)):
            return f"{self.name}: {why}, which migrates the file store into SQLite"
        return None


BACKEND = MigratingBackend(name="file_to_sqlite", order=15, store=FileToSqliteStore)
