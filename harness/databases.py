"""Database servers for the SQL backends: one `DatabaseServer`, a product placed somewhere.

A `DatabaseServer` is a product (harness.backends: PostgreSQL, MySQL/MariaDB, ...) combined with a
placement: the user's own server (`UserServer`, from `--<backend>-url`; nothing there is touched but the
databases the run creates), a throwaway local process (`LocalProcess`, in a temp directory of its own,
always torn down), or a container (harness.runtime.docker's `DatabaseContainer`). It hands out one fresh
database per cell (`create`/`drop`), backs one up and restores it with the product's own tools, and says
what product and version it is. Passwords reach the dump tools through the environment (PGPASSWORD,
MYSQL_PWD); an MLflow server gets its store URI with the password in it, and every command line and URL
the harness writes down is redacted. What a product is lives in harness.backends; how long to wait for a
server, in harness.waiting; which servers a run starts, in harness.runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from harness import owner, procs
from harness.backends import product as product_of
from harness.backends._base import HOST, DatabaseError, LocalRecipe, SqlProduct
from harness.procs import redact
from harness.waiting import NotReady, PortOpen, Process, Sequence, SqlLogin, WaitStrategy, start_with_retries

START_TIMEOUT_S = 60.0

__all__ = ["DatabaseError", "DatabaseServer", "LocalProcess", "UserServer", "connect", "parse_admin_url",
           "redact", "start_local"]  # fmt: skip


class Placement(Protocol):
    """Where a server runs: the URL the harness reaches it at, and how to stop what was started for it."""

    admin_url: URL

    def close(self) -> None: ...


class UserServer:
    """A server the harness did not start (the user's, or one the run's controller published): nothing
    to stop."""

    def __init__(self, admin_url: URL) -> None:
        self.admin_url = admin_url

    def close(self) -> None:
        pass


def login_ready(admin_url: URL) -> WaitStrategy:
    """A database server is ready when its port accepts connections and then a real login works (after a
    crash, the port opens before recovery lets anyone in)."""
    port = PortOpen(admin_url.port or 0).with_poll_interval(0.1)
    return Sequence(port, SqlLogin(admin_url)).with_startup_timeout(START_TIMEOUT_S)


class LocalProcess:
    """A database server process in a temp directory of its own, on 127.0.0.1, gone after ``close``."""

    def __init__(self, product: SqlProduct, recipe: LocalRecipe, root: Path | None = None) -> None:
        self.product, self.recipe, self.name = product, recipe, recipe.name
        self.prefix = recipe.prefix()  # runs the server's programs as another user where needed
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = owner.mkdtemp(f"mlflow-compat-{self.name}-", root)
        self.log = self.dir / f"{self.name}.log"
        try:
            self._initialise()
            port = start_with_retries(self._serve, retry_if=lambda exc: isinstance(exc, NotReady))
        except NotReady as exc:
            why = procs.tail(self.log, 5)  # before close() removes the log with the directory
            self.close()
            raise DatabaseError(f"{self.name} did not start: {why}") from exc
        except BaseException:
            self.close()
            raise
        self.admin_url = product.admin_url_at(HOST, port)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def _initialise(self) -> None:
        if user := self.recipe.data_owner():
            shutil.chown(self.dir, user)
        # Initialising is retried once on a fresh data directory: seen failing once in CI under load (two
        # runs at once, each bootstrapping a MariaDB), its cause lost with the directory.
        for attempt in (1, 2):
            command = [*self.prefix, *self.recipe.init_command(self.data)]
            code, _ = procs.run(command, env=dict(os.environ), log=self.log, timeout=120)
            if code == 0:
                return
            why = _init_errors(self.log) or procs.tail(self.log, 5)
            if attempt == 2:
                raise DatabaseError(f"initialising {self.name} failed twice (exit code {code}): {why}")
            with self.log.open("a") as fh:
                fh.write(f"\n[mlflow-compat] initialising failed (exit code {code}); once more, afresh\n")
            shutil.rmtree(self.data, ignore_errors=True)

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        command = [*self.prefix, *self.recipe.serve_command(self.data, port, self.dir)]
        self.proc = procs.spawn(command, env=dict(os.environ), log=self.log)
        return self.proc

    def _serve(self, port: int) -> int:
        proc = self._spawn(port)
        try:
            login_ready(self.product.admin_url_at(HOST, port)).wait_until_ready(Process(proc.poll))
        except NotReady:
            procs.stop(proc)
            raise
        return port

    def crash(self) -> None:
        """Kill the server's process group at once, keeping its data directory (a crash, for fault tests);
        returns once no process of the group is left (a restart must not find the old postmaster)."""
        if self.proc is not None:
            procs.stop(self.proc, grace=0)
            procs.wait_group_gone(self.proc.pid, timeout=10)

    def restart(self) -> None:
        """Start the server again on its data directory and port, after a crash."""
        proc = self._spawn(self.admin_url.port or 0)
        try:
            login_ready(self.admin_url).wait_until_ready(Process(proc.poll))
        except NotReady as exc:
            raise DatabaseError(f"{self.name} did not restart: {procs.tail(self.log, 5)}") from exc

    def close(self) -> None:
        if (
            self.proc is not None
            and self.proc.poll() is None
            and (cmd := self.recipe.stop_command(self.data))
        ):
            procs.run([*self.prefix, *cmd], env=dict(os.environ), log=self.log, timeout=30)
        if self.proc is not None:
            procs.stop(self.proc, grace=15)
        shutil.rmtree(self.dir, ignore_errors=True)


class DatabaseServer:
    """A running server of ``product`` at ``placement``: databases per cell, backups, what it is."""

    def __init__(self, product: SqlProduct, placement: Placement) -> None:
        self.product = product
        self.placement = placement
        self.admin_url = placement.admin_url
        self._engine = sa.create_engine(
            self.admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )

    @property
    def backend(self) -> str:
        return self.product.backend

    @property
    def scheme(self) -> str:
        return self.product.scheme

    # -- databases ----------------------------------------------------------------------------
    def url_for(self, database: str) -> URL:
        return self.admin_url.set(drivername=self.product.scheme, database=database)

    def mlflow_uri(self, database: str) -> str:
        """The URI an MLflow server gets (with the password: pass it only to processes, never to logs)."""
        return self.url_for(database).render_as_string(hide_password=False)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._engine.connect() as con:
            con.execute(sa.text(sql), dict(params or {}))

    def create(self, database: str) -> None:
        self.product.create(self, database)

    def drop(self, database: str) -> None:
        self.product.drop(self, database)

    def databases(self) -> list[str]:
        with self._engine.connect() as con:
            return [r[0] for r in con.execute(sa.text(self.product.list_sql))]

    def describe(self) -> dict[str, str]:
        with self._engine.connect() as con:
            version = str(con.execute(sa.text(self.product.version_sql)).scalar())
        product, note = self.product.identify(version)
        return {"product": product, "version": version, "server": redact(str(self.admin_url)), "note": note}

    # -- backups ------------------------------------------------------------------------------
    def dump(self, database: str, dest: Path, log: Path) -> float:
        return self.product.dump(self, database, dest, log)

    def restore(self, database: str, src: Path, log: Path) -> float:
        return self.product.restore(self, database, src, log)

    # -- the server itself --------------------------------------------------------------------------
    def _local(self) -> LocalProcess:
        if not isinstance(self.placement, LocalProcess):
            raise DatabaseError(
                f"{self.backend} at {redact(str(self.admin_url))} is not a local server of this run"
            )
        return self.placement

    def crash(self) -> None:
        """Kill a local server at once, keeping its data (fault tests)."""
        self._local().crash()

    def restart(self) -> None:
        """Start a crashed local server again on its data directory and port."""
        self._local().restart()

    def dispose(self) -> None:
        self._engine.dispose()

    def close(self) -> None:
        """Stop what the harness started (nothing, for a user's server)."""
        self.dispose()
        self.placement.close()


def _init_errors(log: Path) -> str:
    """The lines of an initialisation log that say what went wrong (its tail is often boilerplate)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "; ".join(line.strip() for line in lines if "ERROR" in line or "FATAL" in line)[-1500:]


# -- choosing -----------------------------------------------------------------------------------------
def parse_admin_url(backend: str, text: str) -> URL:
    """A user's server URL; raises ValueError with one line on anything malformed."""
    product = product_of(backend)
    try:
        url = make_url(text)
    except Exception as exc:
        raise ValueError(f"--{backend}-url is not a database URL: {redact(text)}") from exc
    family = url.drivername.split("+")[0]
    if family not in product.families:
        raise ValueError(f"--{backend}-url must be a {product.families[0]}:// URL, not {family}://")
    if not url.host:
        raise ValueError(f"--{backend}-url has no host: {redact(text)}")
    return url.set(drivername=product.scheme)


def connect(backend: str, url: URL) -> DatabaseServer:
    """A handle on a running server (the user's, or one this run started and published by URL)."""
    return DatabaseServer(product_of(backend), UserServer(url))


def start_local(backend: str, root: Path | None = None) -> DatabaseServer:
    """Start a throwaway server for ``backend`` in a new directory under ``root`` (default: the temp dir)."""
    product = product_of(backend)
    if product.local is None:
        raise DatabaseError(f"{backend}: the harness cannot start a local server of {product.product_name}")
    placement = LocalProcess(product, product.local, root)
    try:
        return DatabaseServer(product, placement)
    except BaseException:
        placement.close()
        raise
