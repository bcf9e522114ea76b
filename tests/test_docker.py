"""The docker runtime, for real: server images per MLflow version, databases in containers, isolation.

Needs a Docker engine (CI starts one, see .ci/run) and images built by `nox -s images -- --bootstrap
1.30.1 2.22.5 3.17.2` (built here on demand otherwise). Under CI these tests fail rather than skip without
one. Every server version of the default matrix (1.30.1, 2.22.5, 3.17.2) runs as a container in at least
one cell here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import images, scenarios
from harness.backends import new_store
from harness.clients import run_driver
from harness.envs import EnvCache
from harness.runtime.docker import LABEL_RUN, MOUNT, DockerRuntime, has_bridge
from harness.specs import parse_spec
from tests.conftest import require_docker, run_cli

pytestmark = [pytest.mark.cell, pytest.mark.docker]


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    require_docker()


def our_containers(run_id: str) -> list[str]:
    return [
        c.name for c in images.client().containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    ]


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_docker_cells_swap_server_containers_across_the_upgrade(tmp_path: Path, network: str) -> None:
    """A 2.x -> 3.x server upgrade on Dockerised PostgreSQL and MariaDB, with host networking (as on a daemon
    without a bridge) and on a bridge network with published ports (the usual daemon)."""
    if network == "bridge" and not has_bridge():
        if os.environ.get("CI"):
            pytest.fail("CI must test bridge networking, but this engine has no bridge network")
        pytest.skip("this Docker engine has no bridge network")
    results = tmp_path / "results"
    proc = run_cli("run", "--results-dir", str(results), "--runtime", "docker", "--docker-network",
                   network, "--backend", "postgres", "--backend", "mysql", "--path", "2.22.5:3.17.2",
                   "-n", "2", "--scenarios", "quickstart,metric_history,registry,datasets")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = (results / "latest").resolve()
    data = json.loads((run_dir / "results.json").read_text())
    assert data["options"]["runtime"]["value"] == "docker"
    resolved = data["options"]["resolved"]
    assert "postgres_image" in resolved and "mysql_image" in resolved  # the images that really ran
    for cell in data["cells"]:
        assert cell["status"] == "pass", cell["summary"]
        assert cell["runtime"] == "docker"
        servers = cell["components"]["runtime"]
        old, new = servers["server image 2.22.5"], servers["server image 3.17.2"]
        assert old.startswith("mlflow-compat/mlflow:2.22.5-") and new.startswith(
            "mlflow-compat/mlflow:3.17.2-"
        )
        assert set(cell["components"]["artifact_modes"].values()) == {"proxied, in container"}
        assert servers["network"].startswith(
            "bridge network mlflow-compat-" if network == "bridge" else "host"
        )
        upgrade = next(c for c in cell["checks"] if c["name"] == "db-upgrade")
        assert upgrade["detail"].startswith("revision 0584bdc529eb -> dc11669786a5")
    products = {c["backend"]: c["components"]["backend"]["product"] for c in data["cells"]}
    assert products == {"postgres": "PostgreSQL", "mysql": "MariaDB"}
    assert our_containers(run_dir.name) == [], "every container of the run is removed"
    assert not images.client().networks.list(filters={"label": f"{LABEL_RUN}={run_dir.name}"})


def test_client_reaches_files_in_the_server_container_only_through_the_server(tmp_path: Path) -> None:
    env = EnvCache().ensure(parse_spec("2.22.5"), tmp_path / "env.log")
    store = new_store("sqlite", tmp_path / "store", servers={}, run_id="isolation", cell_slug="isolation")
    runtime = DockerRuntime({LABEL_RUN: "isolation-test"})
    server = runtime.start_server(env, store, tmp_path / "server.log")
    quickstart = scenarios.builtin()["quickstart"].to_plan()

    def client(step: str, plan: dict) -> dict:
        outcome = run_driver(env, step, plan, tracking_uri=server.url, out=tmp_path / f"{step}.json",
                             log=tmp_path / f"{step}.log", workdir=tmp_path / "scratch")  # fmt: skip
        assert outcome.ok, outcome.error
        (result,) = outcome.data["results"].values()
        assert result["ok"], result.get("traceback")
        return result

    try:
        record = client("write", {"scenarios": [quickstart], "tags": {}})["record"]
        run_id = record["run_id"]
        assert record["run"]["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
        # The artifact is on the server's filesystem, at a path that does not exist for the client ...
        code, out = server.container.exec_run(["find", f"{MOUNT}/artifacts", "-path", f"*/{run_id}/*"])
        assert code == 0 and out.decode().strip().endswith(f"{run_id}/artifacts/model_config.txt"), out
        assert not Path(str(MOUNT)).exists(), "the client's machine has no such path"
        scratch = [p for p in (tmp_path / "scratch").rglob("model_config.txt")]
        assert len(scratch) == 1, "the client wrote only its own upload copy in its scratch dir"
        scratch[0].unlink()
        # ... and the client still gets its bytes, through the server.
        plan = {"records": [{"key": "k", "scenario": quickstart, "record": record}]}
        observed = client("read", plan)["observed"]
        assert observed["run"]["artifacts"] == record["run"]["artifacts"]
        assert not list((tmp_path / "scratch").rglob("model_config.txt")), "downloads go to temp dirs only"
    finally:
        server.stop()
    assert our_containers("isolation-test") == []


def test_version_without_proxying_shares_one_declared_artifact_directory(tmp_path: Path) -> None:
    """MLflow 1.22 has no artifact proxying: its clients write where the server says, so that one directory
    is mounted at the same path in the container. The report declares it; the cell still passes end to end
    (a 1.30.1 server, then a 2.x server, each in a container of its own, serve those runs after each
    upgrade: the 1.30.1 image is the one whose env freeze once could not be installed)."""
    results = tmp_path / "results"
    # `latest`: as of their release 1.22.0 and 1.30.1 would run on Python 3.9 and 3.10, and without a registry
    # the bootstrapped base image has only 3.11.
    proc = run_cli("run", "--results-dir", str(results), "--runtime", "docker", "--backend", "sqlite",
                   "--path", "1.22.0:1.30.1:2.22.5", "--scenarios", "quickstart",
                   "--resolution", "latest")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = (results / "latest").resolve()
    (cell,) = json.loads((run_dir / "results.json").read_text())["cells"]
    assert cell["status"] == "pass", cell["summary"]
    modes = cell["components"]["artifact_modes"]
    assert modes["1.22.0"].startswith("direct (shared filesystem): /")
    assert modes["1.22.0"].endswith("bind-mounted at the same path in the container")
    assert modes["1.30.1"] == modes["2.22.5"] == "proxied, in container"
    servers = cell["components"]["runtime"]
    for version in ("1.22.0", "1.30.1", "2.22.5"):
        assert servers[f"server image {version}"].startswith(f"mlflow-compat/mlflow:{version}-")
    served = {
        (c["phase"], c["name"]) for c in cell["checks"] if c["server"] == "1.30.1" and c["status"] == "pass"
    }
    assert {("upgrade-1", "db-upgrade"), ("after-1", "server-start"), ("after-1", "write")} <= served, served
    logs = run_dir / "cells" / cell["dir"] / "logs"
    steps = [json.loads((logs / f"before-write-{c}.json").read_text()) for c in ("1.22.0", "2.22.5")]
    uris = [step["results"]["quickstart"]["record"]["run"]["info"]["artifact_uri"] for step in steps]
    assert all(uri.startswith("/") for uri in uris), uris  # a path on the shared disk, not mlflow-artifacts:/
    assert "bind-mounted at the same path" in (run_dir / "report.md").read_text()
    assert our_containers(run_dir.name) == []


def test_server_image_gets_what_the_envs_mlflow_needs_not_the_seed_packages(tmp_path: Path) -> None:
    """A uv-seeded env holds the newest `wheel` (0.48 needs packaging>=24) beside mlflow 1.30.1's
    packaging<22: the env runs, but the image's `pip install -r` of the whole freeze refuses the set. The
    image gets what the env was built from and everything that requires, at the env's versions; no more."""
    markers = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    dists = {
        "mlflow": ["packaging<22", "gunicorn; platform_system != 'Windows'", "uvicorn[standard]",
                   "waitress; sys_platform == 'win32'", "pytest; extra == 'dev'"],
        "packaging": [], "gunicorn": [], "waitress": [], "pytest": [], "pip": [], "Wheel": ["packaging>=24"],
        "uvicorn": ["click", "httptools; extra == 'standard'", "watchfiles; extra == 'full'"],
        "click": [], "httptools": [], "watchfiles": [], "setuptools": [],
    }  # fmt: skip
    kept = images.needed(["mlflow==1.30.1", "setuptools<70"], dists, markers)
    assert kept == {"mlflow", "packaging", "gunicorn", "uvicorn", "click", "httptools", "setuptools"}
    # The real env: its freeze has wheel and pip; the image's requirements do not, and they resolve.
    env = EnvCache().ensure(parse_spec("1.30.1"), tmp_path / "env.log")
    requirements = images._frozen(env, tmp_path).splitlines()
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"mlflow", "packaging", "setuptools", "sqlalchemy", "psycopg2-binary", "pymysql"} <= names
    assert not names & {"wheel", "pip"}, requirements
    assert "mlflow==1.30.1" in requirements and any(r.startswith("packaging==21.") for r in requirements)
