"""Where servers run. A runtime implements two things: start a tracking server on a store, and run an
`mlflow` command (db upgrade) against a store. Clients always run from local venvs."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from harness.backends import Store
from harness.envs import Env


class RunningServer(Protocol):
    url: str
    version: str
    artifact_mode: str
    log: Path

    def alive(self) -> bool: ...

    def stop(self) -> int | None: ...


class Runtime(Protocol):
    name: str

    def start_server(self, env: Env, store: Store, log: Path) -> RunningServer:
        """Start a server of ``env``'s MLflow on ``store`` and return once /health answers.
        Raises harness.server.ServerStartError, classified."""
        ...

    def mlflow(self, env: Env, args: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
        """Run `mlflow ARGS` from ``env``; returns (exit code or None on timeout, seconds)."""
        ...


def get_runtime(name: str) -> Runtime:
    if name == "local":
        from harness.runtime.local import LocalRuntime

        return LocalRuntime()
    raise ValueError(f"unknown runtime {name!r}")


RUNTIMES = ("local",)
