"""The postgres backend: PostgreSQL, its URL forms, tools (pg_dump/pg_restore), local and container recipes.

Only what is PostgreSQL's own lives here; where a server runs (a user's, a local process, a container) is
harness.databases and harness.runtime.docker, and the store protocol is harness.backends._stores.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.backends._base import (
    HOST,
    DatabaseError,
    LocalRecipe,
    SqlProduct,
    SqlServer,
    find_tool,
    run_tool,
)
from harness.backends._descriptor import Backend
from harness.backends._stores import DatabaseStore


def _tool(name: str) -> str:
    return find_tool(name, ["/usr/lib/postgresql/*/bin"])


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


class LocalPostgres(LocalRecipe):
    """PostgreSQL from the installed server binaries, trust authentication (as root: run as `postgres`)."""

    name = "pg"

    def prefix(self) -> list[str]:
        return _as_unprivileged()

    def data_owner(self) -> str | None:
        return "postgres" if self.prefix() else None

    def init_command(self, data: Path) -> list[str]:
        return [_tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]

    def serve_command(self, data: Path, port: int, rundir: Path) -> list[str]:
        return [_tool("postgres"), "-D", str(data), "-p", str(port), "-h", HOST, "-k", str(rundir),
                "-c", "fsync=off", "-c", "max_connections=200"]  # fmt: skip

    def stop_command(self, data: Path) -> list[str]:
        return [_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "20", "stop"]


class Postgres(SqlProduct):
    backend = "postgres"
    product_name = "PostgreSQL"
    scheme = "postgresql+psycopg2"  # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3
    families = ("postgresql", "postgres")
    default_port = 5432
    default_image = "postgres:17"
    bootstrap_image = "mlflow-compat/postgres:15"
    bootstrap_template = "postgres"
    admin_user = "postgres"
    admin_database = "postgres"
    password_env = "PGPASSWORD"
    env_prefixes = ("PG", "MYSQL")
    list_sql = "SELECT datname FROM pg_database"
    local = LocalPostgres()

    def _conn_args(self, server: SqlServer, database: str) -> list[str]:
        u = server.admin_url
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

    def drop(self, server: SqlServer, database: str) -> None:
        server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d", {"d": database}
        )
        super().drop(server, database)

    def dump(self, server: SqlServer, database: str, dest: Path, log: Path) -> float:
        cmd = [_tool("pg_dump"), *self._conn_args(server, database), "-Fc", "-f", str(dest)]
        return run_tool(cmd, log, self.tool_env(server.admin_url))

    def restore(self, server: SqlServer, database: str, src: Path, log: Path) -> float:
        server.drop(database)
        server.create(database)
        cmd = [
            _tool("pg_restore"),
            "--no-owner",
            "--exit-on-error",
            *self._conn_args(server, database),
            str(src),
        ]
        return run_tool(cmd, log, self.tool_env(server.admin_url))

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


@dataclass
class PostgresStore(DatabaseStore):
    backend: ClassVar[str] = "postgres"


BACKEND = Backend(name="postgres", order=30, store=PostgresStore, product=Postgres())
