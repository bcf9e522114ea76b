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

from harness import databases, migration, objectstore, procs, serverfork
from harness.backends import FileStore, Store
from harness.config import RunConfig
from harness.envs import Env
from harness.features import Feature, ServerSetup, combine, local_view
from harness.runtime._base import RunDatabases, UpgradeRun
from harness.server import ServerStartError, StartFailure, launch, start_with_port_retries, wait_serving
from harness.serverfork import SERVER_LAUNCHES, ForkedServerProcess

HOST = "127.0.0.1"


@dataclass
class LocalServer:
    """A server on 127.0.0.1: an `mlflow server` process (cli), or the web server forked for it (fork)."""

    url: str
    version: str
    artifact_mode: str
    log: Path
    proc: subprocess.Popen[bytes] | ForkedServerProcess = field(repr=False)

    @property
    def launched(self) -> str:
        """How: "cli", or the fork server's "fork" (in-process) / "exec" (exec'd for real) / "cli" (ended in
        the CLI part, before any web server)."""
        return self.proc.how if isinstance(self.proc, ForkedServerProcess) else "cli"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if isinstance(self.proc, ForkedServerProcess):
            return self.proc.stop()
        return procs.stop(self.proc)


def _note_kill(log: Path, revision: str) -> None:
    with log.open("a") as fh:
        fh.write(f"\n[mlflow-compat] killed (SIGKILL) inside revision {revision}\n")


class LocalRuntime:
    name = "local"

    def __init__(self, server_launch: str = "fork") -> None:
        if server_launch not in SERVER_LAUNCHES:
            raise ValueError(f"server_launch={server_launch!r}: expected one of {', '.join(SERVER_LAUNCHES)}")
        self.server_launch = server_launch

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
        environ = {**env.environ(), **plan.env}
        proc: subprocess.Popen[bytes] | ForkedServerProcess
        if self.server_launch == "fork":
            try:
                proc = serverfork.fork_server(env).start_server(
                    plan.args, env=environ, cwd=store.workdir, log=log
                )
            except serverfork.LaunchError as exc:
                raise ServerStartError(StartFailure.LAUNCHER, str(exc)) from exc
        else:
            proc = procs.spawn([str(env.bin / "mlflow"), *plan.args], env=environ, log=log, cwd=store.workdir)
        server = LocalServer(
            url=f"http://{HOST}:{port}",
            version=str(env.version),
            artifact_mode=plan.artifact_mode,
            log=log,
            proc=proc,
        )
        try:
            wait_serving(server, offset)
        except serverfork.LaunchError as exc:  # the fork server failed under the start: ours, not MLflow's
            server.stop()
            raise ServerStartError(StartFailure.LAUNCHER, str(exc)) from exc
        return server

    def db_upgrade(
        self, env: Env, store: Store, log: Path, timeout: float, kill_at: str | None = None
    ) -> UpgradeRun:
        """The upgrade as a process of its own group, through the revision timer; ``kill_at``: SIGKILL that
        group (ours: started here) inside that revision, once the timer paused after its first statement."""
        events = migration.events_path(log)
        events.unlink(missing_ok=True)
        argv = [str(events), "--", *store.upgrade_args(store.uri)]
        if self.server_launch == "fork":
            return self._forked_upgrade(env, store, log, argv, timeout, kill_at)
        cmd = [str(env.interpreter), str(migration.TIMER), *argv]
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
                _note_kill(log, kill_at)
            try:
                code: int | None = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                code = None
        finally:
            procs.stop(proc, grace=2.0)
        return UpgradeRun(None if hit else code, time.monotonic() - started, events, kill_at if hit else None)

    def _forked_upgrade(
        self, env: Env, store: Store, log: Path, argv: list[str], timeout: float, kill_at: str | None
    ) -> UpgradeRun:
        """The same timer, forked from the version's server fork server (which has mlflow.cli imported);
        a failure of the fork server itself is raised as the harness's (LaunchError), never an exit code."""
        events = Path(argv[0])
        environ = {**env.environ(), **({migration.PAUSE_IN: kill_at} if kill_at else {})}
        started = time.monotonic()
        script = serverfork.fork_server(env).run_script(
            migration.TIMER, argv, env=environ, cwd=store.workdir, log=log
        )
        if kill_at is None:
            code, seconds = serverfork.wait_script(script, timeout, log)
            return UpgradeRun(code, seconds, events)
        hit = migration.wait_for_pause(events, kill_at, lambda: script.poll() is not None, timeout)
        if hit:
            script.kill()
            _note_kill(log, kill_at)
            return UpgradeRun(None, time.monotonic() - started, events, kill_at)
        left = max(1.0, timeout - (time.monotonic() - started))
        code, _ = serverfork.wait_script(script, left, log)
        return UpgradeRun(code, time.monotonic() - started, events)


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
        return LocalRuntime(self.config.server_launch)

    def published(self) -> dict[str, Any]:
        return {"databases": self.dbs.published(), "network": None, "object_store": self.s3.published()}

    def close(self) -> None:
        try:
            self.dbs.close()
        finally:
            self.s3.close()
