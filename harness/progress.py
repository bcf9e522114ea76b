"""A run's progress as people watch it: the workers' event files, and the controller that shows them.

Every pytest worker appends JSON lines to `<run dir>/progress/<worker id>.jsonl` (one writer per file,
`Emitter`): a cell's `start`, each `phase` change of its timeline (the phase and the step in it: `before`
`server-start 2.22.5`, `upgrade` `db-upgrade 3.17.2`, ...; harness.cell says when) and its `verdict` with the
summary, the seconds and its failing checks. While pytest runs, the controller (harness.run `run_cells`)
tails those files in a thread of its own (`show`): on a terminal, a rich Live display (cells done/total,
every running cell with its phase and elapsed time, an ETA from the recorded durations, which the controller
passes in)
with each finished cell printed above it as it ends, failures with their failing checks; without a
terminal (CI logs), one line per start, phase change and verdict, each with its UTC time. The display
writes to a duplicate of the controller's stdout, so that pytest's capture of an in-process cell (-n 1)
does not swallow it. What does not live here: when a cell changes phase (harness.cell), pytest's own
output (quieted by harness.plugin), the summary table after the run (harness.cli).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from harness.plan import CellPlan

DIR = "progress"
EVENTS = ("start", "phase", "verdict")
BAD = ("fail", "error", "xpass")  # verdicts shown as failures as they happen
PROBLEMS = 5  # failing checks a verdict event carries (then "... and N more")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def events_dir(run_dir: Path) -> Path:
    return run_dir / DIR


def worker_id(config: Any) -> str:
    """A pytest process's name in the run: its xdist worker id (gw0, gw1, ...), else `main` (-n 1: the cells
    run in-process). Asked of the pytest config, never of the environment: a run started from inside
    another pytest's worker inherits that one's PYTEST_XDIST_WORKER."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- the workers' side ---------------------------------------------------------------------------------
class Emitter:
    """Appends one worker's events to its file, a line each, flushed at once. Progress is for people: a
    file that cannot be written is said once on stderr and then left alone; it never changes a verdict."""

    def __init__(self, path: Path, worker: str, clock: Clock = utc_now) -> None:
        self.path, self.worker, self.clock = path, worker, clock
        self.broken: str | None = None

    def emit(self, cell: str, event: str, **fields: Any) -> None:
        if self.broken is not None:
            return
        line = json.dumps({"t": stamp(self.clock()), "worker": self.worker, "cell": cell, "event": event,
                           **fields})  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            self.broken = str(exc)
            print(f"mlflow-compat: progress events not written ({exc}); the run goes on", file=sys.stderr)

    def start(self, cell: str) -> None:
        self.emit(cell, "start")

    def phase(self, cell: str, phase: str, step: str) -> None:
        self.emit(cell, "phase", phase=phase, step=step)

    def verdict(
        self, cell: str, status: str, seconds: float, summary: str, problems: Sequence[str] = ()
    ) -> None:
        self.emit(cell, "verdict", status=status, seconds=seconds, summary=summary, problems=list(problems))

    def for_cell(self, cell: str) -> Callable[[str, str], None]:
        """What a cell reports its phase changes through (harness.cell `CellContext.progress`)."""
        return lambda phase, step: self.phase(cell, phase, step)


# -- the controller's side ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    t: datetime
    worker: str
    cell: str
    event: str
    phase: str = ""
    step: str = ""
    status: str = ""
    seconds: float = 0.0
    summary: str = ""
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, line: str, worker: str) -> Event:
        """One line of a worker's file; ValueError (with why) when it is not an event."""
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("event") not in EVENTS or not data.get("cell"):
            raise ValueError(f"not a progress event: {line[:120]!r}")
        t = datetime.fromisoformat(str(data["t"]).replace("Z", "+00:00"))
        return cls(t=t, worker=str(data.get("worker") or worker), cell=str(data["cell"]), event=data["event"],
                   phase=str(data.get("phase") or ""), step=str(data.get("step") or ""),
                   status=str(data.get("status") or ""), seconds=float(data.get("seconds") or 0.0),
                   summary=str(data.get("summary") or ""),
                   problems=tuple(str(p) for p in data.get("problems") or ()))  # fmt: skip


class Tail:
    """New events from every worker's file since the last `poll`, oldest first. A line still being written
    (no newline yet) waits for the next poll; a line that is not an event is kept in ``unreadable``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, str] = {}
        self.unreadable: list[str] = []

    def poll(self) -> list[Event]:
        found: list[Event] = []
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("*.jsonl")):
            try:
                with path.open("rb") as fh:
                    fh.seek(self.offsets.get(path, 0))
                    chunk = fh.read()
            except OSError:
                continue
            self.offsets[path] = self.offsets.get(path, 0) + len(chunk)
            text = self.partial.pop(path, "") + chunk.decode("utf-8", errors="replace")
            *lines, rest = text.split("\n")
            if rest:
                self.partial[path] = rest
            for line in filter(None, lines):
                try:
                    found.append(Event.parse(line, path.stem))
                except (ValueError, KeyError, TypeError) as exc:
                    self.unreadable.append(f"{path.name}: {exc}")
        return sorted(found, key=lambda e: e.t)


@dataclass
class Running:
    worker: str
    started: datetime
    phase: str = ""
    step: str = ""
    since: datetime | None = None  # when the current step began


@dataclass
class Board:
    """What the events say so far: cells done (with their verdicts), cells running (with their step), and
    what is left; the ETA from each cell's expected seconds (harness.durations `estimates`)."""

    cells: list[str]  # the run's cells, in the order the run hands them out (longest first)
    jobs: int
    # Expected seconds by cell id: recorded, or the median of recorded cells alike; empty if none is recorded.
    expected: dict[str, float] = field(default_factory=dict)
    started: datetime | None = None
    running: dict[str, Running] = field(default_factory=dict)
    done: dict[str, Event] = field(default_factory=dict)

    @classmethod
    def of(cls, cells: Sequence[CellPlan], jobs: int, expected: Mapping[str, float] | None = None) -> Board:
        """The board of a run's planned cells; ``expected``: each cell's expected seconds by id
        (harness.durations `expected_seconds`, which the controller passes), none: no ETA."""
        return cls([c.id for c in cells], max(1, min(jobs, len(cells))), dict(expected or {}))

    def apply(self, event: Event) -> None:
        if self.started is None or event.t < self.started:
            self.started = event.t
        if event.event == "start":
            self.done.pop(event.cell, None)  # a worker that crashed and was replaced runs it again
            self.running[event.cell] = Running(event.worker, event.t, since=event.t)
        elif event.event == "phase":
            cell = self.running.setdefault(event.cell, Running(event.worker, event.t))
            cell.phase, cell.step, cell.since = event.phase, event.step, event.t
        else:
            self.running.pop(event.cell, None)
            self.done[event.cell] = event

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for event in self.done.values():
            out[event.status] = out.get(event.status, 0) + 1
        return out

    def eta(self, now: datetime) -> float | None:
        """Seconds until the last cell ends: each running cell's expected time left, then the cells not
        started, in run order, each to the worker free first. None when no cell has a recorded duration."""
        if not self.expected:
            return None
        left = [max(self.expected.get(c, 0.0) - (now - r.started).total_seconds(), 0.0)
                for c, r in self.running.items()]  # fmt: skip
        free = sorted(left + [0.0] * max(self.jobs - len(left), 0))
        for cell in self.cells:
            if cell not in self.running and cell not in self.done:
                k = min(range(len(free)), key=lambda j: free[j])
                free[k] += self.expected.get(cell, 0.0)
        return max(free, default=0.0)

    def overdue(self, now: datetime) -> int:
        """Running cells already past their recorded time (the ETA counts them as ending now)."""
        return sum(
            1
            for c, r in self.running.items()
            if c in self.expected and (now - r.started).total_seconds() > self.expected[c]
        )

    def eta_text(self, now: datetime) -> str:
        """`~4m10s`, with how many running cells are past their recorded time; `unknown (...)` without any."""
        eta = self.eta(now)
        if eta is None:
            return "unknown (no recorded durations)"
        late = self.overdue(now)
        return f"~{clock_text(eta)}" + (f" ({late} running past their recorded time)" if late else "")


def clock_text(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def one_line(text: str, limit: int = 240) -> str:
    """A summary or a check's detail on one line (they may hold a traceback): its first line, cut."""
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    more = len(lines) > 1 or len(first) > limit
    return first[:limit] + (" …" if more else "")


def where(phase: str, step: str) -> str:
    return f"{phase}: {step}" if step and step != phase else phase


def tally(board: Board, now: datetime) -> str:
    """`3/12 done, ETA ~4m10s` (the ETA left out when nothing has a recorded duration)."""
    text = f"{len(board.done)}/{len(board.cells)} done"
    if board.expected and len(board.done) < len(board.cells):
        text += f", ETA {board.eta_text(now)}"
    return text


class Lines:
    """Without a terminal: one line per start, phase change and verdict, with its UTC time, e.g.
    `2026-11-29T10:01:02Z [gw0] sqlite:2.22.5->3.17.2 phase upgrade: db-upgrade 3.17.2`. A verdict that is a
    failure carries its failing checks, indented below it."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def handle(self, event: Event, board: Board) -> None:
        head = f"{event.t:%Y-%m-%dT%H:%M:%SZ} [{event.worker}] {event.cell}"
        if event.event == "start":
            lines = [f"{head} start"]
        elif event.event == "phase":
            lines = [f"{head} phase {where(event.phase, event.step)}"]
        else:
            status = event.status.upper() if event.status in BAD else event.status
            lines = [f"{head} {status} ({event.seconds:.1f} s; {tally(board, event.t)})"
                     + (f": {one_line(event.summary)}" if event.summary else "")]  # fmt: skip
            if event.status in BAD:
                lines += [f"    {one_line(p)}" for p in event.problems]
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(f"mlflow-compat: {text}\n")
        self.out.flush()

    def close(self) -> None:
        pass


COLOURS = {  # a verdict as rich colours it (the live display, the summary table after a run)
    "pass": "green",
    "fail": "red",
    "error": "yellow",
    "skip": "dim",
    "xfail": "blue",
    "xpass": "magenta",
}


def finished_line(event: Event) -> Any:
    """A finished cell as printed above the live display (rich Text; ids are not markup)."""
    from rich.text import Text

    colour = COLOURS.get(event.status, "")
    mark = "✗" if event.status in BAD else "-" if event.status == "skip" else "✓"
    text = Text(f"{mark} ", style=colour)
    text.append(f"{event.status.upper() if event.status in BAD else event.status}", style=f"bold {colour}")
    text.append(f" {event.cell} ({clock_text(event.seconds)}) [{event.worker}]")
    if event.summary:
        text.append(f": {one_line(event.summary)}", style="red" if event.status in BAD else "")
    for problem in event.problems if event.status in BAD else ():
        text.append(f"\n    {one_line(problem)}")
    return text


def board_view(board: Board, now: datetime) -> Any:
    """The live area: a line of counts and the ETA, then a row per running cell."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = board.counts()
    head = Text("mlflow-compat ", style="bold")
    head.append(f"{len(board.done)}/{len(board.cells)} cells done")
    for status, n in sorted(counts.items()):
        head.append(f" · {n} {status}", style=COLOURS.get(status, ""))
    head.append(f" · {len(board.running)} running")
    if board.started is not None:
        head.append(f" · elapsed {clock_text((now - board.started).total_seconds())}")
    if len(board.done) < len(board.cells):
        head.append(f" · ETA {board.eta_text(now)}")
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="dim")
    for col in ("worker", "cell", "phase", "elapsed"):
        table.add_column(col)
    for cell, r in sorted(board.running.items(), key=lambda kv: kv[1].worker):
        elapsed = clock_text((now - r.started).total_seconds())
        if r.since is not None and r.step:
            elapsed += f" (step {clock_text((now - r.since).total_seconds())})"
        expected = board.expected.get(cell)
        if expected:
            elapsed += f" of ~{clock_text(expected)}"
        table.add_row(r.worker, Text(cell), Text(where(r.phase, r.step) or "starting"), elapsed)
    return Group(head, table) if board.running else head


class LiveView:
    """On a terminal: a rich Live display of the board, re-drawn a few times a second; each finished cell
    is printed above it as it ends. Whatever else writes to stdout or stderr meanwhile (pytest's own lines)
    is printed above it too."""

    def __init__(self, out: IO[str], board: Board, clock: Clock, lock: threading.Lock) -> None:
        from rich.console import Console
        from rich.live import Live

        self.board, self.clock, self.lock = board, clock, lock
        self.console = Console(file=out, force_terminal=True)
        self.live = Live(console=self.console, get_renderable=self.render, refresh_per_second=4,
                         redirect_stdout=True, redirect_stderr=True)  # fmt: skip
        self.live.start()

    def render(self) -> Any:
        with self.lock:
            return board_view(self.board, self.clock())

    def handle(self, event: Event, board: Board) -> None:
        if event.event == "verdict":
            self.live.console.print(finished_line(event))

    def note(self, text: str) -> None:
        self.live.console.print(f"mlflow-compat: {text}", markup=False)

    def close(self) -> None:
        self.live.refresh()
        self.live.stop()


class Watch:
    """Tails the event files in a thread and hands each new event to the view, then the board. `finish`
    (idempotent) stops the thread, shows what the workers wrote last and closes the view."""

    def __init__(self, directory: Path, board: Board, view: Lines | LiveView, lock: threading.Lock,
                 interval: float = 0.25) -> None:  # fmt: skip
        self.tail, self.board, self.view, self.lock, self.interval = (
            Tail(directory),
            board,
            view,
            lock,
            interval,
        )
        self.polling = threading.Lock()  # one poll at a time: the thread's, or `finish`'s last one
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mlflow-compat-progress", daemon=True)
        self.said = 0
        self.finished = False

    def poll(self) -> None:
        with self.polling:
            if self.finished:
                return
            for event in self.tail.poll():
                with self.lock:
                    self.board.apply(event)
                self.view.handle(event, self.board)
            for line in self.tail.unreadable[self.said :]:
                self.view.note(f"progress: unreadable event ({line})")
            self.said = len(self.tail.unreadable)

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            self.poll()

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        if self.finished:
            return
        self.stopping.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        try:
            self.poll()  # what the workers wrote last
        finally:
            with self.polling:
                self.finished = True
            self.view.close()


_active: Watch | None = None  # the display of the run this process controls, while `show` runs


def finish() -> None:
    """End the run's progress display now (if this process shows one): pytest calls it (harness.plugin)
    when its session ends, so that the last verdicts come before pytest's summary of failures, which is
    then printed below the display instead of through it."""
    if _active is not None:
        _active.finish()


def _own_stdout(stream: IO[str]) -> tuple[IO[str], bool]:
    """A file on the controller's stdout that pytest's fd capture (of a cell run in-process) does not
    redirect: a duplicate of its descriptor. Streams without one (a test's StringIO) are used as they are."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream, False
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


@contextlib.contextmanager
def show(run_dir: Path, cells: Sequence[CellPlan], jobs: int, expected: Mapping[str, float] | None = None,
         stream: IO[str] | None = None, live: bool | None = None,
         clock: Clock = utc_now) -> Iterator[Board]:  # fmt: skip
    """Show the run's progress while the body runs (pytest): live on a terminal (``live``: None decides
    by whether ``stream``, default stdout, is one, and not a dumb one), else as lines; the ETA from
    ``expected`` (each cell's expected seconds). Stopped whatever ends the body (Ctrl-C too)."""
    global _active
    stream = stream if stream is not None else sys.stdout
    if live is None:  # a terminal that cannot move its cursor (TERM=dumb) gets the lines
        live = stream.isatty() and os.environ.get("TERM") != "dumb"
    out, owned = _own_stdout(stream)
    board, lock = Board.of(cells, jobs, expected), threading.Lock()
    view: Lines | LiveView = LiveView(out, board, clock, lock) if live else Lines(out)
    watch = Watch(events_dir(run_dir), board, view, lock)
    watch.start()
    _active = watch
    try:
        yield board
    finally:
        _active = None
        try:
            watch.finish()
        finally:
            if owned:
                out.close()
