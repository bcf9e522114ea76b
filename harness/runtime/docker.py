"""Servers in containers: each MLflow server is exactly an image, with a filesystem of its own.

The cell's store directory is bind-mounted at a path that does not exist on the host (/mlflow-compat/store),
so the server's store and artifact paths mean nothing to a client: artifacts reach the server's disk only
through the server (proxying). Containers use host networking (the daemon may have no bridge) on a free
127.0.0.1 port, carry labels naming the run and the cell, and are removed after every phase.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors

from harness import images, procs
from harness.backends import FileStore, Store
from harness.envs import Env
from harness.server import ServerStartError, StartFailure, classify_exit, launch, wait_healthy

HOST = "127.0.0.1"
MOUNT = PurePosixPath("/mlflow-compat/store")
LABEL_RUN = "mlflow-compat.run"
LABEL_CELL = "mlflow-compat.cell"


@dataclass
class DockerServer:
    url: str
    version: str
    artifact_mode: str
    log: Path
    image: str
    container: Any = field(repr=False)

    def alive(self) -> bool:
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        return self.container.status == "running"

    def stop(self) -> int | None:
        return _finish(self.container, self.log)


def _finish(container: Any, log: Path) -> int | None:
    """Stop and remove a container, appending its output to ``log``; returns its exit code."""
    code = None
    try:
        container.stop(timeout=10)
        code = container.wait(timeout=30).get("StatusCode")
        with log.open("ab") as fh:
            fh.write(container.logs(stdout=True, stderr=True))
    except docker.errors.NotFound:
        pass  # already gone: nothing to stop or read
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    return code


class DockerRuntime:
    name = "docker"

    def __init__(self, labels: dict[str, str], base_image: str | None = None) -> None:
        self.labels = labels
        self.base_image = base_image
        self.images_used: dict[str, str] = {}

    def describe(self) -> dict[str, str]:
        return {f"server image {v}": image for v, image in self.images_used.items()}

    def image_for(self, env: Env) -> str:
        minor = ".".join(env.python.split(".")[:2])
        choice = images.server_image(env, images.python_base(minor, self.base_image))
        self.images_used[str(env.version)] = f"{choice.image} ({choice.note})"
        return choice.image

    def _run(self, env: Env, store: Store, command: list[str], environment: dict[str, str]) -> Any:
        return images.client().containers.run(
            self.image_for(env), command=command, environment=environment, network_mode="host",
            volumes={str(store.workdir): {"bind": str(MOUNT), "mode": "rw"}}, labels=self.labels, detach=True,
            init=True,  # mlflow as PID 1 would ignore SIGTERM: every stop would take the full timeout
        )  # fmt: skip

    def start_server(self, env: Env, store: Store, log: Path) -> DockerServer:
        for attempt in range(3):
            try:
                return self._start_once(env, store, log)
            except ServerStartError as exc:
                if exc.kind is not StartFailure.PORT_TAKEN or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, env: Env, store: Store, log: Path) -> DockerServer:
        port = procs.free_port(HOST)
        plan = launch(
            env.version,
            store_uri=store.uri_at(Path(MOUNT)),
            artifacts_dir=str(MOUNT / "artifacts"),
            host=HOST,
            port=port,
            file_store=isinstance(store, FileStore),
        )
        image = self.image_for(env)
        with log.open("a") as fh:
            fh.write(f"$ docker run --network host {image} mlflow {procs.redact(' '.join(plan.args))}\n")
        container = self._run(env, store, ["mlflow", *plan.args], plan.env)
        server = DockerServer(
            url=f"http://{HOST}:{port}",
            version=str(env.version),
            artifact_mode=f"{plan.artifact_mode}, in container",
            log=log,
            image=image,
            container=container,
        )
        try:
            wait_healthy(server.url, exited=lambda: not server.alive())
        except ServerStartError:
            server.stop()
            raise
        if not server.alive():
            offset = log.stat().st_size
            code = server.stop()
            text = log.read_bytes()[offset:].decode(errors="replace")
            kind, line = classify_exit(text)
            raise ServerStartError(
                kind, f"server {env.version} exited with code {code}: {line}", excerpt=procs.tail_text(text)
            )
        return server

    def db_upgrade(self, env: Env, store: Store, log: Path, timeout: float) -> tuple[int | None, float]:
        started = time.monotonic()
        uri = store.uri_at(Path(MOUNT))
        with log.open("a") as fh:
            fh.write(
                f"$ docker run --network host {self.image_for(env)} mlflow db upgrade {procs.redact(uri)}\n"
            )
        container = self._run(env, store, ["mlflow", "db", "upgrade", uri], {})
        try:
            code = container.wait(timeout=timeout).get("StatusCode")
        except Exception:
            code = None
        _finish(container, log)
        return code, time.monotonic() - started


def remove_containers(run_id: str | None = None) -> int:
    """Remove the harness's containers (of one run, or all of them: leftovers of crashed runs)."""
    label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
    removed = 0
    for container in images.client().containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
        removed += 1
    return removed
