"""What the runtimes share: the `Runtime` and `RunScope` protocols, and the run's database servers.

A runtime (harness.runtime.local, harness.runtime.docker) does two things for a cell: start a tracking
server on a store, and run an `mlflow` command (db upgrade) against a store; clients always run from
local venvs.

A run scope is what lives for a whole run (its database servers, one per SQL backend; its S3 server when it
has S3 cells, harness.objectstore; a Docker network).
The controller opens one (harness.runtime.open_run: starts what the run needs) and each pytest worker
attaches to it (harness.runtime.attach_run: from what the controller published in run.json, starting
nothing). `RunDatabases` is the part both runtimes have alike: a user's server where one was given, else
one this scope starts (how is the runtime's: a local process, a container), or why there is none. The
scopes themselves live with their runtime: `LocalScope` in runtime/local.py, `DockerScope` (with its
network, database containers and leftover removal) in runtime/docker.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from harness import databases
from harness.backends import DATABASE_BACKENDS, Store
from harness.config import RunConfig
from harness.databases import DatabaseServer
from harness.envs import Env
from harness.features import Feature
from harness.objectstore import ObjectStore


class RunningServer(Protocol):
    url: str
    version: str
    artifact_mode: str
    log: Path

    def alive(self) -> bool: ...

    def stop(self) -> int | None: ...


class UpgradeRun(NamedTuple):
    """What a runtime's `db_upgrade` returns: the exit code (None on a timeout, or when it was killed on
    purpose), seconds, the timer's events file (harness/migration.py reads it; None: no timer ran), and the
    revision it was killed in (``kill_at``), else None."""

    code: int | None
    seconds: float
    events: Path | None = None
    killed_at: str | None = None


class Runtime(Protocol):
    name: str

    def describe(self) -> dict[str, str]:
        """What the report should say about where servers ran (images, for containers)."""
        ...

    def start_server(
        self, env: Env, store: Store, log: Path, features: Sequence[Feature] = ()
    ) -> RunningServer:
        """Start a server of ``env``'s MLflow on ``store``, with the cell's ``features`` (harness/features),
        and return once /health answers. Raises harness.server.ServerStartError, classified."""
        ...

    def db_upgrade(
        self, env: Env, store: Store, log: Path, timeout: float, kill_at: str | None = None
    ) -> UpgradeRun:
        """`mlflow db upgrade` from ``env`` on ``store`` (the store's own command: `Store.upgrade_args`),
        through the revision timer (scenarios/upgrade_timer.py, the same click command as the `mlflow`
        script) with its events beside ``log``. ``kill_at``: kill it (SIGKILL, as a crash would) inside that
        alembic revision, after its first statement (the interrupted migration)."""
        ...


class DatabaseUnavailable(RuntimeError):
    """The run has no server for a backend; the message says why (its cells become errors)."""


class RunScope(Protocol):
    """What lives for a whole run: its database servers (one per backend), a Docker network; opened by the
    controller (`open_run`: starts them) or attached to by a pytest worker (`attach_run`: starts nothing)."""

    facts: dict[str, str]  # what opening resolved, for the report's options table (e.g. a database image)

    def database(self, backend: str) -> DatabaseServer:
        """The run's server for ``backend``; raises DatabaseUnavailable saying why there is none."""
        ...

    def object_store(self) -> ObjectStore:
        """The run's S3 server (when the run has S3 cells); raises harness.objectstore.ObjectStoreUnavailable
        saying why there is none."""
        ...

    def cell_runtime(self, labels: Mapping[str, str]) -> Runtime:
        """The runtime a cell starts its servers with; ``labels`` name the run and cell on what it starts."""
        ...

    def published(self) -> dict[str, Any]:
        """What workers need to attach (JSON): each database's admin URL or why there is none; the network."""
        ...

    def close(self) -> None:
        """Stop what this scope started (nothing, for an attached scope: only handles are released)."""
        ...


class RunDatabases:
    """The run's database servers by backend, and why a backend has none."""

    def __init__(self) -> None:
        self.servers: dict[str, DatabaseServer] = {}
        self.missing: dict[str, str] = {}

    def get(self, backend: str) -> DatabaseServer:
        if backend in self.servers:
            return self.servers[backend]
        raise DatabaseUnavailable(self.missing.get(backend, "none was configured"))

    def start(
        self,
        config: RunConfig,
        backends: Collection[str],
        start: Callable[[str], DatabaseServer],
        failures: tuple[type[BaseException], ...],
    ) -> None:
        """One server per SQL backend among ``backends``: the user's where given, else ``start(backend)``;
        a server that cannot start (one of ``failures``) makes only that backend's cells `error`."""
        for backend in sorted(set(backends) & set(DATABASE_BACKENDS)):
            given = config.database_urls.get(backend)
            if given:
                self.servers[backend] = databases.connect(backend, databases.parse_admin_url(backend, given))
                continue
            print(f"mlflow-compat: starting a {backend} server ({config.runtime})", flush=True)
            try:
                self.servers[backend] = start(backend)
            except failures as exc:
                self.missing[backend] = f"the local server did not start: {exc}"
                print(f"mlflow-compat: {backend}: {exc}; its cells will be errors", file=sys.stderr)

    def attach(self, config: RunConfig) -> None:
        """Handles on the servers the controller published (starting nothing)."""
        for backend, entry in config.services.get("databases", {}).items():
            if "url" in entry:
                self.servers[backend] = databases.connect(
                    backend, databases.parse_admin_url(backend, entry["url"])
                )
            else:
                self.missing[backend] = entry["unavailable"]

    def published(self) -> dict[str, Any]:
        dbs: dict[str, Any] = {b: {"url": s.admin_url.render_as_string(hide_password=False)}
                               for b, s in self.servers.items()}  # fmt: skip
        dbs.update({b: {"unavailable": why} for b, why in self.missing.items()})
        return dbs

    def close(self) -> None:
        """Stop the servers started here; for the others (a user's, a published one) release the handle."""
        for server in self.servers.values():
            server.close()
