"""The mssql backend, a skeleton: Microsoft SQL Server as one more SQL product, declared but refused here.

It shows what a new backend takes: this file (a product, a store class, a descriptor), its test
(tests/test_backends.py) and, once it can run, a line in harness/data/matrix.toml. The descriptor refuses
(`unavailable()`): this machine has no SQL Server (no local server binaries, no pullable image, no ODBC
driver), so `--backend mssql` stops with that one line before anything starts. The dump and restore below
are sketched with sqlcmd's BACKUP/RESTORE, which write on the server's own disk: right for a local process,
unproven anywhere. Where a server runs lives elsewhere (harness.databases, harness.runtime.docker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.backends._base import HOST, SqlProduct, SqlServer, find_tool, run_tool
from harness.backends._descriptor import Backend
from harness.backends._stores import DatabaseStore


class MSSQL(SqlProduct):
    backend = "mssql"
    product_name = "Microsoft SQL Server"
    scheme = "mssql+pyodbc"
    families = ("mssql",)
    default_port = 1433
    default_image = "mcr.microsoft.com/mssql/server:2022-latest"
    bootstrap_image = None  # SQL Server has no Debian package to bootstrap an image from
    bootstrap_template = None
    admin_user = "sa"
    admin_database = "master"
    password_env = "SQLCMDPASSWORD"
    env_prefixes = ("SQLCMD",)
    list_sql = "SELECT name FROM sys.databases"
    version_sql = "SELECT @@VERSION"
    local = None  # no local-process recipe: SQL Server is not installed as a throwaway process here

    def _sqlcmd(self, server: SqlServer, query: str) -> list[str]:
        u = server.admin_url
        where = f"{u.host or HOST},{u.port or self.default_port}"
        return [find_tool("sqlcmd", ["/opt/mssql-tools18/bin", "/opt/mssql-tools/bin"]), "-S", where,
                "-U", u.username or self.admin_user, "-b", "-Q", query]  # fmt: skip

    def drop(self, server: SqlServer, database: str) -> None:
        name = self.quote(database)
        server.execute(
            f"IF DB_ID('{name}') IS NOT NULL ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE"
        )
        server.execute(f"DROP DATABASE IF EXISTS [{name}]")

    def dump(self, server: SqlServer, database: str, dest: Path, log: Path) -> float:
        query = f"BACKUP DATABASE [{self.quote(database)}] TO DISK = N'{dest}' WITH INIT"
        return run_tool(self._sqlcmd(server, query), log, self.tool_env(server.admin_url))

    def restore(self, server: SqlServer, database: str, src: Path, log: Path) -> float:
        server.drop(database)
        query = f"RESTORE DATABASE [{self.quote(database)}] FROM DISK = N'{src}' WITH REPLACE"
        return run_tool(self._sqlcmd(server, query), log, self.tool_env(server.admin_url))

    def container_spec(self, port: int, ours: bool, bind: str) -> tuple[dict[str, str], list[str]]:
        # The official image wants a strong sa password; a run would have to make one and put it in its
        # admin URL. Unproven: this backend refuses before any container starts.
        return {"ACCEPT_EULA": "Y", "MSSQL_TCP_PORT": str(port)}, []


@dataclass
class MssqlStore(DatabaseStore):
    backend: ClassVar[str] = "mssql"


BACKEND = Backend(
    name="mssql",
    order=50,
    store=MssqlStore,
    product=MSSQL(),
    refusal="mssql: no server available on this machine",
)
