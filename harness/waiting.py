"""Waiting until something is ready, and starting something that may lose a race for its port.

One protocol, modelled on testcontainers' wait strategies: a `WaitStrategy` is one probe (`ready()`) with a
startup timeout and a poll interval; `wait_until_ready(target)` polls it until it holds, and gives up
early when the `target` (a process, a container) is no longer alive. The four things the harness waits
for are strategies here: an HTTP /health answering 200 (`HttpHealth`), a TCP port accepting connections
(`PortOpen`), a SQL login working (`SqlLogin`), and one after the other (`Sequence`). `start_with_retries`
runs a start on a fresh free port, again when it failed in a way the caller calls retryable (a taken
port). What a failure means (a schema refusal, a crash, ...) is the caller's to say: harness.server for
tracking servers, harness.databases and harness.runtime.docker for databases.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

from harness import procs

HOST = "127.0.0.1"
T = TypeVar("T")


class Target(Protocol):
    """What is being waited on: a strategy stops waiting once it is no longer alive."""

    def alive(self) -> bool: ...


class NotReady(RuntimeError):
    """A wait gave up: the target exited (``exited``), or the timeout passed first."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


class WaitStrategy(ABC):
    """One readiness probe, polled every ``interval`` seconds for at most ``timeout`` seconds."""

    timeout: float = 60.0
    interval: float = 0.3

    def with_startup_timeout(self, seconds: float) -> Self:
        self.timeout = seconds
        return self

    def with_poll_interval(self, seconds: float) -> Self:
        self.interval = seconds
        return self

    @abstractmethod
    def ready(self) -> bool:
        """One probe: whether the thing answers as ready now (never raises for a mere 'not yet')."""

    @abstractmethod
    def what(self) -> str:
        """What is waited for, for messages ("http://127.0.0.1:5000/health")."""

    def wait_until_ready(self, target: Target, deadline: float | None = None) -> float:
        """Poll until ready; the seconds waited. Raises NotReady when ``target`` dies or time runs out."""
        started = time.monotonic()
        deadline = started + self.timeout if deadline is None else deadline
        while time.monotonic() < deadline:
            if not target.alive():
                raise NotReady(f"exited while waiting for {self.what()}", exited=True)
            if self.ready():
                return time.monotonic() - started
            time.sleep(self.interval)
        raise NotReady(f"no answer on {self.what()} within {self.timeout:.0f}s", exited=False)


class HttpHealth(WaitStrategy):
    """``url``/health answers 200."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/health"

    def what(self) -> str:
        return self.url

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False


class PortOpen(WaitStrategy):
    """A TCP connection to ``host``:``port`` is accepted (a server listens; it may not yet let anyone in)."""

    def __init__(self, port: int, host: str = HOST) -> None:
        self.host, self.port = host, port

    def what(self) -> str:
        return f"{self.host}:{self.port}"

    def ready(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((self.host, self.port)) == 0


class SqlLogin(WaitStrategy):
    """A real login works and answers `SELECT 1` (a database's port opens before it accepts logins)."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def what(self) -> str:
        return f"a login to {self.url.host}:{self.url.port}"

    def ready(self) -> bool:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as con:
                con.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False
        finally:
            engine.dispose()


class Sequence(WaitStrategy):
    """Each strategy in turn, all within this one's timeout (a port, then a login)."""

    def __init__(self, *strategies: WaitStrategy) -> None:
        self.strategies = strategies

    def what(self) -> str:
        return ", then ".join(s.what() for s in self.strategies)

    def ready(self) -> bool:
        return all(s.ready() for s in self.strategies)

    def wait_until_ready(self, target: Target, deadline: float | None = None) -> float:
        started = time.monotonic()
        deadline = started + self.timeout if deadline is None else deadline
        for strategy in self.strategies:
            strategy.wait_until_ready(target, deadline)
        return time.monotonic() - started


class Process:
    """A process as a wait target."""

    def __init__(self, poll: Callable[[], int | None]) -> None:
        self.poll = poll

    def alive(self) -> bool:
        return self.poll() is None


def start_with_retries(
    start: Callable[[int], T], *, retry_if: Callable[[Exception], bool], attempts: int = 3, host: str = HOST
) -> T:
    """``start(port)`` on a free port of ``host``; again on a new one while it fails retryably (a port taken
    between choosing and binding it), at most ``attempts`` times; the last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return start(procs.free_port(host))
        except Exception as exc:
            if attempt == attempts or not retry_if(exc):
                raise
    raise AssertionError("unreachable")
