"""The run's progress (harness/progress.py): rendering from event files, and real runs watched as people do.

The unit tests write workers' event files by hand and render them with a fake clock: the lines a CI log
gets, the live display's text, the ETA from recorded durations, a failure shown as one the moment its
verdict arrives. The real tests run the CLI on real cells: with stdout a pipe (the timestamped lines of
each cell's start, phases in timeline order and verdict, and none of pytest's or xdist's own running
output), and under a pseudo-terminal (the live display, and a planted failure shown while the run goes on).
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import progress
from harness.durations import expected_seconds
from harness.plan import CellPlan
from harness.specs import parse_spec
from tests.conftest import REPO

T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def plan(backend: str, path: str = "2.22.5:3.17.2") -> CellPlan:
    specs = tuple(parse_spec(v) for v in path.split(":"))
    return CellPlan(backend=backend, path=specs, clients=specs, scenarios=("quickstart",), runtime="local")


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def emitter(run_dir: Path, worker: str, clock: FakeClock) -> progress.Emitter:
    return progress.Emitter(progress.events_dir(run_dir) / f"{worker}.jsonl", worker, clock)


def known(*pairs: tuple[CellPlan, float]) -> dict[str, float]:
    """A durations record holding these cells' times (the key harness.durations uses)."""
    from harness.durations import _key

    return {_key(p): s for p, s in pairs}


# -- events and their files ---------------------------------------------------------------------------------
def test_events_round_trip_and_a_half_written_line_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    gw0 = emitter(tmp_path, "gw0", clock)
    gw0.start("sqlite:2.22.5->3.17.2")
    clock.tick(3)
    gw0.phase("sqlite:2.22.5->3.17.2", "upgrade", "db-upgrade 3.17.2")
    tail = progress.Tail(progress.events_dir(tmp_path))
    first = tail.poll()
    assert [(e.event, e.worker, e.cell, e.phase, e.step) for e in first] == [
        ("start", "gw0", "sqlite:2.22.5->3.17.2", "", ""),
        ("phase", "gw0", "sqlite:2.22.5->3.17.2", "upgrade", "db-upgrade 3.17.2"),
    ]
    assert first[1].t - first[0].t == timedelta(seconds=3)
    assert tail.poll() == [], "each event is read once"
    path = progress.events_dir(tmp_path) / "gw0.jsonl"
    line = json.dumps({"t": "2026-11-29T10:00:09.000Z", "cell": "c", "event": "verdict", "status": "pass"})
    with path.open("a") as fh:
        fh.write(line[:20])  # a worker half-way through its write
    assert tail.poll() == []
    with path.open("a") as fh:
        fh.write(line[20:] + "\n" + "not json\n")
    (done,) = tail.poll()
    assert (done.event, done.status, done.t) == ("verdict", "pass", T0 + timedelta(seconds=9))
    assert len(tail.unreadable) == 1 and "gw0.jsonl" in tail.unreadable[0]


def test_an_unwritable_event_file_is_said_once_and_never_raises(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "progress"
    blocker.write_text("a file where the directory should be")
    broken = progress.Emitter(blocker / "gw0.jsonl", "gw0")
    broken.start("c")
    broken.verdict("c", "pass", 1.0, "")
    err = capsys.readouterr().err
    assert err.count("progress events not written") == 1 and broken.broken


# -- lines without a terminal --------------------------------------------------------------------------------
def test_lines_say_each_start_phase_and_verdict_with_its_utc_time_and_failures_with_their_checks(
    tmp_path: Path,
) -> None:
    a, b = plan("sqlite"), plan("postgres")
    clock = FakeClock()
    gw0, gw1 = emitter(tmp_path, "gw0", clock), emitter(tmp_path, "gw1", clock)
    board = progress.Board.of([a, b], jobs=2, expected=expected_seconds([a, b], known((a, 60.0), (b, 100.0))))
    out = io.StringIO()
    watch = progress.Watch(progress.events_dir(tmp_path), board, progress.Lines(out), lock=_Lock())
    gw0.start(a.id)
    gw1.start(b.id)
    clock.tick(2)
    gw0.phase(a.id, "before", "server-start 2.22.5")
    watch.poll()
    clock.tick(40)
    gw0.verdict(a.id, "xfail", 42.25, "declared: upstream #16215")
    clock.tick(20)
    problems = ["[fail] after/read quickstart client 2.22.5: run.params.lr: '2', expected '1'\nTraceback ..."]
    gw1.verdict(b.id, "fail", 62.0, "after read: run.params.lr differs\n(+3 more)", problems)
    watch.poll()
    assert out.getvalue().splitlines() == [
        "2026-11-29T10:00:00Z [gw0] sqlite:2.22.5->3.17.2 start",
        "2026-11-29T10:00:00Z [gw1] postgres:2.22.5->3.17.2 start",
        "2026-11-29T10:00:02Z [gw0] sqlite:2.22.5->3.17.2 phase before: server-start 2.22.5",
        # 42 s into the run the postgres cell (100 s recorded) has 58 s to go
        "2026-11-29T10:00:42Z [gw0] sqlite:2.22.5->3.17.2 xfail (42.2 s; 1/2 done, ETA ~58s): declared: "
        "upstream #16215",
        "2026-11-29T10:01:02Z [gw1] postgres:2.22.5->3.17.2 FAIL (62.0 s; 2/2 done): after read: "
        "run.params.lr differs …",
        "    [fail] after/read quickstart client 2.22.5: run.params.lr: '2', expected '1' …",
    ]


class _Lock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_show_without_a_terminal_prints_what_the_workers_wrote_last(tmp_path: Path) -> None:
    """`show` tails in a thread; when the body ends (pytest returned) the last events are still printed."""
    cell = plan("sqlite")
    out = io.StringIO()
    with progress.show(tmp_path, [cell], jobs=1, stream=out, live=None) as board:
        gw = progress.Emitter(progress.events_dir(tmp_path) / "main.jsonl", "main")
        gw.start(cell.id)
        gw.verdict(cell.id, "pass", 1.5, "")
    lines = out.getvalue().splitlines()
    assert [re.sub(r"^\S+ ", "", line) for line in lines] == [
        "[main] sqlite:2.22.5->3.17.2 start",
        "[main] sqlite:2.22.5->3.17.2 pass (1.5 s; 1/1 done)",
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in lines)
    assert len(board.done) == 1 and not board.running


class TerminalIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_live_display_and_a_dumb_one_the_lines(tmp_path: Path, monkeypatch) -> None:
    cell = plan("sqlite")
    for term, run_dir in (("xterm-256color", tmp_path / "a"), ("dumb", tmp_path / "b")):
        monkeypatch.setenv("TERM", term)
        out = TerminalIO()
        with progress.show(run_dir, [cell], jobs=1, stream=out):
            gw = progress.Emitter(progress.events_dir(run_dir) / "main.jsonl", "main")
            gw.start(cell.id)
            gw.phase(cell.id, "upgrade", "db-upgrade 3.17.2")
            time.sleep(0.8)  # the display's thread reads the events; the live area is drawn meanwhile
            gw.verdict(cell.id, "fail", 3.0, "after read: differs", ["[fail] after/read: x"])
        text = plain(out.getvalue())
        if term == "dumb":
            assert "\x1b[" not in out.getvalue()
            assert [re.sub(r"^\S+ ", "", line) for line in text.splitlines()] == [
                "[main] sqlite:2.22.5->3.17.2 start",
                "[main] sqlite:2.22.5->3.17.2 phase upgrade: db-upgrade 3.17.2",
                "[main] sqlite:2.22.5->3.17.2 FAIL (3.0 s; 1/1 done): after read: differs",
                "    [fail] after/read: x",
            ]
        else:
            assert "mlflow-compat 0/1 cells done · 1 running" in text
            assert re.search(r"main +sqlite:2\.22\.5->3\.17\.2 +upgrade: db-upgrade 3\.17\.2 +\d+s", text)
            assert (
                "✗ FAIL sqlite:2.22.5->3.17.2 (3s) [main]: after read: differs\n    [fail] after/read: x"
                in text
            )
            assert "mlflow-compat 1/1 cells done · 1 fail · 0 running" in text


# -- the ETA -------------------------------------------------------------------------------------------------
def test_the_eta_deals_the_cells_left_to_the_workers_free_first() -> None:
    a, b, c, d = plan("sqlite"), plan("postgres"), plan("mysql"), plan("file")
    board = progress.Board.of(
        [a, b, c, d],
        jobs=2,
        expected=expected_seconds([a, b, c, d], known((a, 100.0), (b, 80.0), (c, 50.0), (d, 30.0))),
    )
    assert board.eta(T0) == 130.0  # nothing started: {a, d} and {b, c}
    board.apply(progress.Event(T0, "gw0", a.id, "start"))
    board.apply(progress.Event(T0, "gw1", b.id, "start"))
    now = T0 + timedelta(seconds=70)
    # a: 30 s left, b: 10 s left; c goes to gw1 (free at 10), d to gw0 (free at 30): 60 s
    assert board.eta(now) == 60.0
    assert board.overdue(now) == 0
    later = T0 + timedelta(seconds=90)  # b past its 80 s: counted as ending now, and said
    assert board.overdue(later) == 1
    assert "1 running past their recorded time" in board.eta_text(later)


def test_without_a_recorded_duration_the_eta_is_unknown_and_says_why() -> None:
    board = progress.Board.of([plan("sqlite")], jobs=1, expected=expected_seconds([plan("sqlite")], {}))
    assert board.eta(T0) is None and board.eta_text(T0) == "unknown (no recorded durations)"


# -- the live display ----------------------------------------------------------------------------------------
def rendered(renderable: object) -> str:
    from rich.console import Console

    console = Console(record=True, width=140, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_the_live_view_shows_counts_running_cells_with_phase_and_elapsed_time_and_the_eta(
    tmp_path: Path,
) -> None:
    a, b, c = plan("sqlite"), plan("postgres"), plan("mysql")
    board = progress.Board.of(
        [a, b, c], jobs=2, expected=expected_seconds([a, b, c], known((a, 100.0), (b, 200.0), (c, 300.0)))
    )
    board.apply(progress.Event(T0, "gw0", c.id, "start"))
    board.apply(progress.Event(T0, "gw1", b.id, "start"))
    board.apply(
        progress.Event(T0 + timedelta(seconds=5), "gw1", b.id, "phase", "upgrade", "db-upgrade 3.17.2")
    )
    board.apply(progress.Event(T0 + timedelta(seconds=50), "gw1", b.id, "verdict", status="fail", seconds=50))
    board.apply(progress.Event(T0 + timedelta(seconds=50), "gw1", a.id, "start"))
    board.apply(progress.Event(T0 + timedelta(seconds=55), "gw1", a.id, "phase", "before", "write"))
    text = rendered(progress.board_view(board, T0 + timedelta(seconds=65)))
    head, columns, *rows = text.splitlines()
    assert head == "mlflow-compat 1/3 cells done · 1 fail · 2 running · elapsed 1m05s · ETA ~3m55s"
    assert columns.split() == ["worker", "cell", "phase", "elapsed"]
    assert [r.split() for r in rows] == [
        ["gw0", "mysql:2.22.5->3.17.2", "starting", "1m05s", "of", "~5m00s"],
        ["gw1", "sqlite:2.22.5->3.17.2", "before:", "write", "15s", "(step", "10s)", "of", "~1m40s"],
    ]
    assert "ETA" not in rendered(progress.board_view(progress.Board(["x"], 1, done={"x": _verdict("x")}), T0))


def _verdict(cell: str, status: str = "pass", problems: tuple[str, ...] = ()) -> progress.Event:
    return progress.Event(
        T0, "gw0", cell, "verdict", status=status, seconds=75, summary="", problems=problems
    )


def test_a_finished_cell_is_printed_above_the_display_a_failure_as_one_with_its_checks() -> None:
    fail = rendered(progress.finished_line(_verdict("sqlite:a->b", "fail", ("[fail] after/read: x\nmore",))))
    assert fail.splitlines() == ["✗ FAIL sqlite:a->b (1m15s) [gw0]", "    [fail] after/read: x …"]
    passed = rendered(progress.finished_line(_verdict("sqlite:a->b", "pass", ("ignored",))))
    assert passed.splitlines() == ["✓ pass sqlite:a->b (1m15s) [gw0]"]


# -- real runs -----------------------------------------------------------------------------------------------
NOISE = re.compile(r"bringing up nodes|created: \d+/\d+ workers|initialized: |ready: \d+/|collecting: ")
LETTERS = re.compile(r"^[.sxXFE]+\s*(\[\s*\d+%\])?$")  # pytest's progress characters
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
BROKEN = """
import mlflow

mlflow.log_param("x", 1)
raise SystemExit("planted: training data missing")
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "--runtime", "local", *args]


def cell_lines(lines: list[str], cell: str) -> list[tuple[datetime, str, str]]:
    """(time, worker, what) of every progress line of ``cell``."""
    pattern = re.compile(rf"^({STAMP}) \[(\w+)\] {re.escape(cell)} (.*)$")
    found = []
    for line in lines:
        if m := pattern.match(line):
            found.append((datetime.fromisoformat(m[1].replace("Z", "+00:00")), m[2], m[3]))
    return found


SQLITE_TIMELINE = [
    "start",
    "phase env: MLflow 2.22.5",
    "phase env: MLflow 3.17.2",
    "phase before: server-start 2.22.5",
    "phase before: write",
    "phase before: read",
    "phase upgrade: backup",
    "phase upgrade: unupgraded-start 3.17.2",
    "phase upgrade: db-upgrade 3.17.2",
    "phase upgrade: integrity 3.17.2",
    "phase upgrade: schema-drift 3.17.2",
    "phase after: backup",
    "phase after: server-start 3.17.2",
    "phase after: write",
    "phase after: read",
    "phase rollback: rollback-start 2.22.5",
    "phase rollback: restore",
    "phase rollback: backup",
    "phase rollback: server-start 2.22.5",
    "phase rollback: restore-read",
]


@pytest.mark.cell
def test_without_a_terminal_a_real_run_prints_each_cells_start_phases_and_verdict(tmp_path: Path) -> None:
    """Two real cells in parallel (xdist, -n 2), stdout a pipe: each cell's timestamped start, every phase
    change in timeline order, and its verdict as results.json has it; none of xdist's or pytest's own
    running output."""
    results = tmp_path / "results"
    started = time.monotonic()
    proc = subprocess.run(cli("--backend", "sqlite", "--backend", "file", "--path", "2.22.5:3.17.2",
                              "--scenarios", "quickstart", "-n", "2", "--results-dir", str(results)),
                          cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip
    print(f"run: {time.monotonic() - started:.0f} s")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    run = json.loads(((results / "latest").resolve() / "results.json").read_text())
    assert {c["id"] for c in run["cells"]} == {"sqlite:2.22.5->3.17.2", "file:2.22.5->3.17.2"}
    workers = set()
    for cell in run["cells"]:
        seen = cell_lines(lines, cell["id"])
        whats = [what for _, _, what in seen]
        assert whats[-1].startswith(f"pass ({cell['seconds']:.1f} s; "), whats[-1]
        assert whats[0] == "start"
        times = [t for t, _, _ in seen]
        assert times == sorted(times), "a cell's lines come in the order they happened"
        began = datetime.fromisoformat(cell["started"])
        assert abs((times[0] - began).total_seconds()) <= 2, (times[0], began)
        workers |= {w for _, w, _ in seen}
        if cell["backend"] == "sqlite":
            assert whats[:-1] == SQLITE_TIMELINE
        else:  # the file store has no schema: its schema steps are skips, shown all the same
            assert whats.index("phase before: server-start 2.22.5") < whats.index("phase upgrade: backup")
            assert whats.index("phase upgrade: backup") < whats.index("phase after: server-start 3.17.2")
            assert whats.index("phase after: server-start 3.17.2") < whats.index(
                "phase rollback: restore-read"
            )
    assert workers == {"gw0", "gw1"}, "the cells ran on xdist's workers"
    verdicts = [i for i, line in enumerate(lines) if re.match(rf"{STAMP} \[gw\d\] \S+ pass ", line)]
    table = next(i for i, line in enumerate(lines) if "mlflow-compat run " in line)
    assert max(verdicts) < table, "the verdicts come as they happen, before the summary table"
    assert not [line for line in lines if NOISE.search(line) or LETTERS.match(line.strip())], out


def run_in_pty(argv: list[str], timeout: float) -> tuple[int, list[tuple[float, str]]]:
    """``argv`` under a pseudo-terminal (140 x 40) as a person's shell runs it: its exit code and its output
    as (seconds since start, text) chunks."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, on the terminal
        os.chdir(REPO)
        os.environ.update(COLUMNS="140", LINES="40", TERM="xterm-256color")
        os.execv(argv[0], argv)
    chunks: list[tuple[float, str]] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append((time.monotonic() - started, data.decode("utf-8", errors="replace")))
    finally:
        if time.monotonic() - started >= timeout:
            os.kill(pid, 2)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), chunks


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x1b]*\x1b\\", "", text).replace("\r", "\n")


@pytest.mark.cell
@pytest.mark.fault
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_a_failing_cell_is_shown_as_a_failure_while_the_run_goes_on(tmp_path: Path, terminal: bool) -> None:
    """A planted failure (a user's script that raises) in two real cells run one after the other: the first
    cell's failure, with its failing check, is shown before the second cell has even started. On a
    terminal, the live display shows the counts, the running cell's phase and elapsed time, and the ETA."""
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    argv = cli("--backend", "sqlite", "--backend", "file", "--path", "2.22.5:3.17.2", "--scenarios", "none",
               "--scenario", str(broken), "-n", "1", "--results-dir", str(tmp_path / "results"))  # fmt: skip
    started = time.monotonic()
    if terminal:
        code, chunks = run_in_pty(argv, timeout=900)
        text = plain("".join(c for _, c in chunks))
    else:
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        code, text = proc.returncode, proc.stdout
    print(f"run: {time.monotonic() - started:.0f} s")
    assert code == 1, text
    run = json.loads(((tmp_path / "results" / "latest").resolve() / "results.json").read_text())
    first, second = sorted(run["cells"], key=lambda c: c["started"])
    assert first["status"] == second["status"] == "fail"
    if terminal:
        failure = text.index(f"✗ FAIL {first['id']} (")
        assert "[fail] before/write script:broken.py client 2.22.5 server 2.22.5" in text[failure:]
        later = re.search(rf"main +{re.escape(second['id'])} +\S", text)  # the second cell's row, running
        assert later is not None and failure < later.start(), text
        assert re.search(r"mlflow-compat 1/2 cells done · 1 fail · 1 running · elapsed \d+s · ETA ", text), (
            text
        )
        assert re.search(r"main +\S+ +before: server-start 2\.22\.5 +\d+s", text), text
    else:
        failure = text.index(f"[main] {first['id']} FAIL (")
        assert re.search(r"\n {4}\[fail\] before/write script:broken.py client 2.22.5 server 2.22.5: ",
                         text[failure:])  # fmt: skip
        assert failure < text.index(f"[main] {second['id']} start"), text
    assert not NOISE.search(text), text


# -- the bench's stages --------------------------------------------------------------------------------------
def test_a_bench_stage_that_fails_says_so_instead_of_looking_still_running(capsys) -> None:
    from harness.bench import stage

    with stage("matrix"):
        pass
    with pytest.raises(RuntimeError), stage("floor"):
        raise RuntimeError("a start crashed")
    out = capsys.readouterr().out.splitlines()
    assert [re.sub(r"^bench: \[[\d:]+\] ", "", line) for line in out] == [
        "matrix ...",
        "matrix: done in 0 s",
        "floor ...",
        "floor: failed after 0 s (RuntimeError)",
    ]


def test_the_bench_relays_each_cells_start_and_verdict_from_a_running_matrix_log(
    tmp_path: Path, capsys
) -> None:
    from harness.bench import Relay

    log = tmp_path / "matrix.log"
    log.write_text("mlflow-compat: 1 cells; results in /x\n2026-11-29T10:00:00Z [main] sqlite:a->b start\n")
    relay = Relay(log, interval=0.05)
    time.sleep(0.3)
    with log.open("a") as fh:
        fh.write("2026-11-29T10:00:01Z [main] sqlite:a->b phase before: write\n")
        fh.write("2026-11-29T10:00:09Z [main] sqlite:a->b FAIL (9.0 s; 1/1 done): x\n    [fail] detail\n")
        fh.write("2026-11-29T10:00:09Z [main] sqlite:a->b pa")  # half a line: not yet
    relay.stop()
    out = [re.sub(r"^bench: \[[\d:]+\] ", "", line) for line in capsys.readouterr().out.splitlines()]
    assert out == [
        "  2026-11-29T10:00:00Z [main] sqlite:a->b start",
        "  2026-11-29T10:00:09Z [main] sqlite:a->b FAIL (9.0 s; 1/1 done): x",
    ]
