"""Servers in containers: each MLflow server is exactly an image, with a filesystem of its own.

The cell's store directory is bind-mounted at a path that does not exist on the host (/mlflow-compat/store),
so the server's store and artifact paths mean nothing to a client: artifacts reach the server's disk only
through the server (proxying). Versions without proxying (before 1.23) are the declared exception: the
artifact directory is also mounted at its host path, the one path both sides then write and read.
Containers use host networking (the daemon may have no bridge) or a run's bridge network, listen on a free
127.0.0.1 port, carry labels naming the run, the cell and their owner, and are removed after every phase.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
from sqlalchemy.engine import make_url

from harness import images, owner, procs
from harness.backends import DatabaseStore, FileStore, Store
from harness.envs import Env
from harness.server import ServerStartError, StartFailure, classify_exit, launch, wait_healthy

HOST = "127.0.0.1"
MOUNT = PurePosixPath("/mlflow-compat/store")
LABEL_RUN = "mlflow-compat.run"
LABEL_CELL = "mlflow-compat.cell"
SERVER_PORT = 5000  # inside a container on a bridge network
DB_PORTS = {"postgres": 5432, "mysql": 3306}  # database containers on a bridge network listen on these


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
    """``network`` is "host" (the daemon may have no bridge: ports chosen on 127.0.0.1) or the name of the
    run's bridge network (servers listen on SERVER_PORT inside and are published on a free 127.0.0.1 port;
    databases are reached by container name)."""

    name = "docker"

    def __init__(self, labels: dict[str, str], base_image: str | None = None, network: str = "host") -> None:
        self.labels = labels
        self.base_image = base_image
        self.network = network
        self.images_used: dict[str, str] = {}  # version -> "image (why this one)", for the report
        self._images: dict[
            Path, str
        ] = {}  # env -> image: freezing an env and asking the engine once is enough

    @property
    def bridged(self) -> bool:
        return self.network != "host"

    def describe(self) -> dict[str, str]:
        facts = {f"server image {v}": image for v, image in self.images_used.items()}
        facts["network"] = (
            f"bridge network {self.network}, published ports" if self.bridged else "host network"
        )
        return facts

    def image_for(self, env: Env) -> str:
        if env.path not in self._images:
            minor = ".".join(env.python.split(".")[:2])
            choice = images.server_image(env, images.python_base(minor, self.base_image))
            self.images_used[str(env.version)] = f"{choice.image} ({choice.note})"
            self._images[env.path] = choice.image
        return self._images[env.path]

    def store_uri(self, store: Store) -> str:
        """The store as a server container sees it: through the bind mount, and the database by name."""
        uri = store.uri_at(Path(MOUNT))
        if self.bridged and isinstance(store, DatabaseStore):
            url = make_url(uri)
            backend = store.backend
            uri = url.set(host=database_container(self.labels[LABEL_RUN], backend),
                          port=DB_PORTS[backend]).render_as_string(hide_password=False)  # fmt: skip
        return uri

    def _run(self, env: Env, store: Store, command: list[str], environment: dict[str, str],
             publish: int | None = None) -> Any:  # fmt: skip
        network: dict[str, Any] = {"network": self.network} if self.bridged else {"network_mode": "host"}
        if publish is not None:
            network["ports"] = {f"{SERVER_PORT}/tcp": (HOST, publish)}
        volumes = {str(store.workdir): {"bind": str(MOUNT), "mode": "rw"}}
        if not env.version.supports_serve_artifacts():
            # No proxying: clients write artifacts straight to the path the server records, so that path
            # must mean the same directory on both sides (the one exception to the isolation above).
            volumes[str(store.artifacts_dir)] = {"bind": str(store.artifacts_dir), "mode": "rw"}
        try:
            return images.client().containers.run(
                self.image_for(env), command=command, environment=environment, **network, detach=True,
                volumes=volumes, labels={**self.labels, owner.LABEL: owner.token()},
                init=True,  # mlflow as PID 1 would ignore SIGTERM: every stop would take the full timeout
            )  # fmt: skip
        except docker.errors.APIError as exc:
            if "port is already allocated" in str(exc) or "address already in use" in str(exc):
                raise ServerStartError(StartFailure.PORT_TAKEN, str(exc)) from exc
            raise

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
        inside_host, inside_port = ("0.0.0.0", SERVER_PORT) if self.bridged else (HOST, port)
        proxied = env.version.supports_serve_artifacts()
        artifacts_dir = MOUNT / "artifacts" if proxied else store.artifacts_dir
        plan = launch(
            env.version, store_uri=self.store_uri(store), artifacts_dir=str(artifacts_dir),
            host=inside_host, port=inside_port, file_store=isinstance(store, FileStore),
        )  # fmt: skip
        args = procs.redact(" ".join(plan.args))
        image = self.image_for(env)
        with log.open("a") as fh:
            fh.write(f"$ docker run ({self.describe()['network']}) {image} mlflow {args}\n"
                     f"# answering at http://{HOST}:{port}\n")  # fmt: skip
        container = self._run(
            env, store, ["mlflow", *plan.args], plan.env, publish=port if self.bridged else None
        )
        mode = self._artifact_mode(plan.artifact_mode, proxied, store)
        server = DockerServer(url=f"http://{HOST}:{port}", version=str(env.version), artifact_mode=mode,
                              log=log, image=image, container=container)  # fmt: skip
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
            raise ServerStartError(kind, f"server {env.version} exited with code {code}: {line}",
                                   excerpt=procs.tail_text(text))  # fmt: skip
        return server

    @staticmethod
    def _artifact_mode(mode: str, proxied: bool, store: Store) -> str:
        if proxied:
            return f"{mode}, in container"
        return f"{mode}: {store.artifacts_dir} bind-mounted at the same path in the container"

    def db_upgrade(self, env: Env, store: Store, log: Path, timeout: float) -> tuple[int | None, float]:
        started = time.monotonic()
        uri = self.store_uri(store)
        with log.open("a") as fh:
            fh.write(f"$ docker run {self.image_for(env)} mlflow db upgrade {procs.redact(uri)}\n")
        container = self._run(env, store, ["mlflow", "db", "upgrade", uri], {})
        try:
            code = container.wait(timeout=timeout).get("StatusCode")
        except Exception:
            code = None
        _finish(container, log)
        return code, time.monotonic() - started


def database_container(run_id: str, backend: str) -> str:
    """The container name of a run's database server: how server containers reach it on a bridge network."""
    return f"mlflow-compat-{run_id}-{backend}"


def network_name(run_id: str) -> str:
    return f"mlflow-compat-{run_id}"


def has_bridge() -> bool:
    """Whether the engine has a bridge network (a daemon started with --bridge=none has not)."""
    return bool(images.client().networks.list(names=["bridge"]))


def create_network(run_id: str) -> str:
    name = network_name(run_id)
    images.client().networks.create(
        name, driver="bridge", labels={LABEL_RUN: run_id, owner.LABEL: owner.token()}
    )
    return name


def _ours(run_id: str | None, kind: str) -> list[Any]:
    """The harness's containers or networks: of one run, or (no run given) those whose owner is gone."""
    label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
    collection = images.client().containers if kind == "containers" else images.client().networks
    found = collection.list(filters={"label": label}, **({"all": True} if kind == "containers" else {}))
    if run_id:
        return found
    labels = (lambda x: x.labels) if kind == "containers" else (lambda x: x.attrs.get("Labels") or {})
    return [x for x in found if not owner.alive(labels(x).get(owner.LABEL, ""))]


def remove_networks(run_id: str | None = None) -> int:
    networks = _ours(run_id, "networks")
    for network in networks:
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
    return len(networks)


def remove_containers(run_id: str | None = None) -> int:
    """Remove the harness's containers: one run's, or the leftovers of runs whose controller is gone."""
    containers = _ours(run_id, "containers")
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    return len(containers)
