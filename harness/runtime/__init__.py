"""Where servers run. A runtime implements two things: start a tracking server on a store, and run an
`mlflow` command (db upgrade) against a store. Clients always run from local venvs."""

from __future__ import annotations

import os
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

    def describe(self) -> dict[str, str]:
        """What the report should say about where servers ran (images, for containers)."""
        ...

    def start_server(self, env: Env, store: Store, log: Path) -> RunningServer:
        """Start a server of ``env``'s MLflow on ``store`` and return once /health answers.
        Raises harness.server.ServerStartError, classified."""
        ...

    def db_upgrade(self, env: Env, store: Store, log: Path, timeout: float) -> tuple[int | None, float]:
        """`mlflow db upgrade` from ``env`` on ``store``; returns (exit code or None on timeout, seconds)."""
        ...


def get_runtime(name: str, labels: dict[str, str] | None = None) -> Runtime:
    """A runtime by name; ``labels`` name the run and cell on whatever it starts (containers)."""
    if name == "local":
        from harness.runtime.local import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from harness.runtime.docker import DockerRuntime

        return DockerRuntime(
            labels or {},
            base_image=os.environ.get("MLFLOW_COMPAT_BASE_IMAGE") or None,
            network=os.environ.get(NETWORK_ENV) or "host",
        )
    raise ValueError(f"unknown runtime {name!r}")


NETWORK_ENV = "MLFLOW_COMPAT_DOCKER_NETWORK_NAME"  # the run's bridge network, published to the workers
RUNTIMES = ("local", "docker", "auto")  # auto: docker when an engine answers, else local
