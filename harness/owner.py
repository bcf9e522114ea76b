"""Who started what, so that cleaning up after a crashed run never touches a live one.

A run's controller claims an owner token (its pid and the kernel's start time for that pid, so a reused
pid does not count as the same owner). Everything the run starts carries the token: processes in their
environment, containers and networks as a label, temporary directories in a marker file. `mlflow-compat
clean` removes only what belongs to owners that are no longer alive.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "MLFLOW_COMPAT_OWNER"
LABEL = "mlflow-compat.owner"
MARKER = ".mlflow-compat-owner"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may hold spaces, so split after its ")".
    return stat.rsplit(")", 1)[1].split()[19]


def of_pid(pid: int) -> str:
    """The token a process would claim (how a test names the run it started)."""
    return f"{pid}-{_start_time(pid)}"


def claim() -> str:
    """Make this process the owner of everything started from now on (a run's controller)."""
    os.environ[ENV] = token = of_pid(os.getpid())
    return token


def token() -> str:
    """The current owner: inherited from the controller, or this process when nothing claimed one."""
    return os.environ.get(ENV) or claim()


def alive(owner: str) -> bool:
    pid, _, started = owner.partition("-")
    return pid.isdigit() and _start_time(int(pid)) == started


def mkdtemp(prefix: str, dir: Path | None = None) -> Path:
    """A temporary directory marked with its owner."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    mark(path)
    return path


def mark(path: Path) -> None:
    (path / MARKER).write_text(token())


def of_dir(path: Path) -> str | None:
    try:
        return (path / MARKER).read_text().strip()
    except OSError:
        return None


def of_process(pid: int) -> str | None:
    """The owner of a process, from its environment (None when it has none or cannot be read)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(ENV.encode() + b"="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None
