"""The mysql backend: MySQL or MariaDB (same dialect and driver), its URL forms, tools (mariadb-dump and the
mariadb client, or their mysql names), local and container recipes.

Only what is the product's own lives here; where a server runs (a user's, a local process, a container) is
harness.databases and harness.runtime.docker, and the store protocol is harness.backends._stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.backends._base import HOST, LocalRecipe, SqlProduct, SqlServer, find_any_tool, run_tool
from harness.backends._descriptor import Backend
from harness.backends._stores import DatabaseStore


def _tool(*names: str) -> str:
    return find_any_tool(names, ["/usr/sbin", "/usr/libexec"])


class LocalMariaDB(LocalRecipe):
    """MariaDB (or a real mysqld, where installed), passwordless root over TCP."""

    name = "mariadb"

    def init_command(self, data: Path) -> list[str]:
        return [_tool("mariadb-install-db", "mysql_install_db"), "--no-defaults", f"--datadir={data}",
                "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"]  # fmt: skip

    def serve_command(self, data: Path, port: int, rundir: Path) -> list[str]:
        return [_tool("mariadbd", "mysqld"), "--no-defaults", f"--datadir={data}",
                f"--socket={rundir / 'mysql.sock'}", f"--port={port}", f"--bind-address={HOST}",
                "--user=root", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0",
                "--max-connections=300",
                # Which tables `mlflow db upgrade` holds metadata locks on, in scale cells (harness/scale.py):
                # MariaDB's plugin, lighter than performance_schema; a server without it starts all the same.
                "--plugin-load-add=metadata_lock_info"]  # fmt: skip


class MySQL(SqlProduct):
    backend = "mysql"
    product_name = "MySQL"
    scheme = "mysql+pymysql"
    families = ("mysql", "mariadb")
    default_port = 3306
    default_image = "mysql:8.4"
    bootstrap_image = "mlflow-compat/mariadb:10.11"
    bootstrap_template = "mariadb"
    admin_user = "root"
    password_env = "MYSQL_PWD"
    env_prefixes = ("PG", "MYSQL")
    list_sql = "SHOW DATABASES"
    # As a DBA would create it: a server's own default may be latin1 (mariadbd --no-defaults is), which
    # refuses any non-Latin text MLflow is sent; that would be the harness's fault, not MLflow's.
    create_options = " CHARACTER SET utf8mb4"
    local = LocalMariaDB()

    def identify(self, version: str) -> tuple[str, str]:
        if "mariadb" in version.lower():
            return "MariaDB", "standing in for MySQL (same dialect and driver)"
        return self.product_name, ""

    @staticmethod
    def _tools(server: SqlServer) -> tuple[tuple[str, str], tuple[str, str]]:
        """The dump and client programs to use on ``server``, its own product's first: MySQL's
        mysqldump/mysql for a real MySQL (a MariaDB client may not speak its default authentication), the
        mariadb names for MariaDB; the other names where only those are installed."""
        mariadb = (("mariadb-dump", "mysqldump"), ("mariadb", "mysql"))
        if server.describe()["product"] == "MariaDB":
            return mariadb
        return (("mysqldump", "mariadb-dump"), ("mysql", "mariadb"))

    def _conn_args(self, server: SqlServer) -> list[str]:
        u = server.admin_url
        return ["--protocol=TCP", "-h", u.host or HOST, "-P", str(u.port or 3306), "-u", u.username or "root"]

    def dump(self, server: SqlServer, database: str, dest: Path, log: Path) -> float:
        cmd = [_tool(*self._tools(server)[0]), *self._conn_args(server), "--single-transaction",
               "--routines", "--databases", database]  # fmt: skip
        return run_tool(cmd, log, self.tool_env(server.admin_url), stdout=dest)

    def restore(self, server: SqlServer, database: str, src: Path, log: Path) -> float:
        server.drop(database)
        cmd = [_tool(*self._tools(server)[1]), *self._conn_args(server)]
        return run_tool(cmd, log, self.tool_env(server.admin_url), stdin=src)

    def container_spec(self, port: int, ours: bool, bind: str) -> tuple[dict[str, str], list[str]]:
        if ours:
            return {"MARIADB_PORT": str(port), "MARIADB_BIND": bind}, []
        return {"MYSQL_ALLOW_EMPTY_PASSWORD": "yes", "MYSQL_ROOT_HOST": "%"}, [
            f"--port={port}",
            f"--bind-address={bind}",
        ]


@dataclass
class MySQLStore(DatabaseStore):
    backend: ClassVar[str] = "mysql"


BACKEND = Backend(name="mysql", order=40, store=MySQLStore, product=MySQL())
