"""Database servers for the postgres and mysql backends: throwaway local ones, or a user's own.

A ``DatabaseServer`` hands out one fresh database per cell (``create``/``drop``), backs one up and
restores it with the product's own dump tools, and says what product and version it is. The harness
starts at most one local server per backend per run (``LocalPostgres``, ``LocalMariaDB``) and always
tears it down; with ``--postgres-url``/``--mysql-url`` it uses the user's server and touches nothing
there but the databases it created. Passwords reach the dump tools through the environment
(PGPASSWORD, MYSQL_PWD); an MLflow server gets its store URI with the password in it, and every command
line and URL the harness writes down is redacted.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from harness import owner, procs
from harness.procs import redact

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
TOOL_TIMEOUT_S = 600.0


class DatabaseError(RuntimeError):
    """The database server or one of its tools failed: infrastructure, never an MLflow verdict."""


def _find_tool(name: str, extra_dirs: list[str]) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/") + f"/{name}"), reverse=True):
            return str(candidate)
    raise DatabaseError(f"`{name}` is not installed")


def _pg_tool(name: str) -> str:
    return _find_tool(name, ["/usr/lib/postgresql/*/bin"])


def _maria_tool(*names: str) -> str:
    for name in names:
        try:
            return _find_tool(name, ["/usr/sbin", "/usr/libexec"])
        except DatabaseError:
            continue
    raise DatabaseError(f"none of {', '.join(names)} is installed")


class DatabaseServer(ABC):
    backend: ClassVar[str]  # the harness backend name: "postgres" or "mysql"
    scheme: ClassVar[str]  # the SQLAlchemy/MLflow URL scheme

    def __init__(self, admin_url: URL) -> None:
        self.admin_url = admin_url
        self._engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    # -- databases ----------------------------------------------------------------------------
    def url_for(self, database: str) -> URL:
        return self.admin_url.set(drivername=self.scheme, database=database)

    def mlflow_uri(self, database: str) -> str:
        """The URI an MLflow server gets (with the password: pass it only to processes, never to logs)."""
        return self.url_for(database).render_as_string(hide_password=False)

    create_options: ClassVar[str] = ""

    def create(self, database: str) -> None:
        with self._engine.connect() as con:
            con.execute(sa.text(f"CREATE DATABASE {self.quote(database)}{self.create_options}"))

    def drop(self, database: str) -> None:
        with self._engine.connect() as con:
            con.execute(sa.text(f"DROP DATABASE IF EXISTS {self.quote(database)}"))

    def databases(self) -> list[str]:
        with self._engine.connect() as con:
            return [r[0] for r in con.execute(sa.text(self.list_sql))]

    def describe(self) -> dict[str, str]:
        with self._engine.connect() as con:
            version = str(con.execute(sa.text("SELECT version()")).scalar())
        product = "MariaDB" if "mariadb" in version.lower() else self.product_name
        note = "standing in for MySQL (same dialect and driver)" if product == "MariaDB" else ""
        return {"product": product, "version": version, "server": redact(str(self.admin_url)), "note": note}

    def dispose(self) -> None:
        self._engine.dispose()

    # -- backups ------------------------------------------------------------------------------
    def _tool_env(self) -> dict[str, str]:
        """The dump tools' environment: the password goes there, never onto a command line."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL"))}
        if self.admin_url.password:
            env[self.password_env] = str(self.admin_url.password)
        return env

    def _run_tool(
        self, cmd: list[str], log: Path, *, stdin: Path | None = None, stdout: Path | None = None
    ) -> float:
        started = time.monotonic()
        with log.open("a") as fh:
            fh.write(f"$ {redact(' '.join(cmd))}\n")
            fh.flush()
            with (
                stdin.open("rb") if stdin else open(os.devnull, "rb") as inp,
                stdout.open("wb") if stdout else open(os.devnull, "wb") as out,
            ):
                try:
                    proc = subprocess.run(
                        cmd,
                        stdin=inp,
                        stdout=out if stdout else fh,
                        stderr=fh,
                        env=self._tool_env(),
                        timeout=TOOL_TIMEOUT_S,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise DatabaseError(f"{Path(cmd[0]).name} timed out after {TOOL_TIMEOUT_S:.0f}s") from exc
        if proc.returncode != 0:
            raise DatabaseError(f"{Path(cmd[0]).name} exited with code {proc.returncode} (see {log.name})")
        return time.monotonic() - started

    @abstractmethod
    def dump(self, database: str, dest: Path, log: Path) -> float: ...

    @abstractmethod
    def restore(self, database: str, src: Path, log: Path) -> float: ...

    product_name: ClassVar[str]
    list_sql: ClassVar[str]
    password_env: ClassVar[str]  # how the product's command-line tools take a password

    @staticmethod
    def quote(name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"unsafe database name {name!r}")
        return name

    def close(self) -> None:
        """Stop what the harness started (nothing, for a user's server)."""
        self.dispose()


class Postgres(DatabaseServer):
    backend = "postgres"
    scheme = "postgresql+psycopg2"  # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3
    product_name = "PostgreSQL"
    list_sql = "SELECT datname FROM pg_database"
    password_env = "PGPASSWORD"

    def _conn_args(self, database: str) -> list[str]:
        u = self.admin_url
        return [
            "-h",
            u.host or HOST,
            "-p",
            str(u.port or 5432),
            "-U",
            u.username or "postgres",
            "-d",
            database,
        ]

    def dump(self, database: str, dest: Path, log: Path) -> float:
        return self._run_tool([_pg_tool("pg_dump"), *self._conn_args(database), "-Fc", "-f", str(dest)], log)

    def restore(self, database: str, src: Path, log: Path) -> float:
        self.drop(database)
        self.create(database)
        return self._run_tool(
            [_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", *self._conn_args(database), str(src)],
            log,
        )

    def drop(self, database: str) -> None:
        with self._engine.connect() as con:
            con.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": database},
            )
            con.execute(sa.text(f"DROP DATABASE IF EXISTS {self.quote(database)}"))


class MySQL(DatabaseServer):
    backend = "mysql"
    scheme = "mysql+pymysql"
    product_name = "MySQL"
    list_sql = "SHOW DATABASES"
    password_env = "MYSQL_PWD"
    # As a DBA would create it: a server's own default may be latin1 (mariadbd --no-defaults is), which
    # refuses any non-Latin text MLflow is sent; that would be the harness's fault, not MLflow's.
    create_options = " CHARACTER SET utf8mb4"

    def _conn_args(self) -> list[str]:
        u = self.admin_url
        return ["--protocol=TCP", "-h", u.host or HOST, "-P", str(u.port or 3306), "-u", u.username or "root"]

    def dump(self, database: str, dest: Path, log: Path) -> float:
        tool = _maria_tool("mariadb-dump", "mysqldump")
        return self._run_tool(
            [tool, *self._conn_args(), "--single-transaction", "--routines", "--databases", database],
            log,
            stdout=dest,
        )

    def restore(self, database: str, src: Path, log: Path) -> float:
        self.drop(database)
        return self._run_tool([_maria_tool("mariadb", "mysql"), *self._conn_args()], log, stdin=src)


# -- servers the harness starts itself ---------------------------------------------------------------
def _as_unprivileged() -> list[str]:
    """initdb and postgres refuse to run as root: as root, they run as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise DatabaseError("running as root needs a `postgres` user to run PostgreSQL as") from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise DatabaseError("running as root needs runuser to start PostgreSQL as `postgres`")
    return [runuser, "-u", "postgres", "--"]


class _Local:
    """A database server process in a temp directory of its own, on 127.0.0.1, gone after ``close``."""

    name: ClassVar[str]
    dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    prefix: tuple[str, ...] = ()  # runs the server's programs as another user where needed

    def __init__(self, root: Path | None = None) -> None:
        port = self.boot(root)
        try:
            super().__init__(self.admin_url_for(port))  # type: ignore[call-arg] - the product class
        except BaseException:
            self.shutdown()
            raise

    def close(self) -> None:
        self.dispose()  # type: ignore[attr-defined]
        self.shutdown()

    def admin_url_for(self, port: int) -> URL:
        raise NotImplementedError

    def crash(self) -> None:
        """Kill the server's process group at once, keeping its data directory (a crash, for fault tests)."""
        if self.proc is not None:
            procs.stop(self.proc, grace=0)

    def restart(self) -> None:
        """Start the server again on its data directory and port, after a crash."""
        port = self.admin_url.port  # type: ignore[attr-defined]
        self.proc = procs.spawn([*self.prefix, *self.serve_command(self.dir / "data", port)],
                                env=dict(os.environ), log=self.log)  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while _wait_port(port, self.proc) and time.monotonic() < deadline:
            try:  # the port opens before crash recovery lets anyone log in
                with self._engine.connect() as con:  # type: ignore[attr-defined]
                    con.execute(sa.text("SELECT 1"))
                return
            except sa.exc.SQLAlchemyError:
                time.sleep(0.3)
        raise DatabaseError(f"{self.name} did not restart: {procs.tail(self.log, 5)}")

    def init_command(self, data: Path) -> list[str]:
        raise NotImplementedError

    def serve_command(self, data: Path, port: int) -> list[str]:
        raise NotImplementedError

    def stop_command(self, data: Path) -> list[str] | None:
        """A graceful stop, tried before the process group is killed."""
        return None

    def boot(self, root: Path | None) -> int:
        """Initialise a data directory, start the server on a free port (retrying a taken one); the port."""
        self.dir = owner.mkdtemp(f"mlflow-compat-{self.name}-", root)
        self.log = self.dir / f"{self.name}.log"
        data = self.dir / "data"
        if self.prefix:
            shutil.chown(self.dir, "postgres")
        try:
            # Initialising is retried once on a fresh data directory: seen failing once in CI under load
            # (two runs at once, each bootstrapping a MariaDB), its cause lost with the directory.
            for attempt in (1, 2):
                code, _ = procs.run(
                    [*self.prefix, *self.init_command(data)], env=dict(os.environ), log=self.log, timeout=120
                )
                if code == 0:
                    break
                why = _init_errors(self.log) or procs.tail(self.log, 5)
                if attempt == 2:
                    raise DatabaseError(f"initialising {self.name} failed twice (exit code {code}): {why}")
                with self.log.open("a") as fh:
                    fh.write(f"\n[mlflow-compat] initialising failed (exit code {code}); once more, afresh\n")
                shutil.rmtree(data, ignore_errors=True)
            for _ in range(3):
                port = procs.free_port(HOST)
                self.proc = procs.spawn(
                    [*self.prefix, *self.serve_command(data, port)], env=dict(os.environ), log=self.log
                )
                if _wait_port(port, self.proc):
                    return port
                procs.stop(self.proc)
            raise DatabaseError(f"{self.name} did not start: {procs.tail(self.log, 5)}")
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        if (
            self.proc is not None
            and self.proc.poll() is None
            and (cmd := self.stop_command(self.dir / "data"))
        ):
            procs.run([*self.prefix, *cmd], env=dict(os.environ), log=self.log, timeout=30)
        if self.proc is not None:
            procs.stop(self.proc, grace=15)
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalPostgres(_Local, Postgres):
    """PostgreSQL from the installed server binaries, trust authentication (as root: run as `postgres`)."""

    name = "pg"

    def __init__(self, root: Path | None = None) -> None:
        self.prefix = tuple(_as_unprivileged())
        super().__init__(root)

    def admin_url_for(self, port: int) -> URL:
        return URL.create(self.scheme, username="postgres", host=HOST, port=port, database="postgres")

    def init_command(self, data: Path) -> list[str]:
        return [
            _pg_tool("initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]

    def serve_command(self, data: Path, port: int) -> list[str]:
        return [
            _pg_tool("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            HOST,
            "-k",
            str(self.dir),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]

    def stop_command(self, data: Path) -> list[str]:
        return [_pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "20", "stop"]


class LocalMariaDB(_Local, MySQL):
    """MariaDB (or a real mysqld, where installed), passwordless root over TCP."""

    name = "mariadb"

    def admin_url_for(self, port: int) -> URL:
        return URL.create(self.scheme, username="root", host=HOST, port=port)

    def init_command(self, data: Path) -> list[str]:
        return [
            _maria_tool("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]

    def serve_command(self, data: Path, port: int) -> list[str]:
        return [
            _maria_tool("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={self.dir / 'mysql.sock'}",
            f"--port={port}",
            f"--bind-address={HOST}",
            "--user=root",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0",
            "--max-connections=300",
        ]


def _init_errors(log: Path) -> str:
    """The lines of an initialisation log that say what went wrong (its tail is often boilerplate)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "; ".join(line.strip() for line in lines if "ERROR" in line or "FATAL" in line)[-1500:]


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> bool:
    import socket

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return True
        time.sleep(0.1)
    return False


# -- choosing -----------------------------------------------------------------------------------------
SERVERS: dict[str, type[DatabaseServer]] = {"postgres": Postgres, "mysql": MySQL}
LOCAL: dict[str, type[LocalPostgres | LocalMariaDB]] = {"postgres": LocalPostgres, "mysql": LocalMariaDB}
URL_ENV = {"postgres": "MLFLOW_COMPAT_POSTGRES_URL", "mysql": "MLFLOW_COMPAT_MYSQL_URL"}


def parse_admin_url(backend: str, text: str) -> URL:
    """A user's server URL; raises ValueError with one line on anything malformed."""
    try:
        url = make_url(text)
    except Exception as exc:
        raise ValueError(f"--{backend}-url is not a database URL: {redact(text)}") from exc
    family = url.drivername.split("+")[0]
    expected = {"postgres": ("postgresql", "postgres"), "mysql": ("mysql", "mariadb")}[backend]
    if family not in expected:
        raise ValueError(f"--{backend}-url must be a {expected[0]}:// URL, not {family}://")
    if not url.host:
        raise ValueError(f"--{backend}-url has no host: {redact(text)}")
    drivername = SERVERS[backend].scheme
    return url.set(drivername=drivername)


def connect(backend: str, url: URL) -> DatabaseServer:
    """A handle on a running server (the user's, or one this run started and published by URL)."""
    return SERVERS[backend](url)


def start_local(backend: str, root: Path | None = None) -> DatabaseServer:
    """Start a throwaway server for ``backend`` in a new directory under ``root`` (default: the temp dir)."""
    return LOCAL[backend](root)


# -- servers in containers (the docker runtime) -------------------------------------------------------
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image cannot be pulled offline


class _Container:
    """A database server in a container (testcontainers). With host networking it listens on a free
    127.0.0.1 port; on a bridge network it listens on its default port under its container ``name`` (how
    server containers reach it) and is published on a free 127.0.0.1 port (how the harness reaches it)."""

    image: str
    default_port: ClassVar[int]
    container: Any = None

    def __init__(
        self, image: str, labels: dict[str, str], network: str | None = None, name: str | None = None
    ):
        self.image = image
        port = self.boot(image, labels, network, name)
        super().__init__(self.probe_url(port))  # type: ignore[call-arg] - the product class (Postgres, MySQL)

    def probe_url(self, port: int) -> URL:
        raise NotImplementedError

    def close(self) -> None:
        self.dispose()  # type: ignore[attr-defined]
        self.shutdown()

    def container_spec(self, port: int, ours: bool, bind: str) -> tuple[dict[str, str], list[str]]:
        raise NotImplementedError

    def boot(
        self, image: str, labels: dict[str, str], network: str | None = None, name: str | None = None
    ) -> int:
        from testcontainers.core.container import DockerContainer

        from harness import images

        ours = images.client().images.get(image).labels.get("mlflow-compat.image") is not None
        labels = {**labels, owner.LABEL: owner.token()}
        for _ in range(3):
            port = procs.free_port(HOST)
            if network is None:
                env, command = self.container_spec(port, ours, HOST)
                kwargs: dict[str, Any] = {"network_mode": "host", "labels": labels}
            else:
                env, command = self.container_spec(self.default_port, ours, "0.0.0.0")
                kwargs = {"network": network, "labels": labels}
            container = DockerContainer(image).with_kwargs(**kwargs)
            if network is not None:
                container = container.with_name(name)
                # Published on loopback only; testcontainers' with_bind_ports cannot say which address.
                container.ports[f"{self.default_port}/tcp"] = (HOST, port)
            for key, value in env.items():
                container = container.with_env(key, value)
            if command:
                container = container.with_command(command)
            self.container = container.start()
            if _wait_sql(self, port):
                return port
            self.container.stop()
        raise DatabaseError(f"{image} did not accept connections")

    def shutdown(self) -> None:
        if self.container is not None:
            self.container.stop()  # testcontainers stops and removes it
            self.container = None


def _wait_sql(server: Any, port: int) -> bool:
    """Ready means a real login works (the port opens before the server accepts logins)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    url = server.probe_url(port)
    while time.monotonic() < deadline:
        wrapped = server.container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status == "exited":
            return False
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as con:
                con.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            time.sleep(0.3)
        finally:
            engine.dispose()
    return False


class DockerPostgres(_Container, Postgres):
    default_port = 5432

    def probe_url(self, port: int) -> URL:
        return URL.create(self.scheme, username="postgres", host=HOST, port=port, database="postgres")

    def container_spec(self, port: int, ours: bool, bind: str) -> tuple[dict[str, str], list[str]]:
        if ours:
            return {"PGPORT": str(port), "PGLISTEN": bind}, []
        return {"POSTGRES_HOST_AUTH_METHOD": "trust"}, [
            "postgres",
            "-p",
            str(port),
            "-c",
            f"listen_addresses={bind}",
        ]


class DockerMySQL(_Container, MySQL):
    default_port = 3306

    def probe_url(self, port: int) -> URL:
        return URL.create(self.scheme, username="root", host=HOST, port=port)

    def container_spec(self, port: int, ours: bool, bind: str) -> tuple[dict[str, str], list[str]]:
        if ours:
            return {"MARIADB_PORT": str(port), "MARIADB_BIND": bind}, []
        return {"MYSQL_ALLOW_EMPTY_PASSWORD": "yes", "MYSQL_ROOT_HOST": "%"}, [
            f"--port={port}",
            f"--bind-address={bind}",
        ]


def start_container(
    backend: str, image: str, labels: dict[str, str], network: str | None = None, name: str | None = None
) -> DatabaseServer:
    """A database container: host networking when ``network`` is None, else on that bridge network."""
    cls: type[DockerPostgres | DockerMySQL] = DockerPostgres if backend == "postgres" else DockerMySQL
    return cls(image, labels, network, name)
