"""Faults injected for real into whole runs: Ctrl-C mid-run, and a run killed outright then swept by `clean`.

Each test starts the real CLI in a session of its own, waits until clients are writing to real servers,
injects the fault, and then looks at the machine itself (processes, containers, networks, temporary
directories, databases, ports) for anything the run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness import images, owner, procs
from harness.results import Status
from harness.runtime.docker import LABEL_RUN
from tests.conftest import REPO
from tests.test_cells import checks, run_one

pytestmark = [pytest.mark.cell, pytest.mark.fault]

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
    """The CLI in a session of its own, as a terminal runs it in a foreground process group: with SIGINT's
    default action, whatever this test inherited (a shell without job control starts background commands
    with SIGINT ignored, and Python then installs no KeyboardInterrupt for it)."""
    out = (tmp_path / "cli.out").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--results-dir", str(tmp_path / "results"), *args],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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
    # CLI-launched servers: a forked one is ended by its fork server, which sees the killed run's end of the
    # pipe close (tests/test_serverfork.py); a CLI one is left for `clean` to sweep, which is tested here.
    proc = start_cli(tmp_path, "--runtime", runtime, "--backend", "mysql", "--path", "2.22.5:3.17.2",
                     "--server-launch", "cli")  # fmt: skip
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


# -- faults inside a cell ---------------------------------------------------------------------------------
def processes_under(path: Path) -> list[str]:
    """Processes whose working directory or command line is inside ``path`` (a cell's servers and clients)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc_dir / "cwd")
        except OSError:
            cwd = ""
        line = command_line(proc_dir)
        if cwd.startswith(str(path)) or str(path) in line:
            found.append(f"{proc_dir.name}: {line}")
    return found


def when_a_client_writes(cell_dir: Path, then: Callable[[], None]) -> threading.Thread:
    """Call ``then`` half a second after the first client of the `before` phase started writing."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if list((cell_dir / "logs").glob("before-write-*.log")):
                time.sleep(0.5)
                then()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_server_killed_mid_write_is_an_error_never_a_failure(tmp_path: Path) -> None:
    killed: list[int] = []

    def on_server(phase: str, server) -> None:
        if phase == "before" and not killed:
            cell_dir = Path(server.log).parent.parent
            when_a_client_writes(cell_dir, lambda: (killed.append(server.proc.pid),
                                                    os.killpg(server.proc.pid, signal.SIGKILL)))  # fmt: skip

    result = run_one(tmp_path, "sqlite", "1.30.1:2.22.5", on_server=on_server)
    assert killed, "the fault happened"
    statuses = {c.status for c in result.checks}
    assert result.status is Status.ERROR and Status.FAIL not in statuses, checks(result, Status.FAIL)
    died = next(c for c in result.checks if c.name == "server-alive")
    assert died.phase == "before" and "exited during the phase" in died.detail and died.logs
    lost = [c for c in result.checks if c.phase == "before" and c.name in ("write", "read")
            and c.status is Status.ERROR]  # fmt: skip
    # Told apart on the wire: the calls got no answer at all (refused, reset), never a status from MLflow.
    unanswered = all("no answer from the server to " in c.detail for c in lost)
    assert lost and unanswered, checks(result, Status.ERROR)
    assert any(c.phase == "after" and c.status is Status.PASS for c in result.checks), "the cell went on"
    assert processes_under(tmp_path) == []


def test_database_crash_during_db_upgrade_is_an_error_and_the_backup_restores(tmp_path: Path) -> None:
    from harness.databases import start_local

    root = owner.mkdtemp("mlflow-compat-fault-pg-")
    root.chmod(0o755)
    pg = start_local("postgres", root)
    crashed: list[bool] = []
    crasher: list[threading.Thread] = []

    def crash_during_upgrade(point: str, store) -> None:
        """Hold alembic_version locked so that the upgrade, once it reaches the database, waits on it; then
        crash the server under the waiting upgrade. (Not a sleep: a forked upgrade is done in 0.3 s.)"""
        if point != "before-db-upgrade":
            return
        engine = sa.create_engine(store.sqlalchemy_url, poolclass=sa.pool.NullPool)
        holder = engine.connect()
        holder.begin()
        holder.execute(sa.text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))

        def crash_once_upgrade_waits() -> None:
            deadline = time.monotonic() + 120
            try:
                while time.monotonic() < deadline:
                    with engine.connect() as watcher:
                        waiting = watcher.execute(sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND pid <> pg_backend_pid()")).scalar()  # fmt: skip
                    if waiting:
                        pg.crash()
                        crashed.append(True)
                        return
                    time.sleep(0.05)
            finally:
                with contextlib.suppress(Exception):  # the server under it is gone
                    holder.close()
                engine.dispose()

        crasher.append(threading.Thread(target=crash_once_upgrade_waits, daemon=True))
        crasher[0].start()

    try:
        result = run_one(tmp_path, "postgres", "1.30.1:2.22.5", tamper=crash_during_upgrade,
                         databases=_Only(pg), keep_store=True, scenarios=("quickstart",))  # fmt: skip
        crasher[0].join(timeout=30)
        assert crashed, "the fault happened"
        upgrade = next(c for c in result.checks if c.name == "db-upgrade")
        assert upgrade.status is Status.ERROR, upgrade.detail
        assert "the database no longer answers" in upgrade.detail
        assert result.status is Status.ERROR and not checks(result, Status.FAIL)
        teardown = next(c for c in result.checks if c.name == "teardown")
        assert "could not be dropped" in teardown.detail  # said, not swallowed
        # The backup taken before the upgrade is intact: it restores into a database on the restarted server.
        pg.restart()
        dump = next(tmp_path.glob("mlflow-compat-*/backups/before-upgrade/dump"))
        pg.restore("restored", dump, tmp_path / "restore.log")
        engine = sa.create_engine(pg.url_for("restored"), poolclass=sa.pool.NullPool)
        with engine.connect() as con:
            revision = con.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            params = con.execute(sa.text("SELECT COUNT(*) FROM params WHERE key = 'learning_rate'")).scalar()
        engine.dispose()
        assert revision == "97727af70f4d" and params == 2  # 1.30.1's schema, both clients' runs
    finally:
        pg.close()
        shutil.rmtree(root, ignore_errors=True)
    assert processes_under(tmp_path) == [] and processes_under(root) == []


class _Only(dict):
    """The `databases` fixture's interface, for one server a test started itself."""

    def __init__(self, server) -> None:
        super().__init__(postgres=server)

    def get_server(self, backend: str):
        return self[backend]


def test_a_taken_port_is_retried_and_the_cell_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.runtime import local

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    handed: list[int] = []
    real = local.procs.free_port

    def first_one_taken(host: str = "127.0.0.1") -> int:
        port = taken if not handed else real(host)
        handed.append(port)
        return port

    monkeypatch.setattr(local.procs, "free_port", first_one_taken)
    try:
        result = run_one(tmp_path, "sqlite", "1.30.1:2.22.5", scenarios=("quickstart",))
    finally:
        blocker.close()
    assert handed[0] == taken and len(handed) > 1
    assert result.status is Status.PASS, result.summary
    log = next((tmp_path / result.dir).glob("logs/before-server-*.log")).read_text()
    assert "Address already in use" in log or "Connection in use" in log, "the first start really hit it"
    assert processes_under(tmp_path) == []


def test_a_hanging_client_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    hang = tmp_path / "hang.py"
    hang.write_text("import time\nimport mlflow\n\nmlflow.log_param('before', 'hanging')\ntime.sleep(3600)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--results-dir", str(tmp_path / "results"), "--runtime",
         "local", "--backend", "sqlite", "--path", "1.30.1:2.22.5", "--scenarios", "quickstart",
         "--scenario", str(hang)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "MLFLOW_COMPAT_CLIENT_TIMEOUT": "25"},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr  # infrastructure only
    run_dir = (tmp_path / "results" / "latest").resolve()
    (cell,) = json.loads((run_dir / "results.json").read_text())["cells"]
    timed_out = [c for c in cell["checks"] if c["status"] == "error"]
    assert timed_out and all("client timed out after 25s" in c["detail"] for c in timed_out)
    assert {c["phase"] for c in timed_out} >= {"before", "after"}, "every phase still ran"
    assert any(c["name"] == "db-upgrade" and c["status"] == "pass" for c in cell["checks"])
    assert processes_under(tmp_path) == [], "the hung client's process group was killed"


def test_two_runs_at_once_do_not_collide(tmp_path: Path) -> None:
    """Two runs on one machine, one results directory, one env cache: each starts its own MariaDB, picks its
    own ports, names its own databases and directories; both pass."""
    results = tmp_path / "results"
    args = ["--runtime", "local", "--backend", "mysql", "--backend", "sqlite", "--path", "1.30.1:2.22.5",
            "--scenarios", "quickstart,metric_history", "-n", "1"]  # fmt: skip
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    procs_ = [start_cli(tmp_path / name, *args) for name in ("one", "two")]
    codes = [p.wait(timeout=900) for p in procs_]
    outputs = [(tmp_path / name / "cli.out").read_text(errors="replace") for name in ("one", "two")]
    assert codes == [0, 0], outputs
    runs = [next((tmp_path / name / "results").glob("2*")) for name in ("one", "two")]
    assert runs[0].name != runs[1].name
    ports = [set(server_ports(r)) for r in runs]
    assert ports[0] and ports[1] and not ports[0] & ports[1], "no server port was shared"
    for run_dir in runs:
        cells = json.loads((run_dir / "results.json").read_text())["cells"]
        assert len(cells) == 2 and {c["status"] for c in cells} == {"pass"}
    assert not results.exists()  # each wrote where it was told


@pytest.mark.cell
def test_a_harness_bug_inside_a_step_leaves_that_step_an_error_never_a_pass(tmp_path: Path) -> None:
    """An exception the harness did not expect, raised inside the db-upgrade step (planted through the
    tamper hook there): the step that never finished reads `error` with the exception, the cell says
    "harness error", and nothing after it ran as if it had passed."""

    def bug(point: str, store) -> None:
        if point == "before-db-upgrade":
            raise ValueError("planted harness bug")

    result = run_one(tmp_path, "sqlite", "1.30.1:2.22.5", tamper=bug, scenarios=("quickstart",))
    upgrade = next(c for c in result.checks if c.name == "db-upgrade")
    assert upgrade.status is Status.ERROR
    assert upgrade.detail == "harness error: ValueError: planted harness bug"
    harness = next(c for c in result.checks if c.name == "harness")
    assert harness.status is Status.ERROR and "planted harness bug" in harness.detail
    assert result.status is Status.ERROR and not checks(result, Status.FAIL)
    assert not [c for c in result.checks if c.phase == "after"]  # the cell ended there
