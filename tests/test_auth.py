"""The basic-auth app as a cell feature (harness/features/auth.py, scenarios/auth.py), on real servers.

A real auth cell on SQLite (2.22.5 -> 3.17.2) passes except for what is declared (the incompatibilities
MLflow 3.17's RBAC rework brought: harness/data/expectations.toml); a permission raised in the auth
database behind the clients' backs is caught by the reads as a leak naming the user and the endpoint, and a
permission row deleted between the backup and the migration on start is caught by the auth-db check.
The ini each version gets is read back by that version's own config reader.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from harness.backends import Store, new_store
from harness.envs import EnvCache
from harness.features import PACKAGES as FEATURE_PACKAGES
from harness.features import Site, local_view
from harness.features import auth as auth_feature
from harness.results import CellResult, Status
from harness.specs import parse_spec
from tests.conftest import require_docker, run_cli
from tests.test_cells import run_one

pytestmark = pytest.mark.cell

# What the declarations of 3.17's RBAC rework cover (harness/data/expectations.toml), and nothing else.
RBAC_DECLARED = {
    "auth-3.17-grant-api-on-2.x-server",
    "auth-3.17-manage-probe-on-2.x-server",
    "auth-2.x-auth-client-on-3.17-server",
    "auth-2.x-manage-api-refused-by-3.17-server",
    "auth-3.17-drops-no-permissions-grants",
}


def run_auth_cell(
    tmp_path: Path,
    backend: str = "sqlite",
    path: str = "2.22.5:3.17.2",
    tamper=None,
    databases=None,
    scenarios: tuple[str, ...] = ("quickstart", "auth"),
) -> CellResult:
    """A real auth cell with the shipped declarations (tests/test_cells.py's run_one checks that both its
    databases, tracking and auth, are dropped again)."""
    return run_one(tmp_path, backend, path, tamper=tamper, databases=databases, scenarios=scenarios,
                   declared=True, auth=True)  # fmt: skip


def by_name(result: CellResult, name: str) -> list:
    return [c for c in result.checks if c.name == name]


def check_of(
    result: CellResult, phase: str, name: str, scenario: str | None = None, client: str | None = None
):
    found = [
        c
        for c in result.checks
        if (c.phase, c.name) == (phase, name)
        and (scenario is None or c.scenario == scenario)
        and (client is None or c.client == client)
    ]
    assert len(found) == 1, (phase, name, scenario, client, [c.label() for c in result.checks])
    return found[0]


def test_auth_cell_on_sqlite_passes_but_for_the_declared(tmp_path: Path) -> None:
    result = run_auth_cell(tmp_path)
    bad = [f"{c.label()}: {c.detail}" for c in result.checks if c.status in (Status.FAIL, Status.ERROR)]
    assert not bad, bad
    assert result.status is Status.XFAIL, result.summary
    declared = {i for c in result.checks if c.status is Status.XFAIL for i in (c.expected or "").split(", ")}
    assert declared - {""} == RBAC_DECLARED, declared
    # Every server ran the auth app on its own auth database, migrated by the 3.17.2 server on start.
    assert result.components["features"]["auth"]["product"] == "SQLite"
    assert check_of(result, "before", "auth-db").detail == "auth schema at 8606fa83a998 (alembic_version)"
    after = check_of(result, "after", "auth-db")
    assert after.status is Status.PASS
    assert after.detail.startswith(
        "auth schema at f1a2b3c4d5e6 (alembic_version_auth); migrated on start from 8606fa83a998: all "
    )
    assert "role_permissions" in after.detail
    assert check_of(result, "rollback", "auth-db").detail.startswith(
        "auth schema at 8606fa83a998 (alembic_version); unchanged across the start"
    )
    # Each version's users do exactly what their permissions allow on its own server, and after the restore.
    assert check_of(result, "before", "read", "auth", "2.22.5").status is Status.PASS
    # The NO_PERMISSIONS leak, on the record 2.22.5 wrote; 3.17.2's own record (its DENY grants) reads back.
    leak = check_of(result, "after", "read", "auth", "3.17.2")
    assert leak.status is Status.XFAIL and leak.problems
    assert all("(before)" in p.text and "NO_PERMISSIONS user" in p.text for p in leak.problems)
    assert check_of(result, "rollback", "restore-read", "auth", "2.22.5").status is Status.PASS
    # Every other scenario ran as the admin.
    assert all(c.status is Status.PASS for c in result.checks if c.scenario == "quickstart")


def _auth_db(store: Store) -> Path:
    return store.workdir / "auth" / "basic_auth.db"


def _tamper_auth(point: str, store: Store) -> None:
    """Behind the clients' backs: at before-upgrade the READ user of the record written before gets MANAGE
    on its experiment (a permission leak every later read must show); at before-db-upgrade, after the
    upgrade's backup, the EDIT user's registered-model permission row is deleted (as if the migration on
    start lost it)."""
    if point not in ("before-upgrade", "before-db-upgrade"):
        return
    with closing(sqlite3.connect(_auth_db(store))) as con, con:
        if point == "before-upgrade":
            done = con.execute(
                "UPDATE experiment_permissions SET permission = 'MANAGE' WHERE user_id IN "
                "(SELECT id FROM users WHERE username LIKE 'compat-%-read')"
            ).rowcount
        else:
            done = con.execute(
                "DELETE FROM registered_model_permissions WHERE user_id IN "
                "(SELECT id FROM users WHERE username LIKE 'compat-%-edit')"
            ).rowcount
        assert done == 1, (point, done)


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> CellResult:
    return run_auth_cell(tmp_path_factory.mktemp("tampered"), tamper=_tamper_auth, scenarios=("auth",))


def test_a_raised_permission_is_a_leak_naming_user_and_endpoint(tampered: CellResult) -> None:
    assert tampered.status is Status.FAIL
    for phase, client in (("after", "3.17.2"), ("rollback", "2.22.5")):
        name = "restore-read" if phase == "rollback" else "read"
        check = check_of(tampered, phase, name, "auth", client)
        assert check.status is Status.FAIL, check.detail
        leaks = [p.text for p in check.problems if "READ user compat-" in p.text and p.status is Status.FAIL]
        assert any(
            "['POST /api/2.0/mlflow/experiments/delete']: 'allowed', expected 'refused: 403'" in text
            for text in leaks
        ), leaks
    # Before the tampering the same reads passed.
    assert check_of(tampered, "before", "read", "auth", "2.22.5").status is Status.PASS


def test_a_row_lost_across_the_migration_on_start_fails_the_auth_db_check(tampered: CellResult) -> None:
    check = check_of(tampered, "after", "auth-db")
    assert check.status is Status.FAIL, check.detail
    assert "migrated on start from 8606fa83a998" in check.detail
    lines = check.excerpt.splitlines()
    assert len(lines) == 1 and lines[0].startswith("registered_model_permissions row (id=")
    assert lines[0].endswith("missing after the upgrade"), lines
    # The raised permission happened before the upgrade's backup: not the migration's doing, not flagged.
    assert not any("experiment_permissions" in line for line in lines)


@pytest.mark.parametrize("version", ["2.22.5", "3.17.2"])
def test_each_version_reads_the_ini_it_is_given(tmp_path: Path, version: str) -> None:
    """The ini written for a version is read by that version's own config reader, key by key."""
    env = EnvCache().ensure(parse_spec(version), tmp_path / "env.log", packages=FEATURE_PACKAGES["auth"])
    store = new_store("sqlite", tmp_path / "store", servers={}, run_id="t", cell_slug="t", unavailable={})
    feature = auth_feature.open(Site(slug="t", run_id="t", store=store, databases={}))
    setup = feature.server(env.version, local_view(store.workdir))
    assert setup.server_app == "basic-auth"
    code = (
        "from mlflow.server.auth.config import read_auth_config as r; c = r(); "
        "print(c.default_permission, c.database_uri, c.admin_username, c.admin_password)"
    )
    out = subprocess.run(
        [str(env.bin / "python"), "-c", code],
        env={**os.environ, **env.environ(), **setup.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [
        "READ",
        f"sqlite:///{store.workdir}/auth/basic_auth.db",
        "admin",
        auth_feature.ADMIN_PASSWORD,
    ]
    assert feature.client_env(env.version) == {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": auth_feature.ADMIN_PASSWORD,
    }


@pytest.mark.slow
def test_auth_cell_on_postgres_keeps_its_auth_database_beside_the_store(tmp_path: Path, databases) -> None:
    result = run_auth_cell(tmp_path, "postgres", databases=databases, scenarios=("auth",))
    bad = [f"{c.label()}: {c.detail}" for c in result.checks if c.status in (Status.FAIL, Status.ERROR)]
    assert not bad, bad
    assert result.components["features"]["auth"]["product"] == "PostgreSQL"
    assert check_of(result, "after", "auth-db").detail.startswith(
        "auth schema at f1a2b3c4d5e6 (alembic_version_auth); migrated on start from 8606fa83a998: all "
    )


# -- docker ----------------------------------------------------------------------------------------------
@pytest.mark.docker
def test_auth_cell_under_docker_on_a_bridge(tmp_path: Path) -> None:
    """Servers in containers run the auth app (its Flask-WTF reached the images through the envs'
    requirements), read their ini at the store's mount, and reach the auth database on the PostgreSQL
    container by its name on the run's bridge network; the outcome is the local one, as declared."""
    require_docker()
    results = tmp_path / "results"
    proc = run_cli("run", "--runtime", "docker", "--docker-network", "bridge", "--backend", "postgres",
                   "--path", "2.22.5:3.17.2", "--auth", "--scenarios", "quickstart,auth",
                   "--results-dir", str(results))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(((results / "latest").resolve() / "results.json").read_text())
    (cell,) = data["cells"]
    assert cell["id"] == "postgres:2.22.5->3.17.2[auth]" and cell["runtime"] == "docker"
    assert cell["status"] == "xfail", cell["summary"]
    declared = {e for c in cell["checks"] for e in (c.get("expected") or "").split(", ") if e}
    assert declared == RBAC_DECLARED, cell["summary"]
    auth_db = [c for c in cell["checks"] if c["name"] == "auth-db"]
    assert auth_db and all(c["status"] == "pass" for c in auth_db), auth_db
    assert cell["components"]["features"]["auth"]["product"] == "PostgreSQL"
