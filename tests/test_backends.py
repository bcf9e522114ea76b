"""The backends as descriptors: the registry finds one module per backend, each descriptor agrees with itself,
and a backend that cannot run here (the mssql skeleton) is refused with one line before anything starts.

Pure units, except the last test, which runs the real command line (it must refuse at once).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from harness import backends, databases, fields
from harness.backends import BACKENDS, DATABASE_BACKENDS, DatabaseStore, StoreError, backend_names, new_store
from tests.conftest import REPO, run_cli

MSSQL_REFUSAL = "mssql: no server available on this machine"
TEMPLATES = REPO / "harness" / "templates" / "docker"


def test_the_registry_finds_one_module_per_backend_in_report_order() -> None:
    modules = sorted(p.stem for p in (REPO / "harness" / "backends").glob("[!_]*.py"))
    assert sorted(BACKENDS) == modules == ["file", "file_to_sqlite", "mssql", "mysql", "postgres", "sqlite"]
    assert (
        backend_names()
        == ["file", "file_to_sqlite", "sqlite", "postgres", "mysql", "mssql"]
        == backends.backend_order()
    )
    assert DATABASE_BACKENDS == ("postgres", "mysql", "mssql")
    assert sorted(fields.BACKENDS) == modules, (
        "the fields table knows every backend, read from the same files"
    )


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_descriptor_is_consistent(name: str) -> None:
    b = BACKENDS[name]
    assert b.name == name and b.label == name and b.store.backend == name
    assert [x.order for x in BACKENDS.values()] == sorted({x.order for x in BACKENDS.values()}), "distinct"
    if b.product is None:
        assert not issubclass(b.store, DatabaseStore) and name in ("file", "file_to_sqlite", "sqlite")
        return
    p = b.product
    assert issubclass(b.store, DatabaseStore) and p.backend == name
    assert p.scheme.split("+")[0] in p.families, "the scheme's own family is accepted for --X-url"
    assert 0 < p.default_port < 65536 and p.default_image and p.list_sql and p.password_env
    url = p.admin_url_at("127.0.0.1", 4321)
    assert url.drivername == p.scheme and url.port == 4321 and url.username == p.admin_user
    if p.bootstrap_template is not None:
        assert (TEMPLATES / f"{p.bootstrap_template}.Dockerfile.j2").is_file() and p.bootstrap_image
    # A user's URL in each accepted family becomes the product's scheme; another family is refused.
    for family in p.families:
        assert (
            databases.parse_admin_url(name, f"{family}://u:pw@db.example:{p.default_port}/").drivername
            == p.scheme
        )
    with pytest.raises(ValueError, match=f"--{name}-url must be a {p.families[0]}:// URL, not sqlite://"):
        databases.parse_admin_url(name, "sqlite:///x.db")
    env, _ = p.container_spec(p.default_port, False, "0.0.0.0")
    assert isinstance(env, dict)
    assert name in b.url_help() and p.default_image in b.image_help()


def test_only_mssql_refuses_and_says_why_in_one_line() -> None:
    assert BACKENDS["mssql"].unavailable() == MSSQL_REFUSAL
    assert [n for n, b in BACKENDS.items() if b.unavailable() is not None] == ["mssql"]
    with pytest.raises(databases.DatabaseError, match="cannot start a local server"):
        databases.start_local("mssql")  # no local recipe: nothing is started


def test_a_database_store_without_a_server_says_why(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^no postgres server for this run: none was configured$"):
        new_store("postgres", tmp_path, servers={}, run_id="r", cell_slug="c")
    why = {"mysql": "the local server did not start: boom"}
    with pytest.raises(
        StoreError, match=r"^no mysql server for this run: the local server did not start: boom$"
    ):
        new_store("mysql", tmp_path, servers={}, run_id="r", cell_slug="c", unavailable=why)
    assert new_store("sqlite", tmp_path / "s", servers={}, run_id="r", cell_slug="c").uri.endswith(
        "mlflow.db"
    )


def test_the_mssql_skeleton_speaks_its_products_language() -> None:
    p = BACKENDS["mssql"].product
    assert p is not None
    url = databases.parse_admin_url("mssql", "mssql://sa:pw@sql.example:1433/master")
    assert url.drivername == "mssql+pyodbc" and make_url(str(url)).host == "sql.example"
    assert (p.default_port, p.default_image) == (1433, "mcr.microsoft.com/mssql/server:2022-latest")
    assert p.bootstrap_template is None and p.local is None


def test_cli_refuses_mssql_with_one_line_before_starting_anything(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_cli("run", "--backend", "mssql", "--path", "2.22.5:3.17.2", "--runtime", "local",
                   "--results-dir", str(tmp_path / "results"), timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].endswith(MSSQL_REFUSAL), proc.stderr
    assert not (tmp_path / "results").exists(), "refused before anything was created"
    assert time.monotonic() - started < 60


def test_a_users_server_is_never_crashed_or_restarted_by_the_harness() -> None:
    server = databases.connect(
        "postgres", databases.parse_admin_url("postgres", "postgresql://u:pw@db.example/x")
    )
    assert isinstance(server.placement, databases.UserServer) and server.backend == "postgres"
    for action in (server.crash, server.restart):
        with pytest.raises(databases.DatabaseError, match=r"u:\*\*\*@db.example.* is not a local server"):
            action()
    server.close()  # releases the handle only; nothing to stop
