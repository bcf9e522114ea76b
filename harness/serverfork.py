"""Local server starts (and `mlflow db upgrade` runs) forked from a per-version server fork server.

`mlflow server` pays two interpreter imports one after the other (the CLI, then the web server it execs):
1.5-5 s each. scenarios/serverfork.py imports both once per MLflow version and harness worker, then serves
each start as two forks: the real click command up to the exec (the store checks, a schema refusal and its
log, as in the CLI), then the real web server entry point with exactly the environment the CLI would have
exec'd it with. What lives here: the harness's side of that protocol (`ServerForkServer`), the handle of a
server it started (`ForkedServer`, stopped by its process group like any server), the registry of live fork
servers (one per env and import-time environment), and `SERVER_LAUNCHES`. What does not: the command line
of a server (harness.server.launch), the wait for /health and the classification of a failed start
(harness.server), the choice between fork and cli (harness.runtime.local).

Import-time configuration: the web server reads a few variables when its modules are imported
(scenarios/serverfork.py IMPORT_TIME). A fork server holds them as they were when it imported; a start whose
CLI exports other values is exec'd for real (so it is right, only slow), and the values it had are
remembered for the env (in memory and in the cache root, LEARNED): the next fork server of that env is
started with them (at once, in the background), so later starts fork again. 3.x CLIs always export
MLFLOW_SERVER_X_FRAME_OPTIONS: a 3.x env's very first start on a machine is exec'd for real, later ones
(in any worker or run) are forked. A remembered value that no longer holds costs one real exec again.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import owner, procs
from harness.envs import Env
from harness.paths import SCENARIOS_DIR, cache_root

SERVER_LAUNCHES = ("fork", "cli")
LEARNED = (
    "serverfork-import-env.json"  # in the cache root: env path -> the import-time values its CLI exports
)
SERVERFORK = SCENARIOS_DIR / "serverfork.py"
READY_S = 180.0  # importing a version's server and CLI: 1.5-5 s on a quiet machine
HANDOVER_S = 600.0  # the CLI part of a start, up to the exec (a fresh store's tables included)


class LaunchError(RuntimeError):
    """The fork server could not start, refused to fork, or went away: the harness's trouble, not MLflow's."""


@dataclass
class _Request:
    """What one request has heard so far: its first answer (forked, or refused), the process groups it runs
    as (a server start: the CLI part's, then the web server's once the CLI handed over), and its end."""

    log: Path | None = None
    first: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    ended: threading.Event = field(default_factory=threading.Event)
    code: int | None = None
    stage: str = ""
    cli_pid: int | None = None
    server_pid: int | None = None
    how: str = "cli"  # where the start got to: "cli" (the CLI part), then "fork" or "exec" (the web server)
    stopping: bool = False
    error: str = ""  # the fork server's own failure after the CLI part handed over (no web server forked)
    gone: bool = False  # the fork server died: nobody reports this start's end any more
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServerForkServer:
    """One MLflow version's interpreter with its server and CLI imported (scenarios/serverfork.py).

    Lives as long as the harness worker that started it; its group is tracked like any server's, and every
    child it forks for us is tracked while it runs, so Ctrl-C and exit leave nothing behind. A reader thread
    hands each answer to the request it belongs to."""

    def __init__(self, env: Env, import_env: dict[str, str]) -> None:
        self.env = env
        self.import_env = import_env
        # Its own environment matters only for what the server reads at import: every fork gets the
        # request's environment whole.
        environ = {**env.environ(), **import_env}
        self.proc, self._stderr = procs.start_helper([str(env.interpreter), str(SERVERFORK)], environ)
        self._lock = threading.Lock()
        self._requests: dict[int, _Request] = {}
        self._next = 0
        self._ready: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"serverfork-{env.version}", daemon=True)
        self._reader.start()
        try:
            ready = self._ready.get(timeout=READY_S)
        except queue.Empty:
            ready = None
        if not ready or not ready.get("ready"):
            self.proc.kill()  # it may still be importing; then its output is complete
            self.proc.wait(timeout=10)
            self._stderr.seek(0)
            output = procs.tail_text(self._stderr.read().decode(errors="replace"), 5)
            self.close()
            why = (ready or {}).get("error") or output
            raise LaunchError(
                f"the MLflow {env.version} server fork server did not start: {why or 'no answer'}"
            )
        self.pid = int(ready["pid"])
        self.imported: list[str] = list(ready.get("imported", []))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if "ready" in message:
                self._ready.put(message)
                continue
            with self._lock:
                request = self._requests.get(message.get("id", -1))
            if request is None:
                continue
            if "exited" in message:
                request.code, request.stage = int(message["exited"]), str(message.get("stage", ""))
                request.ended.set()
            elif "error" in message and request.cli_pid is not None:  # the handover could not be forked
                why = message["error"]
                request.error = f"the MLflow {self.env.version} server fork server refused: {why}"
                request.ended.set()
                continue
            elif "cli_pid" in message and "pid" not in message:
                request.cli_pid = int(message["cli_pid"])
                procs.track(request.cli_pid)
            elif request.cli_pid is not None and "pid" in message:
                self._handed_over(request, message)
                continue
            request.first.put(message)
        # The fork server is gone: every request still waiting hears it.
        self._ready.put(None)
        with self._lock:
            pending = list(self._requests.values())
        for request in pending:
            request.gone = True
            request.first.put({"gone": True})

    def _handed_over(self, request: _Request, message: dict[str, Any]) -> None:
        """The CLI part handed over: the web server runs as its own group (stopped at once if the start was
        stopped meanwhile). The CLI part is ending on its own (flushed, then _exit)."""
        pid = int(message["pid"])
        with request.lock:
            request.server_pid, request.how = pid, str(message.get("how"))
            procs.track(pid)
            if request.cli_pid is not None:
                procs.forget(request.cli_pid)
            if request.stopping:
                procs.untrack(pid)
                return
        if request.how == "exec":
            if request.log is not None:
                with request.log.open("a") as fh:
                    fh.write(f"[mlflow-compat] the web server was exec'd for real: {message.get('why')}\n")
            learn(self.env, message.get("import_time") or {}, self)

    def _send(self, op: str, log_path: Path, **fields: Any) -> tuple[int, _Request]:
        with self._lock:
            self._next += 1
            rid, request = self._next, _Request(log=log_path)
            self._requests[rid] = request
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps({"id": rid, "op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise LaunchError(f"the MLflow {self.env.version} server fork server is gone: {exc}") from exc
        return rid, request

    def _first(self, request: _Request, timeout: float) -> dict[str, Any]:
        try:
            answer = request.first.get(timeout=timeout)
        except queue.Empty:
            raise LaunchError(
                f"the MLflow {self.env.version} server fork server did not answer in {timeout:.0f}s"
            ) from None
        if answer.get("gone"):
            raise LaunchError(f"the MLflow {self.env.version} server fork server exited")
        if "error" in answer:
            raise LaunchError(f"the MLflow {self.env.version} server fork server refused: {answer['error']}")
        return answer

    def start_server(
        self, args: list[str], *, env: dict[str, str], cwd: Path, log: Path
    ) -> ForkedServerProcess:
        """`mlflow ARGS` (a `server` command) as fork A (the CLI), which hands over to fork B (the web
        server); returns as soon as A runs. Like a CLI process, the handle is alive until the whole start
        has ended: A without handing over (a refusal, a crash), or B."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            command = procs.redact(" ".join([str(self.env.bin / "mlflow"), *args]))
            fh.write(f"$ {command}  (forked from the MLflow {self.env.version} server fork server, "
                     f"pid {self.pid})\n".encode())  # fmt: skip
        # The owner token, as procs.spawn gives a CLI start: `clean` tells whose a stray server is.
        env = {**env, owner.ENV: owner.token()}
        rid, request = self._send("server", log, argv=args, env=env, cwd=str(cwd), log=str(log))
        self._first(request, 30)
        return ForkedServerProcess(self, rid, request)

    def run_script(
        self, script: Path, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path
    ) -> ForkedScript:
        """``script`` with ``argv`` in a fork (as `python SCRIPT ARGV...` would run it)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            fh.write(f"$ {procs.redact(' '.join([str(script), *argv]))}  (forked from the MLflow "
                     f"{self.env.version} server fork server, pid {self.pid})\n".encode())  # fmt: skip
        env = {**env, owner.ENV: owner.token()}
        rid, request = self._send(
            "script", log, path=str(script), argv=argv, env=env, cwd=str(cwd), log=str(log)
        )
        answer = self._first(request, 30)
        pid = int(answer["pid"])
        procs.track(pid)
        return ForkedScript(self, rid, request, pid)

    def forget(self, rid: int) -> None:
        with self._lock:
            self._requests.pop(rid, None)

    def close(self) -> None:
        procs.untrack(self.proc.pid)  # SIGKILLs its group; its children have groups of their own
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with self._lock:
            children = list(self._requests.values())
        for request in children:
            request.ended.set()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@dataclass
class ForkedServerProcess:
    """A server start forked for us: the CLI part's process group, then the web server's (``pid``)."""

    owner: ServerForkServer
    rid: int
    request: _Request

    @property
    def pid(self) -> int | None:
        """The web server's process (its group's leader); None while the CLI part runs, or if it never
        handed over."""
        return self.request.server_pid

    @property
    def how(self) -> str:
        """ "fork": the web server runs in-process; "exec": exec'd for real; "cli": it never got that far."""
        return self.request.how

    def poll(self) -> int | None:
        """The exit code once the start has ended (None: it runs). LaunchError, the harness's failure and
        not the server's: the fork server could not fork the web server the CLI part handed over to, or it
        died, and what it forked has ended since, its exit code unknown (while that still runs, it runs)."""
        request = self.request
        if request.error:
            raise LaunchError(request.error)
        if request.ended.is_set():
            return request.code
        if request.gone:
            pid = request.server_pid or request.cli_pid
            if pid is None or procs.wait_group_gone(pid, timeout=0):
                raise LaunchError(f"the MLflow {self.owner.env.version} server fork server died; the server "
                                  "it forked has ended since, with an exit code nobody heard")  # fmt: skip
        return None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM what runs (the CLI part, or the web server), SIGKILL it after ``grace`` seconds; the exit
        code (None: never heard). A handover that comes while stopping is killed as it arrives."""
        request = self.request
        try:
            with request.lock:
                request.stopping = True
                groups = [pid for pid in (request.cli_pid, request.server_pid) if pid is not None]
            for pid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
            if not self._ended(grace):
                for pid in groups:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                self._ended(10)
            with request.lock:
                for pid in {*groups, request.server_pid} - {None}:
                    procs.untrack(pid)  # workers may outlive a leader that exited first
        finally:
            self.owner.forget(self.rid)
        return request.code if request.ended.is_set() else None

    def _ended(self, timeout: float) -> bool:
        """Whether the start ended within ``timeout``: as the fork server reports it, or (it died) as its
        process groups are seen gone."""
        request = self.request
        deadline = time.monotonic() + timeout
        while not request.ended.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if request.gone and all(
                procs.wait_group_gone(p, 0) for p in (request.cli_pid, request.server_pid) if p
            ):
                return True
            if time.monotonic() >= deadline:
                return False
        return True


@dataclass
class ForkedScript:
    owner: ServerForkServer
    rid: int
    request: _Request
    pid: int

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when it did not end within ``timeout`` (it is then left running)."""
        return self.request.code if self.request.ended.wait(timeout) else None

    def kill(self) -> int | None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.request.ended.wait(10)
        procs.untrack(self.pid)
        self.owner.forget(self.rid)
        return self.poll()

    def poll(self) -> int | None:
        return self.request.code if self.request.ended.is_set() else None


# -- the registry: one fork server per (env, import-time environment) and worker ---------------------------
_servers: dict[tuple[Path, tuple[tuple[str, str], ...]], ServerForkServer] = {}
_learned: dict[Path, dict[str, str]] = {}
_starting: dict[tuple[Path, tuple[tuple[str, str], ...]], threading.Thread] = {}
_lock = threading.RLock()
_closer_registered = False


def _key(env: Env, import_env: dict[str, str]) -> tuple[Path, tuple[tuple[str, str], ...]]:
    return env.path, tuple(sorted(import_env.items()))


def _start(env: Env, import_env: dict[str, str]) -> None:
    try:
        server = ServerForkServer(env, import_env)
    except LaunchError:
        return  # the start that needs it starts one in the foreground, and says why if it fails again
    with _lock:
        old = _servers.get(_key(env, import_env))
        _servers[_key(env, import_env)] = server
    if old is not None:
        old.close()


def _learned_file() -> Path:
    return cache_root() / LEARNED


def _load_learned(env: Env) -> dict[str, str]:
    try:
        found = json.loads(_learned_file().read_text()).get(str(env.path), {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _save_learned(env: Env, values: dict[str, str]) -> None:
    """Remember ``values`` for ``env`` across runs (a lost race between workers loses nothing real: a wrong
    or missing value costs one exec'd start)."""
    path = _learned_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    known[str(env.path)] = values
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    tmp.replace(path)


def learn(env: Env, exec_env: dict[str, str | None], seen_by: ServerForkServer) -> None:
    """A start was exec'd because its CLI exported other import-time values than ``seen_by`` imported
    with: remember them for ``env`` and start a fork server with them in the background."""
    values = {k: v for k, v in exec_env.items() if v is not None}
    with _lock:
        if values == seen_by.import_env or _learned.get(env.path) == values:
            return
        _learned[env.path] = values
        _save_learned(env, values)
        key = _key(env, values)
        if key in _servers or key in _starting:
            return
        thread = threading.Thread(target=_start, args=(env, values), daemon=True)
        _starting[key] = thread
    thread.start()


def fork_server(env: Env) -> ServerForkServer:
    """The live fork server for ``env`` with the import-time values learned for it (started on first use,
    or again if the last one died)."""
    global _closer_registered
    with _lock:
        if not _closer_registered:
            atexit.register(close_all)
            _closer_registered = True
        if env.path not in _learned:
            _learned[env.path] = _load_learned(env)
        import_env = dict(_learned[env.path])
        key = _key(env, import_env)
        starting = _starting.pop(key, None)
    if starting is not None:
        starting.join()
    with _lock:
        server = _servers.get(key)
        if server is not None and server.alive():
            return server
        if server is not None:
            server.close()
        server = _servers[key] = ServerForkServer(env, import_env)
        return server


def close_all() -> None:
    with _lock:
        starting = list(_starting.values())
    for thread in starting:
        thread.join()
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
        _starting.clear()
    for server in servers:
        server.close()


def wait_script(script: ForkedScript, timeout: float, log: Path) -> tuple[int | None, float]:
    """(exit code or None on timeout, seconds), its group killed on a timeout, like procs.run."""
    started = time.monotonic()
    code = script.wait(timeout)
    if code is None:
        script.kill()
        procs.note_timeout(log, timeout)
    else:
        procs.untrack(script.pid)
        script.owner.forget(script.rid)
    return code, time.monotonic() - started
