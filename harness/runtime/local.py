"""The embedded default: servers are `mlflow server` processes from each version's venv, on 127.0.0.1."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.backends import FileStore, Store
from harness.envs import Env
from harness.server import ServerStartError, StartFailure, classify_exit, launch, wait_healthy

HOST = "127.0.0.1"
PORT_ATTEMPTS = 3


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

    def start_server(self, env: Env, store: Store, log: Path) -> LocalServer:
        last: ServerStartError | None = None
        for _ in range(PORT_ATTEMPTS):
            try:
                return self._start_once(env, store, log)
            except ServerStartError as exc:
                if exc.kind is not StartFailure.PORT_TAKEN:
                    raise
                last = exc
        assert last is not None
        raise last

    def _start_once(self, env: Env, store: Store, log: Path) -> LocalServer:
        port = procs.free_port(HOST)
        plan = launch(
            env.version,
            store_uri=store.uri,
            artifacts_dir=str(store.artifacts_dir),
            host=HOST,
            port=port,
            file_store=isinstance(store, FileStore),
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
        try:
            wait_healthy(server.url, exited=lambda: proc.poll() is not None)
        except ServerStartError:
            server.stop()
            raise
        if proc.poll() is not None:
            server.stop()
            text = log.read_bytes()[offset:].decode(errors="replace")
            kind, line = classify_exit(text)
            raise ServerStartError(
                kind,
                f"server {env.version} exited with code {proc.returncode}: {line}",
                excerpt=procs.tail_text(text),
            )
        return server

    def db_upgrade(self, env: Env, store: Store, log: Path, timeout: float) -> tuple[int | None, float]:
        return procs.run(
            [str(env.bin / "mlflow"), "db", "upgrade", store.uri], env=env.environ(), log=log, timeout=timeout
        )
