"""The wait strategies and the retried start (harness.waiting), and the one place a server that does not come
up is classified (harness.server.wait_serving). Pure units against real sockets and a real HTTP server."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server import ServerStartError, StartFailure, wait_serving
from harness.waiting import HttpHealth, NotReady, PortOpen, Sequence, WaitStrategy, start_with_retries


class Alive:
    def __init__(self, alive: bool = True) -> None:
        self.is_alive = alive

    def alive(self) -> bool:
        return self.is_alive


class Never(WaitStrategy):
    def what(self) -> str:
        return "nothing"

    def ready(self) -> bool:
        return False


@pytest.fixture
def health() -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server whose /health answers the status at the head of ``statuses`` (200 once empty)."""
    statuses: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    server.shutdown()
    server.server_close()


def test_a_strategy_gives_up_at_its_timeout_and_says_on_what() -> None:
    started = time.monotonic()
    with pytest.raises(NotReady, match="no answer on nothing within 1s") as info:
        Never().with_startup_timeout(0.6).with_poll_interval(0.05).wait_until_ready(Alive())
    assert not info.value.exited and 0.5 < time.monotonic() - started < 2


def test_a_dead_target_ends_the_wait_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(NotReady) as info:
        Never().with_startup_timeout(30).wait_until_ready(Alive(False))
    assert info.value.exited and time.monotonic() - started < 1


def test_port_open_tells_a_listening_port_from_a_closed_one() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert PortOpen(port).ready()
    assert not PortOpen(port).ready()


def test_http_health_waits_for_a_200(health: tuple[str, list[int]]) -> None:
    url, statuses = health
    statuses += [503, 503]
    waited = HttpHealth(url).with_poll_interval(0.05).with_startup_timeout(5).wait_until_ready(Alive())
    assert statuses == [] and waited >= 0.05


def test_a_sequence_shares_one_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(NotReady):
        Sequence(Never().with_poll_interval(0.05), Never()).with_startup_timeout(0.5).wait_until_ready(
            Alive()
        )
    assert time.monotonic() - started < 1.5


def test_start_with_retries_retries_only_what_it_is_told_and_at_most_three_times() -> None:
    ports: list[int] = []

    def taken(port: int) -> int:
        ports.append(port)
        raise OSError("taken")

    with pytest.raises(OSError, match="taken"):
        start_with_retries(taken, retry_if=lambda exc: isinstance(exc, OSError))
    assert len(ports) == 3 and all(p > 0 for p in ports)
    ports.clear()
    with pytest.raises(OSError):
        start_with_retries(taken, retry_if=lambda exc: False)
    assert len(ports) == 1
    calls: list[int] = []

    def second_time_lucky(port: int) -> int:
        calls.append(port)
        if len(calls) == 1:
            raise OSError("taken")
        return port

    assert start_with_retries(second_time_lucky, retry_if=lambda exc: True) == calls[-1] and len(calls) == 2


class FakeServer:
    """A server being started: /health is the real HTTP server above; it exits when told to."""

    def __init__(self, url: str, log: Path, alive_after: int) -> None:
        self.url, self.version, self.log = url, "9.9.9", log
        self.checks, self.alive_after, self.stopped = 0, alive_after, False

    def alive(self) -> bool:
        self.checks += 1
        return self.checks <= self.alive_after

    def stop(self) -> int | None:
        self.stopped = True
        return 1


def test_a_server_that_exits_right_after_health_is_classified_from_its_log(
    tmp_path: Path, health: tuple[str, list[int]]
) -> None:
    url, _ = health
    log = tmp_path / "server.log"
    log.write_text("old run: Address already in use\n")
    offset = log.stat().st_size
    log.write_text(
        log.read_text() + "Detected out-of-date database schema (found version a, but expected b)\n"
    )
    server = FakeServer(url, log, alive_after=1)  # alive for the wait's first look, gone right after /health
    with pytest.raises(ServerStartError) as info:
        wait_serving(server, offset, timeout=5)
    assert info.value.kind is StartFailure.REFUSED_SCHEMA and server.stopped
    refusal = "Detected out-of-date database schema (found version a, but expected b)"
    assert str(info.value) == f"server 9.9.9 exited with code 1: {refusal}"


def test_a_server_that_dies_before_health_is_classified_and_one_that_never_answers_times_out(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    log.write_text("Traceback...\nMlflowException: boom\n")
    dead = FakeServer("http://127.0.0.1:9", log, alive_after=0)
    with pytest.raises(ServerStartError) as info:
        wait_serving(dead, 0, timeout=5)
    assert info.value.kind is StartFailure.CRASHED and "MlflowException: boom" in str(info.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: nothing answers there
        silent = FakeServer(f"http://127.0.0.1:{port}", log, alive_after=10**6)
        with pytest.raises(ServerStartError) as info:
            wait_serving(silent, 0, timeout=0.5)
    assert info.value.kind is StartFailure.TIMEOUT and info.value.is_infrastructure and silent.stopped
    assert str(info.value) == f"no answer on http://127.0.0.1:{port}/health within 0s"
