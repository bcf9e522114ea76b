"""Server starts forked from a per-version server fork server (harness/serverfork.py,
scenarios/serverfork.py), against the real `mlflow server` CLI: real venvs, real SQLite stores, real
servers. Each test plants what the fork server exists to get right or to refuse: a schema refusal, a
setting read at import, a thread in the fork server, a dead fork server, a harness that dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import migration, owner, serverfork
from harness.backends import Store, new_store
from harness.envs import Env, EnvCache
from harness.features import ServerSetup
from harness.runtime.local import LocalRuntime, LocalServer
from harness.server import ServerStartError, StartFailure
from harness.specs import parse_spec
from harness.versions import MlflowVersion
from tests.test_clients import alive

pytestmark = pytest.mark.cell  # real MLflow servers


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Env]:
    log = tmp_path_factory.mktemp("env") / "env.log"
    return {v: EnvCache().ensure(parse_spec(v), log) for v in ("1.30.1", "2.22.5", "3.17.2")}


@pytest.fixture(autouse=True)
def private_fork_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test starts from no fork server and nothing learned (in memory or on disk), and ends with none."""
    serverfork.close_all()
    monkeypatch.setattr(serverfork, "_learned", {})
    monkeypatch.setattr(serverfork, "_learned_file", lambda: tmp_path / serverfork.LEARNED)
    yield
    serverfork.close_all()


def store(tmp_path: Path, name: str) -> Store:
    return new_store("sqlite", owner.mkdtemp(f"mlflow-compat-{name}-", tmp_path), servers={}, run_id="t",
                     cell_slug=name)  # fmt: skip


def gone(pid: int, grace: float = 5.0) -> bool:
    """Whether ``pid`` has ended (or is a zombie) within ``grace`` seconds."""
    return not alive(pid, grace)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def search(server: LocalServer) -> dict:
    body = json.dumps({"max_results": 10}).encode()
    request = urllib.request.Request(f"{server.url}/api/2.0/mlflow/experiments/search", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("version", ["1.30.1", "2.22.5", "3.17.2"])
def test_a_forked_server_answers_as_the_cli_one_and_stops_by_its_group(
    envs: dict[str, Env], tmp_path: Path, version: str
) -> None:
    env, where = envs[version], store(tmp_path, "same")
    cli = LocalRuntime("cli").start_server(env, where, tmp_path / "cli.log")  # creates the store's schema
    try:
        by_cli = search(cli)
    finally:
        cli.stop()
    fork = LocalRuntime("fork")
    first = fork.start_server(env, where, tmp_path / "fork.log")
    try:
        assert search(first) == by_cli  # the same store, read through the same version's REST API
        pid = first.proc.pid
        assert pid is not None
    finally:
        first.stop()
    assert gone(pid), "the web server's group was stopped"
    # 3.x CLIs export MLFLOW_SERVER_X_FRAME_OPTIONS, read at import: the first start in a fresh cache runs
    # the web server for real (and says why), and from the values learned the next one is forked.
    second = fork.start_server(env, where, tmp_path / "fork.log")
    second.stop()
    log = (tmp_path / "fork.log").read_text()
    if version.startswith("3."):
        assert first.launched == "exec", log
        assert "exec'd for real: read at import, and not as when this process imported: " \
               "MLFLOW_SERVER_X_FRAME_OPTIONS" in log  # fmt: skip
    else:
        assert first.launched == "fork", log
    assert second.launched == "fork", log
    assert f"forked from the MLflow {version} server fork server" in log.splitlines()[0]


def test_a_refusal_reads_the_same_in_both_launches(envs: dict[str, Env], tmp_path: Path) -> None:
    """A 1.30.1 server on a store at 3.17.2's schema refuses it in its CLI part; forked, the refusal is the
    CLI's own: the same kind, the same line, the same exit code."""
    where = store(tmp_path, "newer")
    LocalRuntime("cli").start_server(envs["3.17.2"], where, tmp_path / "create.log").stop()
    refusals = []
    for launch in ("cli", "fork"):
        with pytest.raises(ServerStartError) as caught:
            LocalRuntime(launch).start_server(envs["1.30.1"], where, tmp_path / f"{launch}.log")
        refusals.append((caught.value.kind, str(caught.value)))
    assert refusals[0][0] is StartFailure.REFUSED_SCHEMA
    assert refusals[0] == refusals[1], refusals


@dataclass
class Prometheus:
    """A feature that turns on the Prometheus exporter: the CLI exports prometheus_multiproc_dir, which
    the server reads when mlflow.server is imported."""

    directory: Path
    name: str = "prometheus"

    def server(self, version: MlflowVersion, view: object) -> ServerSetup:
        return ServerSetup(args=["--expose-prometheus", str(self.directory)])


def test_a_setting_read_at_import_gets_the_real_web_server(envs: dict[str, Env], tmp_path: Path) -> None:
    """Forking the pre-imported app would serve without the exporter (/metrics 404): the start is exec'd
    for real, and /metrics answers."""
    where = store(tmp_path, "prom")
    feature = Prometheus(tmp_path / "prom")
    server = LocalRuntime("fork").start_server(envs["1.30.1"], where, tmp_path / "s.log", [feature])  # type: ignore[list-item]
    try:
        status, body = get(f"{server.url}/metrics")
        assert server.launched == "exec"
        assert status == 200 and b"# HELP" in body, body[:300]
    finally:
        server.stop()
    assert (
        "read at import, and not as when this process imported: prometheus_multiproc_dir"
        in (tmp_path / "s.log").read_text()
    )


def test_a_fork_server_holding_a_thread_refuses_to_fork(
    envs: dict[str, Env], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread copied into a fork is half-alive there: a fork server that has one never forks, and the
    start is the harness's error (infrastructure), not the server's."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    with pytest.raises(ServerStartError) as caught:
        LocalRuntime("fork").start_server(envs["1.30.1"], store(tmp_path, "thread"), tmp_path / "s.log")
    assert caught.value.kind is StartFailure.LAUNCHER and caught.value.is_infrastructure
    assert "the server fork server has 2 threads" in str(caught.value)


def test_a_dead_fork_server_is_replaced(envs: dict[str, Env], tmp_path: Path) -> None:
    env, where = envs["1.30.1"], store(tmp_path, "dead")
    runtime = LocalRuntime("fork")
    runtime.start_server(env, where, tmp_path / "s.log").stop()
    old = serverfork.fork_server(env)
    os.kill(old.proc.pid, signal.SIGKILL)
    old.proc.wait(timeout=10)
    server = runtime.start_server(env, where, tmp_path / "s.log")
    try:
        assert server.launched == "fork" and serverfork.fork_server(env) is not old
    finally:
        server.stop()


def test_a_fork_server_dying_under_its_server_leaves_the_server_running_and_stoppable(
    envs: dict[str, Env], tmp_path: Path
) -> None:
    """The web server is a group of its own: it outlives its fork server, still serves and is stopped by
    its group; once it is gone, its end (which nobody reported) is the harness's failure, not a code."""
    server = LocalRuntime("fork").start_server(envs["1.30.1"], store(tmp_path, "orphan"), tmp_path / "s.log")
    forks = serverfork.fork_server(envs["1.30.1"])
    os.kill(forks.proc.pid, signal.SIGKILL)
    forks.proc.wait(timeout=10)
    handle = server.proc
    assert isinstance(handle, serverfork.ForkedServerProcess) and handle.pid is not None
    deadline = time.monotonic() + 10
    while not handle.request.gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.request.gone and server.alive()
    assert get(f"{server.url}/health")[0] == 200
    assert server.stop() is None
    assert gone(handle.pid)
    with pytest.raises(serverfork.LaunchError, match="died; the server it forked has ended since"):
        handle.poll()


def test_when_the_harness_dies_its_fork_server_and_servers_go_too(
    envs: dict[str, Env], tmp_path: Path
) -> None:
    """SIGKILL leaves no cleanup to the harness: the fork server sees its stdin close and kills the servers
    it forked, then ends."""
    script = tmp_path / "harness_side.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from harness import owner, serverfork\n"
        "from harness.backends import new_store\n"
        "from harness.envs import EnvCache\n"
        "from harness.runtime.local import LocalRuntime\n"
        "from harness.specs import parse_spec\n"
        "tmp = Path(sys.argv[1])\n"
        "env = EnvCache().ensure(parse_spec('1.30.1'), tmp / 'env2.log')\n"
        "store = new_store('sqlite', owner.mkdtemp('mlflow-compat-orphan-', tmp), servers={}, run_id='t',\n"
        "                  cell_slug='orphan')\n"
        "server = LocalRuntime('fork').start_server(env, store, tmp / 'orphan.log')\n"
        "print(serverfork.fork_server(env).proc.pid, server.proc.pid, flush=True)\n"
        "import time; time.sleep(3600)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert proc.stdout is not None
    fork_pid, server_pid = (int(p) for p in proc.stdout.readline().split())
    assert not gone(fork_pid, grace=0) and not gone(server_pid, grace=0)
    proc.kill()
    proc.wait()
    assert gone(fork_pid) and gone(server_pid)


def test_db_upgrade_forked_runs_the_same_revisions_as_the_cli(envs: dict[str, Env], tmp_path: Path) -> None:
    """`mlflow db upgrade` through the revision timer, forked or spawned: the same revisions in the same
    order, the same exit code, the same head."""
    runs = {}
    for launch in ("cli", "fork"):
        where = store(tmp_path, f"up-{launch}")
        LocalRuntime("cli").start_server(envs["2.22.5"], where, tmp_path / f"create-{launch}.log").stop()
        done = LocalRuntime(launch).db_upgrade(envs["3.17.2"], where, tmp_path / f"up-{launch}.log", 300)
        assert done.events is not None
        revisions = [
            (r["from"], r["to"]) for r in migration.record(migration.read_events(done.events))["revisions"]
        ]
        runs[launch] = (done.code, revisions, where.schema_revision())
    assert runs["cli"][0] == 0 and len(runs["cli"][1]) == 39
    assert runs["fork"] == runs["cli"]
