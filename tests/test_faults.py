"""Faults injected for real into whole runs: Ctrl-C mid-run, and a run killed outright then swept by `clean`.

Each test starts the real CLI in a session of its own, waits until clients are writing to real servers,
injects the fault, and then looks at the machine itself (processes, containers, networks, temporary
directories, databases, ports) for anything the run left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness import images, owner, procs
from harness.runtime.docker import LABEL_RUN
from tests.conftest import REPO

pytestmark = pytest.mark.cell

RUNTIMES = [
    pytest.param("local", id="local"),
    pytest.param("docker", id="docker", marks=pytest.mark.docker),
]


def need_engine(runtime: str) -> None:
    if runtime == "docker" and not images.engine_available():
        if os.environ.get("CI"):
            pytest.fail("CI must run the Docker tests, but no Docker engine answers")
        pytest.skip("no Docker engine answers on this machine")


def start_cli(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """The CLI in a session of its own, as a terminal runs it in a foreground process group."""
    out = (tmp_path / "cli.out").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--results-dir", str(tmp_path / "results"), *args],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout:.0f}s")


def clients_writing(results: Path, cells: int) -> Callable[[], bool]:
    """True once every cell has a client writing to its FROM server (so servers and databases are up)."""
    return lambda: len(list(results.glob("*/cells/*/logs/before-write-*.log"))) >= cells


def command_line(proc_dir: Path) -> str:
    try:
        return proc_dir.joinpath("cmdline").read_bytes().replace(b"\0", b" ")[:120].decode(errors="replace")
    except OSError:
        return "(gone)"


def leftovers(token: str, run_id: str) -> list[str]:
    """Everything on this machine that belongs to the run: processes, containers, networks, temp dirs."""
    found = [
        f"process {pid.name}: {command_line(pid)}"
        for pid in Path("/proc").iterdir()
        if pid.name.isdigit() and procs.stray_owner(int(pid.name)) == token
    ]
    found += [
        f"temp dir {path}"
        for path in Path(tempfile.gettempdir()).glob("mlflow-compat-*")
        if owner.of_dir(path) == token
    ]
    if images.engine_available():
        label = {"label": f"{LABEL_RUN}={run_id}"}
        found += [f"container {c.name}" for c in images.client().containers.list(all=True, filters=label)]
        found += [f"network {n.name}" for n in images.client().networks.list(filters=label)]
    return found


def server_ports(run_dir: Path) -> list[int]:
    ports = []
    for log in run_dir.glob("cells/*/logs/*-server-*.log"):
        for word in log.read_text(errors="replace").split():
            if word.startswith("http://127.0.0.1:"):
                ports.append(int(word.rsplit(":", 1)[1].strip("/")))
    return ports


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def databases_of(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as con:
        names = {r[0] for r in con.execute(sa.text("SELECT datname FROM pg_database"))}
    engine.dispose()
    return names


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ctrl_c_mid_run_stops_everything_and_keeps_results(tmp_path: Path, runtime: str, databases) -> None:
    """SIGINT to the run's process group while clients write: every process, container, network, temp dir
    and database of the run is gone when the CLI exits, and the results so far are kept, marked interrupted.
    Locally, PostgreSQL is the user's own server (the cell's database must be dropped) and MariaDB the run's
    own; under Docker, MariaDB is the run's container."""
    need_engine(runtime)
    args = ["--runtime", runtime, "--backend", "mysql", "--path", "2.22.5:3.17.2", "-n", "2",
            "--scenarios", "quickstart,metric_history"]  # fmt: skip
    pg, before = "", set()
    if runtime == "local":
        pg = databases.get_server("postgres").admin_url.render_as_string(hide_password=False)
        before = databases_of(pg)
        args += ["--backend", "postgres", "--postgres-url", pg]
    proc = start_cli(tmp_path, *args)
    token = owner.of_pid(proc.pid)
    cells = 2 if runtime == "local" else 1
    try:
        wait_for("client writing in every cell", clients_writing(tmp_path / "results", cells), 600, proc)
        run_dir = next((tmp_path / "results").glob("2*"))
        ports = server_ports(run_dir)
        assert ports and all(listening(p) for p in ports), "servers are up when Ctrl-C comes"
        assert leftovers(token, run_dir.name), "the run has started things (else this test proves nothing)"
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
        print(f"Ctrl-C to exit: {time.monotonic() - sent:.1f}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = (tmp_path / "cli.out").read_text(errors="replace")
    assert code == 3, output  # interrupted runs are errors, never passes
    assert leftovers(token, run_dir.name) == []
    assert not [p for p in ports if listening(p)], "no server port is still answering"
    if pg:
        assert databases_of(pg) == before, "the cell's database on the user's server was dropped"
    data = json.loads((run_dir / "results.json").read_text())
    assert data["interrupted"] is True
    assert (run_dir / "report.md").exists() and (run_dir / "junit.xml").exists()
    for cell in data["cells"]:
        assert cell["status"] == "error"
        assert any(c["name"] == "write" and c["status"] == "pass" for c in cell["checks"]) or any(
            c["name"] == "interrupted" for c in cell["checks"]
        )


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_clean_sweeps_a_killed_run_and_spares_live_ones(tmp_path: Path, runtime: str) -> None:
    """SIGKILL to the whole run (no cleanup can happen), then `mlflow-compat clean`: the dead run's
    servers, database, containers and temp dirs go; a live owner's process and temp dir stay."""
    need_engine(runtime)
    proc = start_cli(tmp_path, "--runtime", runtime, "--backend", "mysql", "--path", "2.22.5:3.17.2")
    token = owner.of_pid(proc.pid)
    try:
        wait_for("client writing", clients_writing(tmp_path / "results", 1), 600, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    run_dir = next((tmp_path / "results").glob("2*"))
    time.sleep(1)
    left = leftovers(token, run_dir.name)
    assert any(x.startswith("temp dir") for x in left), left
    if runtime == "docker":
        assert len([x for x in left if x.startswith("container")]) >= 2, left  # server and database
    else:
        assert len([x for x in left if x.startswith("process")]) >= 2, left  # server and MariaDB
    # Something of a live run (this test process) that clean must not touch.
    live_dir = owner.mkdtemp("mlflow-compat-live-")
    live = procs.spawn(["sleep", "600"], env=dict(os.environ), log=tmp_path / "live.log")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "harness.cli", "clean"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert leftovers(token, run_dir.name) == [], result.stdout
        assert live.poll() is None and live_dir.is_dir(), "clean touched a live owner's things"
    finally:
        procs.stop(live)
        shutil.rmtree(live_dir, ignore_errors=True)
