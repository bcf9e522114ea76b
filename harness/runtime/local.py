"""The embedded default: servers are `mlflow server` processes from each version's venv, on 127.0.0.1.

`LocalRuntime` starts a cell's servers (waiting and classifying as harness.server says) and runs `mlflow db
upgrade` as a process (through the revision timer, scenarios/upgrade_timer.py; killed on purpose for the
interrupted migration); `LocalScope` is a local run's run-level scope: its database servers are throwaway
local processes (harness.databases.start_local) or the user's own, and its S3 server (when the run has S3
cells) a moto process (harness.objectstore.start_local). Nothing about containers lives here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import databases, migration, objectstore, procs
from harness.backends import FileStore, Store
from harness.config import RunConfig
from harness.envs import Env
from harness.features import Feature, ServerSetup, combine, local_view
from harness.runtime._base import RunDatabases, UpgradeRun
from harness.server import launch, start_with_port_retries, wait_serving

HOST = "127.0.0.1"


@dataclass
class LocalServer:
    url: str
    version: str
    artifact_mode: str
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        return procs.stop(self.proc)


class LocalRuntime:
    name = "local"

    def describe(self) -> dict[str, str]:
        return {}

    def start_server(
        self, env: Env, store: Store, log: Path, features: Sequence[Feature] = ()
    ) -> LocalServer:
        setup = combine([f.server(env.version, local_view(store.workdir)) for f in features])
        return start_with_port_retries(lambda port: self._start_on(port, env, store, log, setup))

    def _start_on(self, port: int, env: Env, store: Store, log: Path, setup: ServerSetup) -> LocalServer:
        plan = launch(
            env.version,
            store_uri=store.uri,
            artifacts_dir=str(store.artifacts_dir),
            host=HOST,
            port=port,
            file_store=isinstance(store, FileStore),
            setup=setup,
        )
        offset = log.stat().st_size if log.exists() else 0
        proc = procs.spawn(
            [str(env.bin / "mlflow"), *plan.args],
            env={**env.environ(), **plan.env},
            log=log,
            cwd=store.workdir,
        )
        server = LocalServer(
            url=f"http://{HOST}:{port}",
            version=str(env.version),
            artifact_mode=plan.artifact_mode,
            log=log,
            proc=proc,
        )
        wait_serving(server, offset)
        return server

    def db_upgrade(
        self, env: Env, store: Store, log: Path, timeout: float, kill_at: str | None = None
    ) -> UpgradeRun:
        """The upgrade as a process of its own group, through the revision timer; ``kill_at``: SIGKILL that
        group (ours: started here) inside that revision, once the timer paused after its first statement."""
        events = migration.events_path(log)
        events.unlink(missing_ok=True)
        cmd = [str(env.interpreter), str(migration.TIMER), str(events), "--", *store.upgrade_args(store.uri)]
        if kill_at is None:
            code, seconds = procs.run(cmd, env=env.environ(), log=log, timeout=timeout)
            return UpgradeRun(code, seconds, events)
        started = time.monotonic()
        proc = procs.spawn(cmd, env={**env.environ(), migration.PAUSE_IN: kill_at}, log=log)
        try:
            hit = migration.wait_for_pause(events, kill_at, lambda: proc.poll() is not None, timeout)
            if hit:
                with contextlib.suppress(ProcessLookupError):  # it may have ended on its own meanwhile
                    os.killpg(proc.pid, signal.SIGKILL)
                with log.open("a") as fh:
                    fh.write(f"\n[mlflow-compat] killed (SIGKILL) inside revision {kill_at}\n")
            try:
                code: int | None = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                code = None
        finally:
            procs.stop(proc, grace=2.0)
        return UpgradeRun(None if hit else code, time.monotonic() - started, events, kill_at if hit else None)


class LocalScope:
    """A local run's scope: its database servers (local processes it started, or the user's), its S3 server
    (a moto process, when it has S3 cells); no network."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.dbs = RunDatabases()
        self.s3 = objectstore.RunObjectStore()
        self.facts: dict[str, str] = {}

    @classmethod
    def open(cls, config: RunConfig, backends: Collection[str], object_store: bool = False) -> LocalScope:
        scope = cls(config)
        try:
            scope.dbs.start(
                config, backends, start=databases.start_local, failures=(databases.DatabaseError,)
            )
            if object_store:
                scope.s3.start(objectstore.start_local)
                scope.facts.update(scope.s3.facts())
        except BaseException:
            scope.close()
            raise
        return scope

    @classmethod
    def attach(cls, config: RunConfig) -> LocalScope:
        scope = cls(config)
        scope.dbs.attach(config)
        scope.s3.attach(config.services.get("object_store"))
        return scope

    def database(self, backend: str) -> databases.DatabaseServer:
        return self.dbs.get(backend)

    def object_store(self) -> objectstore.ObjectStore:
        return self.s3.get()

    def cell_runtime(self, labels: Mapping[str, str]) -> LocalRuntime:
        return LocalRuntime()

    def published(self) -> dict[str, Any]:
        return {"databases": self.dbs.published(), "network": None, "object_store": self.s3.published()}

    def close(self) -> None:
        try:
            self.dbs.close()
        finally:
            self.s3.close()
