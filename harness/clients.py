"""Running scenario steps in a client process inside a client version's venv, and telling from what the
wire saw whether a failed call was answered by the server (MLflow's behaviour) or not (the machine's).

What lives here: the per-version fork servers, one driver process per client step, its timeout and
retries, and the classification of a failed call. What does not: what a scenario does (scenarios/), how a
record is compared (verify.py), what a check's status becomes (cell.py, expectations.py)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import procs
from harness.envs import Env
from harness.paths import SCENARIOS_DIR

CLIENT_TIMEOUT_ENV = "MLFLOW_COMPAT_CLIENT_TIMEOUT"
CLIENT_TIMEOUT_S = 600.0  # one process runs a phase's scenarios; MLFLOW_COMPAT_CLIENT_TIMEOUT overrides
# MLflow clients retry a failed request 5-7 times with exponential backoff (minutes, when a server died).
# Two quick retries still ride out a blip; a dead server is then seen in seconds, not minutes.
CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
DRIVER = SCENARIOS_DIR / "driver.py"
FORKSERVER = SCENARIOS_DIR / "forkserver.py"
# "fork" (default): each step is a fresh process forked from a per-version interpreter that imported mlflow
# once (scenarios/forkserver.py); "spawn": each step starts its own interpreter and imports mlflow itself.
# The run's choice reaches a cell through its CellContext (`--client-launch`, harness.options).
LAUNCHES = ("fork", "spawn")
FORKSERVER_READY_S = 120.0


@dataclass(frozen=True)
class CallFailure:
    """Why a scenario raised, as the wire saw it. ``answered``: the call that failed got an HTTP response (any
    status), or nothing went wrong on the wire and the client raised on its own: MLflow's behaviour. Not
    answered: the failing call got no response at all (refused, reset, timed out): the machine's."""

    answered: bool
    text: str


def _path(exchange: dict[str, Any]) -> str:
    return urlsplit(str(exchange.get("url", ""))).path or "?"


def _call(exchange: dict[str, Any]) -> str:
    return f"{exchange.get('method', '?')} {_path(exchange)}"


def call_failure(got: dict[str, Any]) -> CallFailure:
    """Classify a failed scenario from the HTTP exchanges its client process recorded. scenarios/driver.py
    records them at urllib3's request level, so the retries that MLflow reports only as "Max retries
    exceeded" are seen with their status. The failing call is the last exchange that went wrong (an error
    status or no response); where several did, the last one on the endpoint the error names (a client ends
    its run after a failed call, and an earlier handled 404 is not the failure). Whether it was answered is
    decided by the wire, never by the error's wording."""
    error = str(got.get("error", ""))
    recent = (got.get("http") or {}).get("recent") or []
    wrong = [x for x in recent if "status" not in x or int(x["status"]) >= 400]
    if not wrong:
        if not recent:
            return CallFailure(True, f"the client failed before any HTTP exchange: {error}")
        answer = f"HTTP {recent[-1]['status']} to {_call(recent[-1])}"
        return CallFailure(True, f"the client failed after the server answered {answer}: {error}")
    named = [x for x in wrong if _path(x) in error]
    culprit = (named or wrong)[-1]
    if "status" not in culprit:
        why = culprit.get("error")
        return CallFailure(False, f"no answer from the server to {_call(culprit)} ({why}): {error}")
    return CallFailure(True, f"the server answered HTTP {culprit['status']} to {_call(culprit)}: {error}")


@dataclass
class StepOutcome:
    """What a client step produced. ``infra`` marks a step that never got to talk to MLflow properly
    (timed out, crashed without writing its result): an error of the harness or machine, not of MLflow."""

    ok: bool
    infra: bool
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    excerpt: str = ""


class ForkServerError(RuntimeError):
    """The fork server could not start, or went away: the step says so; nothing is blamed on MLflow."""


class ForkServer:
    """One client version's interpreter with mlflow imported, forking a fresh process for every step.

    It lives as long as the worker that started it (steps of many cells share it; a step never sees another's
    state, each being a fork of the state right after the imports). Its group is tracked like any server's,
    and so is each child's while it runs, so Ctrl-C and exit leave nothing behind."""

    def __init__(self, env: Env) -> None:
        self.env = env
        environ = {**env.environ(), **CLIENT_RETRIES}
        self.proc, self._stderr = procs.start_helper([str(env.interpreter), str(FORKSERVER)], environ)
        self._buffer = b""
        try:
            ready = self._receive(time.monotonic() + FORKSERVER_READY_S)
        except ForkServerError:
            ready = None
        if not ready or not ready.get("ready"):
            self.close()
            self._stderr.seek(0)
            why = procs.tail_text(self._stderr.read().decode(errors="replace"), 5) or "no answer"
            raise ForkServerError(f"the MLflow {env.version} fork server did not start: {why}")
        self.client_version = str(ready["client_version"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(
        self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path, timeout: float
    ) -> tuple[int | None, float]:
        """Run one step in a fresh child; (exit code or None on timeout, seconds), like procs.run.
        Raises ForkServerError when the server is gone or dies during the step (the child is killed)."""
        started = time.monotonic()
        with log.open("ab") as fh:
            fh.write(f"$ {DRIVER} {' '.join(argv)}  (forked from the MLflow {self.env.version} fork server, "
                     f"pid {self.proc.pid})\n".encode())  # fmt: skip
        request = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            forked = self._receive(time.monotonic() + 30)
        except (OSError, ForkServerError) as exc:
            self.close()
            raise ForkServerError(f"the MLflow {self.env.version} fork server is gone: {exc}") from exc
        if forked is None:
            self.close()
            raise ForkServerError(f"the MLflow {self.env.version} fork server did not fork the step in 30s")
        child = int(forked["pid"])
        procs.track(child)
        try:
            done = self._receive(started + timeout)
            if done is not None:
                return int(done["code"]), time.monotonic() - started
            # The step overran: kill its group, then hear the server reap it.
            procs.untrack(child)
            procs.note_timeout(log, timeout)
            if self._receive(time.monotonic() + 30) is None:
                self.close()
            return None, time.monotonic() - started
        except ForkServerError:
            self.close()
            raise
        finally:
            procs.untrack(child)

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None at the deadline; ForkServerError when the server closed its end."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ForkServerError(f"the MLflow {self.env.version} fork server exited during the step")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        procs.untrack(self.proc.pid)  # SIGKILLs its group: the server and any child still running
        with contextlib.suppress(subprocess.TimeoutExpired):  # a process SIGKILLed and not reaped in 10 s
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream is not None:
                stream.close()


_forkservers: dict[Path, ForkServer] = {}
_forkservers_lock = threading.Lock()
_closer_registered = False


def forkserver(env: Env) -> ForkServer:
    """The live fork server for ``env``, started on first use (or again, if the last one died)."""
    global _closer_registered
    with _forkservers_lock:
        if not _closer_registered:
            atexit.register(close_forkservers)
            _closer_registered = True
        server = _forkservers.get(env.path)
        if server is None or not server.alive():
            if server is not None:
                server.close()
            server = _forkservers[env.path] = ForkServer(env)
        return server


def close_forkservers() -> None:
    with _forkservers_lock:
        for server in _forkservers.values():
            server.close()
        _forkservers.clear()


def run_driver(
    env: Env,
    step: str,
    plan: dict[str, Any],
    *,
    tracking_uri: str,
    out: Path,
    log: Path,
    workdir: Path,
    timeout: float | None = None,
    launch: str = "fork",
    extra_env: dict[str, str] | None = None,
) -> StepOutcome:
    """One client process (scenarios/driver.py) that runs ``step`` (write or read) for every scenario in
    ``plan``, forked from the version's fork server or spawned (``launch``, one of LAUNCHES).
    ``data["results"]`` holds each scenario's own outcome; a process that wrote no result at all is an
    infrastructure error (it never got to talk to MLflow properly). ``extra_env``: what the cell's features
    give every client (credentials, an S3 endpoint)."""
    if launch not in LAUNCHES:
        raise ValueError(f"launch={launch!r}: expected one of {', '.join(LAUNCHES)}")
    workdir.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    plan_file = out.with_name(out.stem + "-plan.json")
    plan_file.write_text(json.dumps(plan, indent=2))
    timeout = timeout or float(os.environ.get(CLIENT_TIMEOUT_ENV) or CLIENT_TIMEOUT_S)
    argv = [step, "--plan", str(plan_file), "--out", str(out)]
    if launch == "fork":
        try:
            code, seconds = forkserver(env).run(
                argv,
                env={**(extra_env or {}), "MLFLOW_TRACKING_URI": tracking_uri},
                cwd=workdir,
                log=log,
                timeout=timeout,
            )
        except ForkServerError as exc:
            return StepOutcome(False, True, 0.0, error=str(exc), excerpt=procs.tail(log))
    else:
        environ = {
            **env.environ(),
            **CLIENT_RETRIES,
            **(extra_env or {}),
            "MLFLOW_TRACKING_URI": tracking_uri,
        }
        code, seconds = procs.run(
            [str(env.interpreter), str(DRIVER), *argv], env=environ, log=log, timeout=timeout, cwd=workdir
        )
    if code is None:
        return StepOutcome(
            False, True, seconds, error=f"client timed out after {timeout:.0f}s", excerpt=procs.tail(log)
        )
    if not out.exists():
        return StepOutcome(
            False,
            True,
            seconds,
            error=f"client exited with code {code} before writing a result",
            excerpt=procs.tail(log),
        )
    return StepOutcome(True, False, seconds, data=json.loads(out.read_text()))
