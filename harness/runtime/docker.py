"""Servers in containers: each MLflow server is exactly an image, with a filesystem of its own.

The cell's store directory is bind-mounted at a path that does not exist on the host (/mlflow-compat/store),
so the server's store and artifact paths mean nothing to a client: artifacts reach the server's disk only
through the server (proxying). Versions without proxying (before 1.23) are the declared exception: the
artifact directory is also mounted at its host path, the one path both sides then write and read.
Containers use host networking (the daemon may have no bridge) or a run's bridge network, listen on a free
127.0.0.1 port, carry labels naming the run, the cell and their owner, and are removed after every phase.
Also here: a run's database servers as containers (`DatabaseContainer`, a placement for
harness.databases.DatabaseServer, started through testcontainers), the choice of their images, and
`DockerScope`, a docker run's run-level scope (its bridge network, database containers, its S3 server as a
container (`ObjectStoreContainer`, when the run has S3 cells), and the removal of whatever the run left
behind). What a database product is lives in harness.backends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
import requests
from sqlalchemy.engine import make_url

from harness import images, migration, objectstore, owner, procs
from harness.backends import DATABASE_BACKENDS, DatabaseStore, FileStore, SqlProduct, Store, product
from harness.config import RunConfig
from harness.databases import DatabaseError, DatabaseServer
from harness.envs import Env
from harness.features import Feature, ServerSetup, ServerView, combine
from harness.runtime._base import RunDatabases, UpgradeRun
from harness.server import ServerStartError, StartFailure, launch, start_with_port_retries, wait_serving
from harness.waiting import NotReady, SqlLogin, start_with_retries

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image cannot be pulled offline

HOST = "127.0.0.1"
MOUNT = PurePosixPath("/mlflow-compat/store")
LABEL_RUN = "mlflow-compat.run"
LABEL_CELL = "mlflow-compat.cell"
SERVER_PORT = 5000  # inside a container on a bridge network
DB_START_TIMEOUT_S = 60.0


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
        return self.reach(store.backend, uri) if isinstance(store, DatabaseStore) else uri

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

    def start_server(
        self, env: Env, store: Store, log: Path, features: Sequence[Feature] = ()
    ) -> DockerServer:
        view = ServerView(workdir=Path(MOUNT), reach=self.reach, container=True)
        setup = combine([f.server(env.version, view) for f in features])
        return start_with_port_retries(lambda port: self._start_on(port, env, store, log, setup))

    def reach(self, service: str, url: str) -> str:
        """A URL of a run-level service on this machine as a server container reaches it: on a bridge
        network, a database by its container's name; with host networking, as it is. The S3 server ("s3")
        is reached at the same URL from both sides, on purpose: a server presigns URLs for multipart uploads
        that the clients, on this machine, must reach (see `ObjectStoreContainer`)."""
        if self.bridged and service in DATABASE_BACKENDS:
            inside = make_url(url).set(host=database_container(self.labels[LABEL_RUN], service),
                                       port=product(service).default_port)  # fmt: skip
            return inside.render_as_string(hide_password=False)
        return url

    def _start_on(self, port: int, env: Env, store: Store, log: Path, setup: ServerSetup) -> DockerServer:
        inside_host, inside_port = ("0.0.0.0", SERVER_PORT) if self.bridged else (HOST, port)
        proxied = env.version.supports_serve_artifacts()
        artifacts_dir = MOUNT / "artifacts" if proxied else store.artifacts_dir
        plan = launch(
            env.version, store_uri=self.store_uri(store), artifacts_dir=str(artifacts_dir),
            host=inside_host, port=inside_port, file_store=isinstance(store, FileStore), setup=setup,
        )  # fmt: skip
        args = procs.redact(" ".join(plan.args))
        image = self.image_for(env)
        with log.open("a") as fh:
            fh.write(f"$ docker run ({self.describe()['network']}) {image} mlflow {args}\n"
                     f"# answering at http://{HOST}:{port}\n")  # fmt: skip
        offset = log.stat().st_size  # the container's own output is appended when it stops
        container = self._run(
            env, store, ["mlflow", *plan.args], plan.env, publish=port if self.bridged else None
        )
        mode = self._artifact_mode(plan.artifact_mode, proxied, store, elsewhere=setup.artifacts is not None)
        server = DockerServer(url=f"http://{HOST}:{port}", version=str(env.version), artifact_mode=mode,
                              log=log, image=image, container=container)  # fmt: skip
        wait_serving(server, offset)
        return server

    @staticmethod
    def _artifact_mode(mode: str, proxied: bool, store: Store, elsewhere: bool = False) -> str:
        if proxied or elsewhere:  # elsewhere: a feature keeps artifacts off the store's disk (an S3 bucket)
            return f"{mode}, in container"
        return f"{mode}: {store.artifacts_dir} bind-mounted at the same path in the container"

    def db_upgrade(
        self, env: Env, store: Store, log: Path, timeout: float, kill_at: str | None = None
    ) -> UpgradeRun:
        """The upgrade in a container of the version's image, through the revision timer: the script and its
        events live in the store's directory (the container's only mount) and the events are copied beside
        ``log`` afterwards. ``kill_at``: SIGKILL the container (ours: started here) inside that revision."""
        started = time.monotonic()
        args = store.upgrade_args(self.store_uri(store))
        timer_dir = store.workdir / ".upgrade-timer"
        timer_dir.mkdir(exist_ok=True)
        shutil.copy2(migration.TIMER, timer_dir / migration.TIMER.name)
        events = timer_dir / migration.events_path(log).name
        events.unlink(missing_ok=True)
        inside = MOUNT / timer_dir.name
        command = ["python3", str(inside / migration.TIMER.name), str(inside / events.name), "--", *args]
        with log.open("a") as fh:
            fh.write(f"$ docker run {self.image_for(env)} {procs.redact(' '.join(command))}\n")
        container = self._run(env, store, command, {migration.PAUSE_IN: kill_at} if kill_at else {})
        hit = False
        try:
            if kill_at is not None:
                hit = migration.wait_for_pause(events, kill_at, lambda: not _running(container), timeout,
                                               poll=0.05)  # fmt: skip
                if hit:
                    with contextlib.suppress(docker.errors.APIError):  # it may have ended meanwhile
                        container.kill(signal="SIGKILL")
            left = max(1.0, timeout - (time.monotonic() - started))
            code = container.wait(timeout=left).get("StatusCode")
        except requests.exceptions.RequestException:  # no exit within the timeout: the read timed out
            code = None
        finally:
            _finish(container, log)
            if events.exists():
                shutil.copyfile(events, migration.events_path(log))
        return UpgradeRun(None if hit else code, time.monotonic() - started, migration.events_path(log),
                          kill_at if hit else None)  # fmt: skip


def _running(container: Any) -> bool:
    try:
        container.reload()
    except docker.errors.NotFound:
        return False
    return container.status in ("created", "running")


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


# -- database servers in containers ----------------------------------------------------------------------
def bootstrap_database(backend: str) -> str:
    """``backend``'s database image built from Debian's packages (no registry needed)."""
    p = product(backend)
    if p.bootstrap_image is None or p.bootstrap_template is None:
        raise images.ImageError(f"{backend}: there is no recipe to bootstrap a {p.product_name} image")
    return images.bootstrap_database(p.bootstrap_image, p.bootstrap_template)


def database_image(backend: str, requested: str | None) -> images.Choice:
    """The requested (or the backend's default official) image when it can be had; else the bootstrapped."""
    return images.database_image(
        requested, product(backend).default_image, lambda: bootstrap_database(backend)
    )


class _Container:
    """A database container as a wait target: alive until it has exited."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def alive(self) -> bool:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status != "exited")


class DatabaseContainer:
    """A placement: a database server in a container (testcontainers). With host networking it listens on a
    free 127.0.0.1 port; on a bridge network it listens on its product's default port under its container
    ``name`` (how server containers reach it) and is published on a free 127.0.0.1 port (how the harness
    reaches it). Ready means a real login works; a container that never gets there is replaced, twice."""

    def __init__(self, product: SqlProduct, image: str, labels: Mapping[str, str],
                 network: str | None = None, name: str | None = None) -> None:  # fmt: skip
        self.product, self.image, self.network, self.name = product, image, network, name
        self.labels = {**labels, owner.LABEL: owner.token()}
        self.ours = images.client().images.get(image).labels.get("mlflow-compat.image") is not None
        self.container: Any = None
        try:
            port = start_with_retries(self._start_on, retry_if=lambda exc: isinstance(exc, NotReady))
        except NotReady as exc:
            raise DatabaseError(f"{image} did not accept connections") from exc
        self.admin_url = product.admin_url_at(HOST, port)

    def _start_on(self, port: int) -> int:
        from testcontainers.core.container import DockerContainer

        default_port = self.product.default_port
        if self.network is None:
            env, command = self.product.container_spec(port, self.ours, HOST)
            kwargs: dict[str, Any] = {"network_mode": "host", "labels": self.labels}
        else:
            env, command = self.product.container_spec(default_port, self.ours, "0.0.0.0")
            kwargs = {"network": self.network, "labels": self.labels}
        container = DockerContainer(self.image).with_kwargs(**kwargs)
        if self.network is not None:
            container = container.with_name(self.name)
            # Published on loopback only; testcontainers' with_bind_ports cannot say which address.
            container.ports[f"{default_port}/tcp"] = (HOST, port)
        for key, value in env.items():
            container = container.with_env(key, value)
        if command:
            container = container.with_command(command)
        self.container = container.start()
        login = SqlLogin(self.product.admin_url_at(HOST, port)).with_startup_timeout(DB_START_TIMEOUT_S)
        try:
            login.with_poll_interval(0.3).wait_until_ready(_Container(self.container))
        except NotReady:
            self.close()
            raise
        return port

    def close(self) -> None:
        if self.container is not None:
            self.container.stop()  # testcontainers stops and removes it
            self.container = None


def start_database_container(
    backend: str, image: str, labels: Mapping[str, str], network: str | None = None, name: str | None = None
) -> DatabaseServer:
    """A database container: host networking when ``network`` is None, else on that bridge network."""
    placement = DatabaseContainer(product(backend), image, labels, network, name)
    try:
        return DatabaseServer(product(backend), placement)
    except BaseException:
        placement.close()
        raise


# -- the run's S3 server in a container ---------------------------------------------------------------
def network_gateway(network: str) -> str:
    """The address of this machine on a bridge network (its gateway): reached from its containers and here."""
    config = images.client().networks.get(network).attrs.get("IPAM", {}).get("Config") or [{}]
    gateway = config[0].get("Gateway")
    if not gateway:
        raise images.ImageError(f"network {network} has no gateway address for the S3 server to listen on")
    return str(gateway).split("/")[0]


class ObjectStoreContainer:
    """The run's S3 server (moto) in a container with host networking, listening on a free port of ``host``:
    127.0.0.1 when containers use host networking too, else the run's bridge gateway, the one address that
    both this machine's clients and the server containers on the bridge reach. One address for both sides
    matters: a server presigns the URLs a client PUTs multipart upload parts to, with the endpoint it was
    given; a container name would mean nothing to the client. Ready when the S3 API answers."""

    def __init__(self, image: str, labels: Mapping[str, str], host: str = HOST) -> None:
        self.image, self.host = image, host
        self.labels = {**labels, owner.LABEL: owner.token()}
        self.container: Any = None
        try:
            port = start_with_retries(
                self._start_on, host=host, retry_if=lambda exc: isinstance(exc, NotReady)
            )
        except NotReady as exc:
            raise objectstore.ObjectStoreError(f"{image} did not answer: {exc}") from exc
        self.endpoint = f"http://{host}:{port}"

    def _start_on(self, port: int) -> int:
        self.container = images.client().containers.run(
            self.image, command=["moto_server", "-H", self.host, "-p", str(port)], network_mode="host",
            detach=True, labels=self.labels, init=True,
        )  # fmt: skip
        wait = objectstore.S3Answers(f"http://{self.host}:{port}").with_startup_timeout(DB_START_TIMEOUT_S)
        try:
            wait.with_poll_interval(0.2).wait_until_ready(_Running(self.container))
        except NotReady:
            self.close()
            raise
        return port

    def close(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


class _Running:
    """A container as a wait target: alive while it runs."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def alive(self) -> bool:
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        return bool(self.container.status in ("created", "running"))


# -- the run-level scope -------------------------------------------------------------------------------
class DockerScope:
    """A docker run's scope: its bridge network (when bridged), its database containers (or the user's
    servers), its S3 server container, and on close, the removal of every container and network labelled
    with the run."""

    def __init__(self, config: RunConfig, network: str | None = None, opened: bool = False) -> None:
        self.config = config
        self.network = network
        self.opened = opened  # the controller's scope (it removes the run's leftovers), not a worker's
        self.dbs = RunDatabases()
        self.s3 = objectstore.RunObjectStore()
        self.facts: dict[str, str] = {}

    @classmethod
    def open(cls, config: RunConfig, backends: Collection[str], object_store: bool = False) -> DockerScope:
        scope = cls(config, opened=True)
        try:
            if config.docker_network == "bridge":
                scope.network = create_network(config.run_id)
            failures = (DatabaseError, images.ImageError, docker.errors.DockerException)
            scope.dbs.start(config, backends, start=scope._start_database, failures=failures)
            if object_store:
                scope.s3.start(scope._start_object_store, failures=failures)
                scope.facts.update(scope.s3.facts())
        except BaseException:
            scope.close()
            raise
        return scope

    @classmethod
    def attach(cls, config: RunConfig) -> DockerScope:
        scope = cls(config, network=config.services.get("network"))
        scope.dbs.attach(config)
        scope.s3.attach(config.services.get("object_store"))
        return scope

    def _start_object_store(self) -> tuple[objectstore.ObjectStore, objectstore.Server]:
        env = objectstore.tool_env()
        base = images.python_base(
            f"{sys.version_info.major}.{sys.version_info.minor}", self.config.base_image
        )
        choice = images.objectstore_image(env.python, env.requirement, env.version, base)
        self.facts["s3_image"] = f"{choice.image} ({choice.note})"
        host = network_gateway(self.network) if self.network else HOST
        container = ObjectStoreContainer(choice.image, {LABEL_RUN: self.config.run_id}, host)
        where = f"container {choice.image}, host network on {host}"
        handle = objectstore.ObjectStore(endpoint=container.endpoint, product=objectstore.PRODUCT,
                                         version=env.version, tools=str(env.python), where=where)  # fmt: skip
        return handle, container

    def object_store(self) -> objectstore.ObjectStore:
        return self.s3.get()

    def _start_database(self, backend: str) -> DatabaseServer:
        choice = database_image(backend, self.config.database_images.get(backend))
        self.facts[f"{backend}_image"] = f"{choice.image} ({choice.note})"
        name = database_container(self.config.run_id, backend) if self.network else None
        return start_database_container(
            backend, choice.image, {LABEL_RUN: self.config.run_id}, self.network, name
        )

    def database(self, backend: str) -> DatabaseServer:
        return self.dbs.get(backend)

    def cell_runtime(self, labels: Mapping[str, str]) -> DockerRuntime:
        return DockerRuntime(dict(labels), base_image=self.config.base_image, network=self.network or "host")

    def published(self) -> dict[str, Any]:
        return {
            "databases": self.dbs.published(),
            "network": self.network,
            "object_store": self.s3.published(),
        }

    def close(self) -> None:
        self.dbs.close()
        self.s3.close()
        if self.opened:
            remove_containers(self.config.run_id)  # whatever a crashed or interrupted cell left behind
            remove_networks(self.config.run_id)
