"""Client steps forked from a per-version fork server (real MLflow 1.30.1 venv, no server needed: the
steps here run scenarios that make no MLflow calls, or none that reach a server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.clients import forkserver, run_driver
from harness.envs import Env, EnvCache
from harness.specs import parse_spec

# A scenario that changes what a fresh process would not have: the tracking URI, the environment, a
# module global. The next step must see none of it.
MEDDLE = """\
import os
import mlflow

REQUIRES = ()


def write(ctx):
    seen = {"uri": mlflow.get_tracking_uri(), "env": os.environ.get("MEDDLED"),
            "global": getattr(mlflow, "_meddled", None)}
    mlflow.set_tracking_uri("http://127.0.0.1:9/meddled")
    os.environ["MEDDLED"] = "yes"
    mlflow._meddled = True
    return seen
"""

SLEEP = """\
import os
import time

REQUIRES = ()


def write(ctx):
    with open(os.path.join(ctx.scratch, "sleeper.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(3600)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return EnvCache().ensure(parse_spec("1.30.1"), tmp_path_factory.mktemp("env") / "env.log")


def step(env: Env, tmp_path: Path, name: str, script: str, uri: str, timeout: float | None = None,
         launch: str = "fork"):  # fmt: skip
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    plan = {"scenarios": [{"name": name, "path": str(path), "options": {}}], "tags": {}}
    return run_driver(env, "write", plan, tracking_uri=uri, out=tmp_path / f"{name}-{uri[-1]}.json",
                      log=tmp_path / f"{name}-{uri[-1]}.log", workdir=tmp_path / "scratch",
                      timeout=timeout, launch=launch)  # fmt: skip


def alive(pid: int, grace: float = 5.0) -> bool:
    """Whether ``pid`` still runs ``grace`` seconds from now (a SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state == "Z" or time.monotonic() > deadline:
            return state != "Z"
        time.sleep(0.1)


def test_each_step_is_a_fresh_process_forked_from_one_import(env: Env, tmp_path: Path) -> None:
    first = step(env, tmp_path, "meddle", MEDDLE, "http://127.0.0.1:1/a")
    second = step(env, tmp_path, "meddle", MEDDLE, "http://127.0.0.1:1/b")
    server = forkserver(env)
    for outcome, uri in ((first, "http://127.0.0.1:1/a"), (second, "http://127.0.0.1:1/b")):
        assert outcome.ok, outcome.error
        data = outcome.data
        assert data["ppid"] == server.proc.pid, "forked from the fork server"
        assert data["tracking_uri"] == uri, "the step's own tracking URI, not the last step's"
        # What the first step changed is not there in the second: each starts from the pristine import.
        assert data["results"]["meddle"]["record"] == {"uri": uri, "env": None, "global": None}
    assert first.data["pid"] != second.data["pid"]
    assert not alive(first.data["pid"]) and not alive(second.data["pid"])
    log = (tmp_path / "meddle-a.log").read_text()
    assert f"forked from the MLflow 1.30.1 fork server, pid {server.proc.pid}" in log


def test_a_step_that_overruns_is_killed_and_the_server_serves_the_next(env: Env, tmp_path: Path) -> None:
    server = forkserver(env)
    started = time.monotonic()
    outcome = step(env, tmp_path, "sleep", SLEEP, "http://127.0.0.1:1/a", timeout=5)
    assert time.monotonic() - started < 30
    assert not outcome.ok and outcome.infra and outcome.error == "client timed out after 5s"
    assert "timed out after 5s; process group killed" in (tmp_path / "sleep-a.log").read_text()
    assert not alive(int((tmp_path / "scratch" / "sleeper.pid").read_text()))
    assert forkserver(env) is server and server.alive()
    again = step(env, tmp_path, "meddle", MEDDLE, "http://127.0.0.1:1/b")
    assert again.ok and again.data["ppid"] == server.proc.pid


def test_a_dead_fork_server_is_replaced_and_one_dying_mid_step_is_an_error(env: Env, tmp_path: Path) -> None:
    old = forkserver(env)
    os.kill(old.proc.pid, signal.SIGKILL)
    old.proc.wait(timeout=10)
    outcome = step(env, tmp_path, "meddle", MEDDLE, "http://127.0.0.1:1/a")
    assert outcome.ok, outcome.error
    new = forkserver(env)
    assert new is not old and outcome.data["ppid"] == new.proc.pid

    # The server dies while a step runs: the step is an infrastructure error and its process is gone.
    def kill_soon() -> None:
        time.sleep(3)
        os.kill(new.proc.pid, signal.SIGKILL)

    threading.Thread(target=kill_soon).start()
    outcome = step(env, tmp_path, "sleep", SLEEP, "http://127.0.0.1:1/b", timeout=120)
    assert not outcome.ok and outcome.infra
    assert outcome.error == "the MLflow 1.30.1 fork server exited during the step"
    assert not alive(int((tmp_path / "scratch" / "sleeper.pid").read_text())), "the orphaned step is killed"


def test_spawn_runs_the_same_step_in_its_own_interpreter(env: Env, tmp_path: Path) -> None:
    outcome = step(env, tmp_path, "meddle", MEDDLE, "http://127.0.0.1:1/a", launch="spawn")
    assert outcome.ok, outcome.error
    assert outcome.data["ppid"] == os.getpid(), "started by the harness itself, not a fork server"
    assert outcome.data["results"]["meddle"]["record"] == {"uri": "http://127.0.0.1:1/a", "env": None,
                                                           "global": None}  # fmt: skip
    with pytest.raises(ValueError, match="launch='thread': expected one of fork, spawn"):
        step(env, tmp_path, "meddle", MEDDLE, "http://127.0.0.1:1/b", launch="thread")


def test_when_the_harness_dies_its_fork_server_and_running_step_go_too(env: Env, tmp_path: Path) -> None:
    """SIGKILL leaves no cleanup to the harness: the fork server sees its stdin close and ends the step."""
    (tmp_path / "sleep.py").write_text(SLEEP)
    script = tmp_path / "harness_side.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.clients import forkserver\n"
        "from harness.envs import EnvCache\n"
        "from harness.specs import parse_spec\n"
        "tmp = Path(sys.argv[1])\n"
        "env = EnvCache().ensure(parse_spec('1.30.1'), tmp / 'env2.log')\n"
        "server = forkserver(env)\n"
        "print(server.proc.pid, flush=True)\n"
        "plan = tmp / 'plan.json'\n"
        'plan.write_text(\'{"scenarios": [{"name": "sleep", "path": "%s"}]}\' % (tmp / \'sleep.py\'))\n'
        "(tmp / 'scratch').mkdir(exist_ok=True)\n"
        "server.run(['write', '--plan', str(plan), '--out', str(tmp / 'out.json')], env={},\n"
        "           cwd=tmp / 'scratch', log=tmp / 'step.log', timeout=3600)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert proc.stdout is not None
    server_pid = int(proc.stdout.readline())
    sleeper = tmp_path / "scratch" / "sleeper.pid"
    deadline = time.monotonic() + 60
    while not sleeper.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    step_pid = int(sleeper.read_text())
    assert alive(step_pid, grace=0) and alive(server_pid, grace=0)
    proc.kill()
    proc.wait()
    assert not alive(server_pid) and not alive(step_pid)
