"""The basic-auth app as a cell feature: every server of an auth cell runs `mlflow server --app-name
basic-auth` with an auth database of its own, on the same kind of backend as the tracking store (a SQLite
file in the store's workdir for the file and SQLite stores; a second database on the run's PostgreSQL or
MySQL server, made for the cell and dropped at its end), configured as each version's docs say: a
`basic_auth.ini` named by MLFLOW_AUTH_CONFIG_PATH, with the keys that version's mlflow/server/auth/config.py
reads (2.x: default_permission, database_uri, admin_username, admin_password, authorization_function, all
required but the last; 3.x reads the same keys, admin_password optional since MLflow stopped shipping one,
and ignores what it does not know), and MLFLOW_FLASK_SERVER_SECRET_KEY set as the docs require. Every client
process gets the admin's credentials (MLFLOW_TRACKING_USERNAME/PASSWORD), so every scenario runs as admin;
scenarios/auth.py creates the users and permissions and checks what each user can do.

The auth database is migrated by the servers themselves: each version's auth app runs its alembic
migrations when it starts (`SqlAlchemyStore.init_db` -> `migrate_if_needed`; MLflow also documents
`python -m mlflow.server.auth db upgrade --url URL`, which runs the same migrations). After every server
start of the cell (`on_started`) the auth schema's revision is recorded (`alembic_version_auth` from 3.6;
a 2.x auth database keeps it in `alembic_version`, its own database's table), and when it changed across
that stretch of the timeline, every auth row that existed before (at the backup taken before the upgrade, or
the state a restore put back) must still be there, unchanged: a lost or changed row fails, named with its
table and key (harness.integrity's comparison, over every table of the auth database). The auth database is
backed up and restored with the store (SQLite's backup API; the product's dump tools).

What does not live here: the users, permissions and the matrix of what each may do (scenarios/auth.py),
when servers start and backups happen (harness/cell.py), how a server command line is put together
(harness/server.py).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa

from harness import integrity
from harness.backends import DatabaseError, StoreError, database_name
from harness.databases import DatabaseServer
from harness.features import Site
from harness.features._base import ServerSetup, ServerView
from harness.results import Check, Status
from harness.versions import MlflowVersion

ADMIN_USERNAME = "admin"
# Not MLflow's old shipped default (password1234): 3.x refuses logins with that one.
ADMIN_PASSWORD = "compat-Admin-secret-2026"
DEFAULT_PERMISSION = "READ"  # the documented default, so that an explicit NO_PERMISSIONS grant matters
SECRET_KEY = "mlflow-compat-auth-secret"
VERSION_TABLES = ("alembic_version_auth", "alembic_version")  # 3.6+ first; 2.x's auth DB uses the default


def auth_revision(url: str | sa.URL) -> tuple[str | None, str | None]:
    """The auth schema's revision and the table it was read from; (None, None) before the schema exists."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            present = set(sa.inspect(con).get_table_names())
            for table in VERSION_TABLES:
                if table in present:
                    return con.execute(sa.text(f"SELECT version_num FROM {table}")).scalar(), table
            return None, None
    finally:
        engine.dispose()


def auth_snapshot(url: str | sa.URL) -> integrity.Snapshot:
    """Every table of the auth database (users, permissions, and whatever later schemas add: roles, role
    permissions, workspace permissions...) read in full, as harness.integrity compares snapshots."""
    revision, _ = auth_revision(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            names = sorted(t for t in sa.inspect(con).get_table_names() if t not in VERSION_TABLES)
            return integrity.Snapshot(revision, integrity.read_tables(con, names))
    finally:
        engine.dispose()


class AuthFeature:
    """The basic-auth app and its database for one cell (see the module docstring)."""

    name = "auth"

    def __init__(self, site: Site) -> None:
        self.site = site
        self.dir = site.store.workdir / "auth"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.backend = site.store.backend
        self.server_db: DatabaseServer | None = None
        self.database = ""
        if self.backend in ("postgres", "mysql"):
            server = site.databases.get(self.backend)
            if server is None:
                raise StoreError(f"auth: no {self.backend} server for the auth database")
            self.server_db = server
            self.database = database_name(site.run_id, f"{site.slug}-auth")
            try:
                server.create(self.database)
            except (sa.exc.SQLAlchemyError, DatabaseError) as exc:
                raise StoreError(f"auth: cannot create database {self.database}: {exc}") from exc
        # The auth rows as they were before the stretch of the timeline that leads to the next server start
        # (taken at the first backup after a start, or after a restore); None: nothing to compare with.
        self.before: integrity.Snapshot | None = None

    # -- where the auth database is ------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.dir / "basic_auth.db"

    @property
    def url(self) -> str | sa.URL:
        """The auth database as this machine reaches it."""
        if self.server_db is not None:
            return self.server_db.url_for(self.database)
        return f"sqlite:///{self.db_path}"

    def server_url(self, view: ServerView) -> str:
        """The auth database as a server seen through ``view`` reaches it (with the password)."""
        if self.server_db is not None:
            return view.reach(self.backend, self.server_db.mlflow_uri(self.database))
        return f"sqlite:///{view.workdir / 'auth' / 'basic_auth.db'}"

    def exists(self) -> bool:
        if self.server_db is not None:
            return True
        return self.db_path.exists()

    # -- the Feature protocol --------------------------------------------------------------------
    def server(self, version: MlflowVersion, view: ServerView) -> ServerSetup:
        ini = self.dir / f"basic_auth-{version}.ini"
        ini.write_text(
            "[mlflow]\n"
            f"default_permission = {DEFAULT_PERMISSION}\n"
            f"database_uri = {self.server_url(view).replace('%', '%%')}\n"
            f"admin_username = {ADMIN_USERNAME}\n"
            f"admin_password = {ADMIN_PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        ini.chmod(0o644)
        return ServerSetup(
            env={
                "MLFLOW_AUTH_CONFIG_PATH": str(view.workdir / "auth" / ini.name),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
            },
            server_app="basic-auth",
        )

    def client_env(self, version: MlflowVersion) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": ADMIN_USERNAME, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}

    def on_started(self, phase: str, version: MlflowVersion) -> list[Check]:
        check = Check("auth-db", phase, Status.PASS, server=str(version))
        before, self.before = self.before, None
        try:
            revision, table = auth_revision(self.url) if self.exists() else (None, None)
            if revision is None:
                check.status = Status.FAIL
                check.detail = "the basic-auth app started without an auth schema (no alembic revision)"
                return [check]
            check.detail = f"auth schema at {revision} ({table})"
            if before is None:
                return [check]
            if before.revision == revision:
                check.detail += f"; unchanged across the start ({before.row_count()} auth rows before)"
                return [check]
            report = integrity.compare(before, auth_snapshot(self.url))
            check.detail += f"; migrated on start from {before.revision}: {report.summary()}"
            check.fail_each(report.differences)
        except sa.exc.SQLAlchemyError as exc:
            check.status, check.detail = Status.ERROR, f"cannot read the auth database: {exc}"
        return [check]

    def _remember(self) -> None:
        self.before = auth_snapshot(self.url) if self.exists() else None

    def backup(self, dest: Path) -> None:
        try:
            if self.before is None:
                self._remember()
            if self.server_db is not None:
                self.server_db.dump(self.database, dest / "dump", self.dir / "db-tools.log")
            elif self.db_path.exists():
                with (
                    closing(sqlite3.connect(self.db_path)) as src,
                    closing(sqlite3.connect(dest / "basic_auth.db")) as out,
                ):
                    src.backup(out)
        except (OSError, sqlite3.Error, DatabaseError, sa.exc.SQLAlchemyError) as exc:
            raise StoreError(f"auth database backup failed: {exc}") from exc

    def restore(self, src: Path) -> None:
        try:
            if self.server_db is not None:
                self.server_db.restore(self.database, src / "dump", self.dir / "db-tools.log")
            else:
                self.db_path.unlink(missing_ok=True)
                if (src / "basic_auth.db").exists():
                    with (
                        closing(sqlite3.connect(src / "basic_auth.db")) as back,
                        closing(sqlite3.connect(self.db_path)) as out,
                    ):
                        back.backup(out)
            self._remember()
        except (OSError, sqlite3.Error, DatabaseError, sa.exc.SQLAlchemyError) as exc:
            raise StoreError(f"auth database restore failed: {exc}") from exc

    def describe(self) -> dict[str, str]:
        where = (
            {**self.server_db.describe(), "database": self.database}
            if self.server_db is not None
            else {"product": "SQLite", "version": sqlite3.sqlite_version, "database": "auth/basic_auth.db"}
        )
        return {
            **where,
            "app": "basic-auth",
            "admin": ADMIN_USERNAME,
            "default_permission": DEFAULT_PERMISSION,
        }

    def close(self) -> None:
        if self.server_db is None:
            return
        try:
            self.server_db.drop(self.database)
        except (sa.exc.SQLAlchemyError, DatabaseError) as exc:
            raise StoreError(f"auth database {self.database} could not be dropped: {exc}") from exc


def open(site: Site) -> AuthFeature:
    return AuthFeature(site)
