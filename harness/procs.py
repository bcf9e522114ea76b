"""Child processes that never outlive the harness.

Every server and client runs in its own session (process group), so stopping it stops whatever it
spawned (gunicorn and uvicorn workers). Live groups are tracked per process; a SIGTERM, SIGINT or a
normal exit kills any that are still there, so Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from harness import owner

_live: set[int] = set()
_lock = threading.Lock()


def redact(text: str) -> str:
    """Hide the password of every URL in ``text`` (database URLs reach servers on their command lines)."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def spawn(
    cmd: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        fh.write(f"$ {redact(' '.join(cmd))}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            cmd,
            env={**env, owner.ENV: owner.token()},  # so that `clean` knows whose it is
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    with _lock:
        _live.add(proc.pid)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; returns the exit code."""
    try:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Workers may outlive a leader that exited first: the group is killed either way.
        _signal_group(proc.pid, signal.SIGKILL)
    finally:
        with _lock:
            _live.discard(proc.pid)
    return proc.returncode


def start_helper(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """A long-lived helper the harness talks to over its stdin and stdout (a fork server), in a session of
    its own and tracked; its stderr goes to a temporary file, read only if it fails to start."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it with the helper)
    proc = subprocess.Popen(cmd, env={**env, owner.ENV: owner.token()}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)  # fmt: skip
    track(proc.pid)
    return proc, stderr


def run(
    cmd: list[str], *, env: dict[str, str], log: Path, timeout: float, cwd: Path | None = None
) -> tuple[int | None, float]:
    """Run to completion in its own group; returns (exit code or None on timeout, seconds)."""
    started = time.monotonic()
    proc = spawn(cmd, env=env, log=log, cwd=cwd)
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
        note_timeout(log, timeout)
    finally:
        stop(proc, grace=2.0)
    return code, time.monotonic() - started


def track(pgid: int) -> None:
    """Count a process group someone else started (a fork server's child) among ours until ``untrack``."""
    with _lock:
        _live.add(pgid)


def note_timeout(log: Path, timeout: float) -> None:
    """Say in ``log`` that what wrote it overran ``timeout`` and its process group was killed."""
    with log.open("a") as fh:
        fh.write(f"\n[mlflow-compat] timed out after {timeout:.0f}s; process group killed\n")


def forget(pgid: int) -> None:
    """Stop counting a tracked group that is ending on its own (nothing is signalled)."""
    with _lock:
        _live.discard(pgid)


def untrack(pgid: int) -> None:
    """Kill what is left of a tracked group and stop counting it."""
    _signal_group(pgid, signal.SIGKILL)
    with _lock:
        _live.discard(pgid)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of group ``pgid`` has ended (and been reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:  # looked at once at least (timeout 0: whether it is gone now)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_all() -> None:
    """Kill every group this process started and has not stopped yet."""
    with _lock:
        groups = list(_live)
        _live.clear()
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)


def _on_sigterm(signum: int, _frame: object) -> None:
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Kill our children on exit and on SIGTERM. SIGINT stays a KeyboardInterrupt, which unwinds every
    cell's context managers (and so stops its servers) before the atexit hook sweeps up the rest."""
    atexit.register(kill_all)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now. Racy by nature: callers retry when a server reports it taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail(path: Path, lines: int = 40) -> str:
    try:
        return tail_text(path.read_text(errors="replace"), lines)
    except OSError:
        return ""


_OWNED_DIR = re.compile(r"(/\S*?/mlflow-compat-[^/\s]+)")


def stray_owner(pid: int) -> str | None:
    """The owner of a process: from its environment, or (PostgreSQL rewrites its environment for its
    title) from an owned temporary directory on its command line."""
    if found := owner.of_process(pid):
        return found
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for path in _OWNED_DIR.findall(cmdline):
        if found := owner.of_dir(Path(path)):
            return found
    return None


def kill_strays() -> int:
    """Kill the processes of runs whose controller is gone (killed, crashed); a live run's are left alone."""
    killed = 0
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        found = stray_owner(int(proc_dir.name))
        if found is not None and not owner.alive(found):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc_dir.name), signal.SIGKILL)
                killed += 1
    return killed
