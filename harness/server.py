"""How an MLflow tracking server of a given version is launched, waited for and classified.

Runtimes (local processes, Docker) share this: the command line comes from the version's facts, the
wait for /health and the retry on a taken port are the same for both (`wait_serving`,
`start_with_port_retries`), and a server that does not come up is classified, so that a schema refusal
(MLflow's behaviour) is never confused with a taken port or a slow machine (infrastructure). How a
server process or container is started is the runtime's (harness.runtime); how to wait, harness.waiting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeVar

from harness import procs
from harness.features._base import ServerSetup
from harness.versions import MlflowVersion
from harness.waiting import HttpHealth, NotReady, start_with_retries

T = TypeVar("T")

HEALTH_TIMEOUT_S = 240.0


class StartFailure(StrEnum):
    REFUSED_SCHEMA = "refused-schema"  # the server would not serve this store's schema: MLflow behaviour
    CRASHED = "crashed"  # exited for another reason: MLflow behaviour, shown with its log
    PORT_TAKEN = "port-taken"  # infrastructure: retried on another port
    TIMEOUT = "timeout"  # infrastructure: never answered /health
    LAUNCHER = "launcher"  # infrastructure: the harness's server fork server failed (harness.serverfork)


class ServerStartError(RuntimeError):
    def __init__(self, kind: StartFailure, message: str, excerpt: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.excerpt = excerpt

    @property
    def is_infrastructure(self) -> bool:
        return self.kind in (StartFailure.PORT_TAKEN, StartFailure.TIMEOUT, StartFailure.LAUNCHER)


_SCHEMA_REFUSAL = re.compile(
    r"(Detected out-of-date database schema[^\n]*|Can't locate revision identified by[^\n]*"
    r"|alembic\.util\.exc\.CommandError[^\n]*)"
)
_PORT_TAKEN = re.compile(r"Address already in use|\[Errno 98\]|Connection in use")


def classify_exit(log_text: str) -> tuple[StartFailure, str]:
    """Why a server process exited before it was healthy, with the line that says so."""
    if m := _SCHEMA_REFUSAL.search(log_text):
        return StartFailure.REFUSED_SCHEMA, m.group(1).strip()
    if m := _PORT_TAKEN.search(log_text):
        return StartFailure.PORT_TAKEN, m.group(0)
    last = [line for line in log_text.splitlines() if line.strip()][-1:] or ["(no output)"]
    return StartFailure.CRASHED, last[0].strip()


@dataclass(frozen=True)
class Launch:
    """What to run for a server: arguments after `mlflow`, extra environment, and the artifact mode."""

    args: list[str]
    env: dict[str, str]
    artifact_mode: str


def launch(
    version: MlflowVersion,
    *,
    store_uri: str,
    artifacts_dir: str,
    host: str,
    port: int,
    file_store: bool,
    setup: ServerSetup | None = None,
) -> Launch:
    """The command line of a server of ``version``; ``setup``: what the cell's features add (an app, where
    artifacts go instead of ``artifacts_dir``, arguments and environment)."""
    setup = setup or ServerSetup()
    args = ["server", "--backend-store-uri", store_uri, "--host", host, "--port", str(port), "--workers", "1"]
    if setup.server_app:
        args += ["--app-name", setup.server_app]
    # 3.x servers start a job runner and huey consumers that leave temp stores in /dev/shm after every
    # shutdown; jobs are not what this harness tests, so they are off (a no-op for versions without them).
    env: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    artifacts = setup.artifacts or artifacts_dir
    if version.supports_serve_artifacts():
        args += ["--serve-artifacts", "--artifacts-destination", artifacts]
        mode = "proxied"
    else:
        # No proxying before 1.23: clients write straight to this path, which they must be able to reach.
        args += ["--default-artifact-root", artifacts]
        mode = "direct (shared filesystem)"
    if file_store and version.needs_file_store_opt_in():
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return Launch(
        args=[*args, *setup.args], env={**env, **setup.env}, artifact_mode=setup.artifact_mode or mode
    )


class Serving(Protocol):
    """A server being started, as a runtime hands it over (harness.runtime.RunningServer is one)."""

    url: str
    version: str
    log: Path

    def alive(self) -> bool: ...

    def stop(self) -> int | None: ...


def wait_serving(server: Serving, offset: int, timeout: float = HEALTH_TIMEOUT_S) -> float:
    """Return once ``server`` answers /health and is still alive (the seconds waited); else stop it and raise
    ServerStartError, classified: TIMEOUT when it never answered, or why it exited (before or right after
    answering) from what its log says after ``offset``."""
    health = HttpHealth(server.url).with_startup_timeout(timeout).with_poll_interval(0.05)
    waited = 0.0
    try:
        waited = health.wait_until_ready(server)
    except NotReady as exc:
        if not exc.exited:
            server.stop()
            raise ServerStartError(StartFailure.TIMEOUT, str(exc)) from exc
    if not server.alive():
        code = server.stop()
        text = server.log.read_bytes()[offset:].decode(errors="replace")
        kind, line = classify_exit(text)
        raise ServerStartError(kind, f"server {server.version} exited with code {code}: {line}",
                               excerpt=procs.tail_text(text))  # fmt: skip
    return waited


def start_with_port_retries(start: Callable[[int], T]) -> T:
    """``start(port)`` on a free port, again on another one while the port turns out taken."""
    return start_with_retries(
        start, retry_if=lambda exc: isinstance(exc, ServerStartError) and exc.kind is StartFailure.PORT_TAKEN
    )
