"""Where servers run, for a cell and for a whole run.

A runtime implements two things: start a tracking server on a store, and run an `mlflow` command (db
upgrade) against a store; clients always run from local venvs. `local` runs `mlflow server` processes
(runtime/local.py), `docker` runs each server as a container of its version's image (runtime/docker.py).
Each runtime also owns its run-level scope (`LocalScope`, `DockerScope`): what lives for a whole run (its
database servers, a Docker network), opened by the controller (`open_run`) or attached to by a pytest
worker from run.json (`attach_run`). This module only picks between them; the protocols and the database
part both scopes share are in runtime/_base.py. Nothing here reads the environment: settings arrive in a
`RunConfig` (harness.config).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from harness.config import RunConfig
from harness.runtime._base import DatabaseUnavailable, RunningServer, RunScope, Runtime

RUNTIMES = ("local", "docker", "auto")  # auto: docker when an engine answers, else local

__all__ = ["RUNTIMES", "DatabaseUnavailable", "RunScope", "RunningServer", "Runtime", "attach_run",
           "get_runtime", "open_run"]  # fmt: skip


def get_runtime(
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    network: str = "host",
    base_image: str | None = None,
) -> Runtime:
    """A cell runtime by name, outside any run scope (tests, bench); ``labels`` name the run and cell on
    whatever it starts (containers), ``network`` is "host" or a bridge network's name."""
    if name == "local":
        from harness.runtime.local import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from harness.runtime.docker import DockerRuntime

        return DockerRuntime(dict(labels or {}), base_image=base_image, network=network)
    raise ValueError(f"unknown runtime {name!r}")


def open_run(config: RunConfig, backends: Collection[str], object_store: bool = False) -> RunScope:
    """Start what the run's cells share: one database server per database backend (a local process, or a
    container with the docker runtime; a user's own where one was given), an S3 server when ``object_store``
    (the run has S3 cells: moto, as a process or a container) and, for a bridged docker run, its network. A
    server that cannot start makes only the cells that need it `error`."""
    if config.runtime == "docker":
        from harness.runtime.docker import DockerScope

        return DockerScope.open(config, backends, object_store)
    from harness.runtime.local import LocalScope

    return LocalScope.open(config, backends, object_store)


def attach_run(config: RunConfig) -> RunScope:
    """A worker's view of the run's services, from what the controller published in run.json."""
    if config.runtime == "docker":
        from harness.runtime.docker import DockerScope

        return DockerScope.attach(config)
    from harness.runtime.local import LocalScope

    return LocalScope.attach(config)
