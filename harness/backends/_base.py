"""What a SQL server product is (`SqlProduct`), and the helpers products share.

A backend module (harness/backends/<name>.py) declares one `BACKEND = Backend(...)` (harness.backends.
_descriptor) and, for a database server, names its product: the URL scheme and the URL
families `--<name>-url` accepts, the default port and docker image, the bootstrap image recipe, how a
database is created, listed, dropped, dumped and restored with the product's own tools, how a throwaway
local server is initialised, served and stopped, and how a container of it is configured. Here live the
shapes and the helpers products share (finding and running a command-line tool); not any one product,
and not where a server runs (a user's server, a local process, a container: harness.databases and
harness.runtime.docker combine a product with such a placement).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import URL

from harness.procs import redact

HOST = "127.0.0.1"
TOOL_TIMEOUT_S = 600.0


class DatabaseError(RuntimeError):
    """The database server or one of its tools failed: infrastructure, never an MLflow verdict."""


class SqlServer(Protocol):
    """What a product sees of a running server (harness.databases.DatabaseServer is one)."""

    admin_url: URL

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def create(self, database: str) -> None: ...

    def drop(self, database: str) -> None: ...

    def describe(self) -> dict[str, str]: ...  # product, version, server, note


# -- command-line tools -----------------------------------------------------------------------------------
def find_tool(name: str, extra_dirs: list[str]) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/") + f"/{name}"), reverse=True):
            return str(candidate)
    raise DatabaseError(f"`{name}` is not installed")


def find_any_tool(names: tuple[str, ...], extra_dirs: list[str]) -> str:
    for name in names:
        try:
            return find_tool(name, extra_dirs)
        except DatabaseError:
            continue
    raise DatabaseError(f"none of {', '.join(names)} is installed")


def run_tool(
    cmd: list[str], log: Path, env: dict[str, str], *, stdin: Path | None = None, stdout: Path | None = None
) -> float:
    """Run a product's tool, its command line (redacted) and output into ``log``; the seconds it took."""
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
                    env=env,
                    timeout=TOOL_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise DatabaseError(f"{Path(cmd[0]).name} timed out after {TOOL_TIMEOUT_S:.0f}s") from exc
    if proc.returncode != 0:
        raise DatabaseError(f"{Path(cmd[0]).name} exited with code {proc.returncode} (see {log.name})")
    return time.monotonic() - started


# -- a throwaway server process ---------------------------------------------------------------------------
class LocalRecipe(ABC):
    """How a product runs as a throwaway process: initialise a data directory, serve it, stop it."""

    name: str  # names its temp directory and log ("pg", "mariadb")

    def prefix(self) -> list[str]:
        """What runs the server's programs as another user where needed (nothing by default)."""
        return []

    def data_owner(self) -> str | None:
        """Who must own the server's directory (the user ``prefix`` runs it as), or None."""
        return None

    @abstractmethod
    def init_command(self, data: Path) -> list[str]: ...

    @abstractmethod
    def serve_command(self, data: Path, port: int, rundir: Path) -> list[str]:
        """Serve ``data`` on 127.0.0.1:``port``; ``rundir`` holds its sockets."""

    def stop_command(self, data: Path) -> list[str] | None:
        """A graceful stop, tried before the process group is killed."""
        return None


# -- a product ----------------------------------------------------------------------------------------------
class SqlProduct(ABC):
    """A SQL server product: everything about it that does not depend on where the server runs."""

    backend: str  # the harness backend it serves
    product_name: str  # what the report calls it
    scheme: str  # the SQLAlchemy/MLflow URL scheme
    families: tuple[str, ...]  # URL families `--<backend>-url` accepts; the first is the one to name
    default_port: int  # where it listens inside a container on a bridge network
    default_image: str  # the official image the docker runtime uses by default
    bootstrap_image: str | None  # the tag (before its recipe digest) of the image bootstrapped from Debian
    bootstrap_template: (
        str | None
    )  # its Dockerfile (harness/templates/docker/<name>.Dockerfile.j2); None: none
    admin_user: str  # who the harness logs in as on a server it started
    admin_database: str | None = None  # the database it logs in to there
    password_env: str  # how the product's command-line tools take a password
    env_prefixes: tuple[str, ...] = ()  # the tools' own variables, dropped from their environment
    list_sql: str
    version_sql: str = "SELECT version()"
    create_options: str = ""
    local: LocalRecipe | None = None  # None: the harness cannot start one itself

    # -- URLs ----------------------------------------------------------------------------------------------
    def admin_url_at(self, host: str, port: int) -> URL:
        """The admin URL of a server the harness started (a local process, a container)."""
        return URL.create(
            self.scheme, username=self.admin_user, host=host, port=port, database=self.admin_database
        )

    @staticmethod
    def quote(name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"unsafe database name {name!r}")
        return name

    # -- databases -------------------------------------------------------------------------------------
    def create(self, server: SqlServer, database: str) -> None:
        server.execute(f"CREATE DATABASE {self.quote(database)}{self.create_options}")

    def drop(self, server: SqlServer, database: str) -> None:
        server.execute(f"DROP DATABASE IF EXISTS {self.quote(database)}")

    def identify(self, version: str) -> tuple[str, str]:
        """The product and a note for the report, from what the server says its version is."""
        return self.product_name, ""

    # -- backups -------------------------------------------------------------------------------------------
    def tool_env(self, admin_url: URL) -> dict[str, str]:
        """The dump tools' environment: the password goes there, never onto a command line."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.env_prefixes)}
        if admin_url.password:
            env[self.password_env] = str(admin_url.password)
        return env

    @abstractmethod
    def dump(self, server: SqlServer, database: str, dest: Path, log: Path) -> float: ...

    @abstractmethod
    def restore(self, server: SqlServer, database: str, src: Path, log: Path) -> float: ...

    # -- in a container ---------------------------------------------------------------------------------
    @abstractmethod
    def container_spec(self, port: int, ours: bool, bind: str) -> tuple[dict[str, str], list[str]]:
        """The environment and command of a container serving on ``bind``:``port``; ``ours``: the image is
        the bootstrapped one (configured by its own variables), else the official one."""
