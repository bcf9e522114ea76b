"""`nox -s bench`: the matrix's cost against its floor and against the naive way, in one run.

  envs     every version's env exists (built now if not, reported apart); then each version's env built
           again in a throwaway cache (uv's download cache stays warm): the harness's cold cost
  floor    what the naive way cannot avoid either: every server start a cell makes, by backend, version and
           kind (an empty store: fresh; the version's own schema: existing; another version's schema:
           refused, or migrated by the server itself), each kind MEASURED here as the median of 3 real
           `mlflow server` starts (LocalRuntime("cli"), whatever launch the matrix uses: the floor is the
           CLI-start floor, so a ratio below 1 is possible and means the harness beat it); plus one bare
           `import mlflow` per client version and worker. How many starts of each kind a cell makes is
           read from the matrix's own results (each start is a check: harness/cell.py), summed over the
           cells and spread over the cores.
  work     what MLflow itself spends inside the cells: every record's seconds as its client process timed
           it (each step's output, failed records included) and every `mlflow db upgrade` check.
           floor + work over the cores is what a perfect harness would take; wall minus that is overhead.
  matrix   `mlflow-compat run` on the benchmark matrix twice: `--server-launch fork` (wall, and the peak RSS
           of its process tree sampled every 0.2 s) and `--server-launch cli` (cli_wall).
  naive    one cell of the matrix run the naive way: `python -m venv` and `pip install --no-cache-dir` per
           version (no uv, no byte-compiling beyond pip's), placed in a throwaway cache root where the
           harness's EnvCache finds them (so the cell runs in those venvs), a fresh interpreter per client
           step (--client-launch spawn), real CLI servers (--server-launch cli), alone (-n 1). Its verdicts
           must be the matrix's for that cell, check by check, or no speedup is printed. Multiplied by the
           matrix's cell count (an estimate from one cell), compared warm (envs exist) and cold (envs built
           inside the timed wall: the harness's throwaway-cache builds + wall; naive venv+pip per version +
           the cells).

A matrix with any `fail` or `error` cell prints no ratio and no speedup (ratio=n/a, and why). Prints each
stage as it starts and ends (and, while a matrix runs, each of its cells' start and verdict), a table,
writes results/bench/<run-id>.json and ends with the one line:
  bench: wall=<s> cli_wall=<s> floor=<s> ratio=<wall/floor> naive_speedup=<x> peak_rss=<MiB>
Timings are measurements to read, never assertions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from harness import databases, owner, procs
from harness.backends import DATABASE_BACKENDS, Store, backend_names, new_store
from harness.envs import MANIFEST, Env, EnvCache
from harness.paths import cache_root
from harness.rundir import RunDir
from harness.runtime.local import LocalRuntime
from harness.scenarios import builtin, default_names, fitting
from harness.server import ServerStartError, StartFailure
from harness.specs import Spec, SpecError, parse_path

DEFAULT_BACKENDS = ["sqlite", "postgres"]
DEFAULT_PATHS = ["1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2"]
REPEATS = 3  # each kind of start and each import is measured this many times; the floor takes the median
CLIENT_STEPS = ("write", "read", "restore-read")
BAD_CELL = ("fail", "error")


class BenchError(RuntimeError):
    """The bench could not measure what it set out to (a floor start that crashed, a matrix that ran no
    cells): it says so and stops, rather than print a figure that means nothing."""


def clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


def say(text: str) -> None:
    print(f"bench: [{clock()}] {text}", flush=True)


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Print a stage as it starts and as it ends (done, or failed and how), so that a long bench is never
    silent and never leaves a stage looking as if it were still running."""
    say(f"{what} ...")
    started = time.monotonic()
    try:
        yield
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
        say(f"{what}: failed after {time.monotonic() - started:.0f} s ({why})")
        raise
    say(f"{what}: done in {time.monotonic() - started:.0f} s")


# A matrix's progress line (harness.progress, without a terminal) of a cell's start or verdict.
CELL_LINE = re.compile(r"^\S+Z \[\w+\] \S+ (start|pass|fail|FAIL|error|ERROR|skip|xfail|xpass|XPASS)\b")


class Relay:
    """While a matrix runs with its output in a log, says each cell's start and verdict from that log (its
    progress lines), so that minutes of matrix are not silent."""

    def __init__(self, log: Path, interval: float = 1.0) -> None:
        self.log, self.interval, self.offset, self.rest = log, interval, 0, ""
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        try:
            with self.log.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return
        self.offset += len(chunk)
        *lines, self.rest = (self.rest + chunk.decode(errors="replace")).split("\n")
        for line in lines:
            if CELL_LINE.match(line):
                say(f"  {line}")

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.poll()


# -- process-tree memory -----------------------------------------------------------------------------
def _tree_rss(root: int) -> int:
    """Resident memory of ``root`` and every descendant, in bytes (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(stat[1]), []).append(pid)
        rss[pid] = int(statm[1]) * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakRss:
    """Samples a process tree's resident memory in the background; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _tree_rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# -- the floor: server starts by kind --------------------------------------------------------------------
@dataclass(frozen=True)
class StartKey:
    """One kind of server start: ``version``'s server on a ``backend`` store that is empty (``on`` None),
    at its own schema head (``on`` == version), or at another version's head (``on``: that version)."""

    backend: str
    version: str
    on: str | None

    def __lt__(self, other: StartKey) -> bool:  # sorted: by backend, version, empty store first
        return (self.backend, self.version, self.on or "") < (other.backend, other.version, other.on or "")

    def label(self) -> str:
        where = "empty store" if self.on is None else "own schema" if self.on == self.version else self.on
        return f"{self.backend} {self.version} on {where}"


@dataclass
class Sample:
    """A kind of start as measured: what the server did (fresh, existing, refused, migrated) and each time."""

    kind: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def planned_starts(path: Sequence[Spec], backend: str) -> list[StartKey]:
    """The server starts a cell's timeline makes (harness/cell.py, Cell.run), in order: what the floor
    measures. A cell's actual count is read from its results (recorded_starts), which also sees the starts
    that depend on state (a schema reference made on a cold cache)."""
    first = path[0].label
    keys = [StartKey(backend, first, None)]  # before: Cell.serve_phase -> Cell.server, on a fresh store
    for prev, target in itertools.pairwise(path):
        # upgrade: Cell.probe_unupgraded (UNUPGRADED_START) starts TO on the store still at FROM's head
        keys.append(StartKey(backend, target.label, prev.label))
        # after: Cell.serve_phase on the store `mlflow db upgrade` took to TO's head
        keys.append(StartKey(backend, target.label, target.label))
    keys.append(StartKey(backend, first, path[-1].label))  # rollback: Cell.probe_old_server (ROLLBACK_START)
    # rollback: Cell.server on the restored backup (the restore-read), at FROM's own head again
    keys.append(StartKey(backend, first, first))
    return keys


def _outcome(detail: str) -> str:
    """What a probe start did, from its check's detail (harness/cell.py's wording)."""
    if detail.startswith("refused"):
        return "refused"
    if detail.startswith("migrated"):
        return "migrated"
    if detail.startswith("started"):
        return "existing"
    return "other"  # crashed or served a schema it should not: a failing cell, which prints no ratio


def _hop(phase: str) -> int:
    """`upgrade` -> 1, `upgrade-2` -> 2 (harness/cell.py names a multi-hop path's phases so)."""
    return int(phase.rsplit("-", 1)[1]) if "-" in phase else 1


def recorded_starts(cell: dict[str, Any]) -> list[tuple[StartKey, str]]:
    """Every server start a cell made, read from its checks in results.json, with what it did. Each check
    that starts a server, and where its count comes from (harness/cell.py):
      server-start     Cell.server: each serve phase's server (before: a fresh store; after[-N]: the store
                       just upgraded to this version; rollback: the restored backup, the FROM version's own
                       schema; differential-*: a fresh store)
      unupgraded-start Cell.probe_unupgraded: the hop's TO server on the store at the hop's FROM head
      rollback-start   Cell.probe_old_server: the FROM server on the store at the last version's head
      schema-drift     schema.References.make, only when the reference was not cached ("reference made
                       in"): the TO server on an empty store
    A skipped check started nothing (the file store has no schema to probe)."""
    path, backend = cell["path"], cell["backend"]
    out: list[tuple[StartKey, str]] = []
    for check in cell["checks"]:
        name, phase, detail, version = check["name"], check["phase"], check["detail"], check["server"]
        if check["status"] == "skip" or version is None:
            continue
        if name == "server-start":
            fresh = phase == "before" or phase.startswith("differential")
            if fresh or "created the schema at" in detail:
                out.append((StartKey(backend, version, None), "fresh"))
            else:  # "migrated the schema itself on start" here would be a surprise: counted as its own kind
                kind = "migrated" if "migrated the schema itself" in detail else "existing"
                out.append((StartKey(backend, version, version), kind))
        elif name == "unupgraded-start":
            out.append((StartKey(backend, version, path[_hop(phase) - 1]), _outcome(detail)))
        elif name == "rollback-start":
            out.append((StartKey(backend, version, path[-1]), _outcome(detail)))
        elif name == "schema-drift" and "reference made in" in detail:
            out.append((StartKey(backend, version, None), "fresh"))
    return out


def start_counts(data: dict[str, Any]) -> tuple[Counter[StartKey], dict[StartKey, set[str]]]:
    """How many starts of each kind the matrix's cells made, summed, and what each kind did in them."""
    counts: Counter[StartKey] = Counter()
    seen: dict[StartKey, set[str]] = defaultdict(set)
    for cell in data["cells"]:
        for key, kind in recorded_starts(cell):
            counts[key] += 1
            seen[key].add(kind)
    return counts, seen


def floor_seconds(counts: Counter[StartKey], medians: dict[StartKey, float]) -> tuple[float, list[StartKey]]:
    """Sum of count x measured median over every kind of start; the kinds that were not measured (left out
    of the sum, and named by the caller)."""
    missing = sorted(k for k in counts if k not in medians)
    return sum(n * medians[k] for k, n in counts.items() if k in medians), missing


def timed_start(runtime: LocalRuntime, env: Env, store: Store, log: Path) -> tuple[str, float]:
    """Seconds from launching ``env``'s server on ``store`` until /health answers (or, for a schema refusal,
    until the harness knows it refused), and what it did."""
    before = store.schema_revision()
    started = time.monotonic()
    try:
        server = runtime.start_server(env, store, log)
    except ServerStartError as exc:
        seconds = time.monotonic() - started
        if exc.kind is StartFailure.REFUSED_SCHEMA:
            return "refused", seconds
        raise BenchError(f"floor: MLflow {env.version} did not start ({exc.kind}): {exc}; log {log}") from exc
    seconds = time.monotonic() - started
    server.stop()
    after = store.schema_revision()
    if before is None:
        return "fresh", seconds
    return ("existing" if after == before else "migrated"), seconds


def measure_starts(
    keys: set[StartKey], envs: dict[str, Env], work: Path, repeats: int = REPEATS, launch: str = "cli"
) -> dict[StartKey, Sample]:
    """Every kind of start in ``keys``, ``repeats`` times each, with real `mlflow server` processes. Each
    repetition makes one store per version with a fresh start (which leaves it at that version's head), starts
    the version again on it (existing), then every other version that must start on it (each time from a
    backup: a server may migrate it). ``launch``: "cli" (the floor) or "fork" (what the harness pays; the
    first start of a version also pays its server fork server's imports, and the median hides it)."""
    runtime = LocalRuntime(launch)
    samples: dict[StartKey, Sample] = {}
    logs = work / f"floor-logs-{launch}"
    logs.mkdir(parents=True, exist_ok=True)

    def sample(key: StartKey, store: Store, rep: int) -> None:
        where = key.on or "empty"
        kind, seconds = timed_start(runtime, envs[key.version], store,
                                    logs / f"{key.backend}-{key.version}-on-{where}-{rep}.log")  # fmt: skip
        got = samples.setdefault(key, Sample(kind))
        if got.kind != kind:
            raise BenchError(f"floor: {key.label()} did {got.kind} once and {kind} another time")
        got.seconds.append(round(seconds, 3))

    for backend in sorted({k.backend for k in keys}):
        servers: dict[str, databases.DatabaseServer] = {}
        if backend in DATABASE_BACKENDS:
            servers[backend] = databases.start_local(backend)  # in the temp dir: its user must reach it
        try:
            mine = sorted(k for k in keys if k.backend == backend and k.on is not None and k.on != k.version)
            versions = list(dict.fromkeys([*envs, *(k.on for k in mine if k.on)]))
            for rep in range(repeats):
                stores: dict[str, Store] = {}
                try:
                    for version in versions:
                        workdir = owner.mkdtemp(f"mlflow-compat-bench-floor-{version}-", work)
                        stores[version] = new_store(backend, workdir, servers=servers, run_id=f"bench-{rep}",
                                                    cell_slug=f"floor-{backend}-{version}")  # fmt: skip
                        sample(StartKey(backend, version, None), stores[version], rep)
                        sample(StartKey(backend, version, version), stores[version], rep)
                    for key in mine:
                        assert key.on is not None
                        store = stores[key.on]
                        backup, revision = store.backup(f"floor-{rep}"), store.schema_revision()
                        sample(key, store, rep)
                        if store.schema_revision() != revision:  # it migrated the store: back as it was
                            store.restore(backup)
                finally:
                    for store in stores.values():
                        store.close()
                        shutil.rmtree(store.workdir, ignore_errors=True)
        finally:
            for server in servers.values():
                server.close()
    return samples


def import_floor(env: Env, repeats: int = REPEATS) -> float:
    """Median seconds of a bare `import mlflow` in ``env``'s interpreter."""
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run([str(env.interpreter), "-c", "import mlflow"], env=env.environ(), check=True,
                       capture_output=True)  # fmt: skip
        times.append(time.monotonic() - started)
    return statistics.median(times)


def client_floor(
    paths: list[tuple[Spec, ...]], backends: int, jobs: int, import_s: dict[str, float]
) -> float:
    """One `import mlflow` per client version and worker that runs a cell with it (at most ``jobs``)."""
    cells_with: dict[str, int] = {}
    for path in paths:
        for client in dict.fromkeys((path[0].label, path[-1].label)):
            cells_with[client] = cells_with.get(client, 0) + backends
    return sum(import_s[v] * min(jobs, n) for v, n in cells_with.items())


# -- the work MLflow itself does --------------------------------------------------------------------------
def _step_seconds(output: Path) -> float:
    """Every record's seconds in one client step's output (scenarios/driver.py), failed ones included."""
    data = json.loads(output.read_text())
    return sum(float(r.get("seconds", 0.0)) for r in data.get("results", {}).values())


def mlflow_work(data: dict[str, Any], run_dir: Path | None = None) -> dict[str, float]:
    """Seconds MLflow itself spent in the cells: its client calls and `mlflow db upgrade`.

    Client calls: every record of every client step, as the client process timed it, read from the step's
    output beside the cell's logs (one output per step, however many scenarios' checks share it): a check's
    own seconds leave out the records that failed. Without the run's directory (or without an output), the
    check's seconds. db upgrades: every `db-upgrade` check (each hop's)."""
    work = {"client-calls": 0.0, "db-upgrade": 0.0}
    for cell in data["cells"]:
        cell_dir = run_dir / "cells" / cell["dir"] if run_dir is not None and cell.get("dir") else None
        counted: set[str] = set()
        for check in cell["checks"]:
            if check["status"] == "skip":
                continue
            if check["name"] == "db-upgrade":
                work["db-upgrade"] += check["seconds"]
            elif check["scenario"] and check["name"] in CLIENT_STEPS:
                output = next((p for p in check.get("logs", ()) if p.endswith(".json")), None)
                if cell_dir is not None and output is not None and (cell_dir / output).is_file():
                    if output not in counted:
                        counted.add(output)
                        work["client-calls"] += _step_seconds(cell_dir / output)
                else:
                    work["client-calls"] += check["seconds"]
    return work


# -- verdicts ------------------------------------------------------------------------------------------------
def check_statuses(cell: dict[str, Any]) -> dict[tuple[str, ...], list[str]]:
    """A cell's verdicts: each check's status, by phase, name, client, server and scenario (in order, for the
    checks that share those, e.g. one `env` check per version)."""
    out: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for c in cell["checks"]:
        key = tuple(str(c.get(k) or "") for k in ("phase", "name", "client", "server", "scenario"))
        out[key].append(c["status"])
    return dict(out)


def verdict_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Where two runs of one cell disagree: its status, or any check's; empty when they agree."""
    diffs = []
    if ours["status"] != theirs["status"]:
        diffs.append(f"cell: {ours['status']} vs {theirs['status']}")
    a, b = check_statuses(ours), check_statuses(theirs)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            where = " ".join(p for p in key if p)
            diffs.append(f"{where}: {a.get(key) or 'absent'} vs {b.get(key) or 'absent'}")
    return diffs


def find_cell(data: dict[str, Any], backend: str, path: Sequence[str]) -> dict[str, Any] | None:
    return next((c for c in data["cells"] if c["backend"] == backend and c["path"] == list(path)), None)


def bad_cells(data: dict[str, Any]) -> list[str]:
    return [f"{c['id']} ({c['status']})" for c in data["cells"] if c["status"] in BAD_CELL]


# -- the line ------------------------------------------------------------------------------------------------
def bench_line(
    wall: float, cli_wall: float, floor: float, ratio: float | None, speedup: float | None, peak_mib: float
) -> str:
    r = f"{ratio:.2f}" if ratio is not None else "n/a"
    s = f"{speedup:.1f}x" if speedup is not None else "n/a"
    return (f"bench: wall={wall:.0f} cli_wall={cli_wall:.0f} floor={floor:.0f} ratio={r} naive_speedup={s} "
            f"peak_rss={peak_mib:.0f}")  # fmt: skip


def decide(
    wall: float,
    cli_wall: float,
    floor: float,
    peak_mib: float,
    bad: Sequence[str],
    naive_warm: float | None,
    naive_problems: Sequence[str],
) -> tuple[str, list[str]]:
    """The bench line, and why it withholds a figure: no ratio (nor speedup) when a matrix has `fail` or
    `error` cells (``bad``); no speedup without a naive cell (``naive_warm`` None) or when the naive cell is
    not comparable (``naive_problems``: its verdicts differ from the matrix's, or it ran in other venvs).
    naive_speedup is the warm one: ``naive_warm`` (the naive cell's seconds x the cells) over ``wall``."""
    why = [f"ratio=n/a: the matrix has fail/error cells: {', '.join(bad)}"] if bad else []
    no_speedup = ["the matrix has fail/error cells"] if bad else []
    if naive_warm is None:
        no_speedup.append("no naive cell (--no-naive)")
    no_speedup += list(naive_problems)
    if no_speedup:
        why.append(f"naive_speedup=n/a: {'; '.join(no_speedup)}")
    ratio = None if bad else wall / floor
    speedup = None if no_speedup or naive_warm is None else naive_warm / wall
    return bench_line(wall, cli_wall, floor, ratio, speedup, peak_mib), why


# -- runs ----------------------------------------------------------------------------------------------------
@dataclass
class MatrixRun:
    wall: float
    data: dict[str, Any]
    peak: int
    run_dir: Path


def run_harness(cmd: list[str], results: Path, log: Path, env: dict[str, str] | None = None) -> MatrixRun:
    """`harness.cli run` as a user runs it; its output to ``log``; wall time and its tree's peak RSS."""
    # The envs the bench warms (EnvCache()) and the naive pip venvs resolve `latest`: so must the run's.
    cmd = [*cmd, "--resolution", "latest"]
    started = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        sampler, relay = PeakRss(proc.pid), Relay(log)
        try:
            code = proc.wait()
        finally:
            relay.stop()
        peak = sampler.stop()
    wall = time.monotonic() - started
    latest = results / "latest"
    if code not in (0, 1, 3) or not latest.exists() or not RunDir(latest.resolve()).is_run():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BenchError(f"the run failed (exit {code}), see {log}:\n{tail}")
    run_dir = RunDir(latest.resolve())
    return MatrixRun(wall, json.loads(run_dir.results.read_text()), peak, run_dir.path)


def run_matrix(args: argparse.Namespace, results: Path, server_launch: str, log: Path) -> MatrixRun:
    cmd = [sys.executable, "-m", "harness.cli", "run", "--runtime", "local", "--results-dir", str(results),
           "-n", str(args.jobs), "--server-launch", server_launch]  # fmt: skip
    for backend in args.backend:
        cmd += ["--backend", backend]
    for path in args.path:
        cmd += ["--path", path]
    if args.scenarios:
        cmd += ["--scenarios", args.scenarios]
    return run_harness(cmd, results, log)


_NAIVE_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, sys
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
head = None
mig = os.path.join(list(importlib.util.find_spec("mlflow").submodule_search_locations)[0], "store",
                   "db_migrations")
if os.path.isdir(mig):
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    cfg = Config()
    cfg.set_main_option("script_location", mig)
    head = ScriptDirectory.from_config(cfg).get_current_head()
print(json.dumps({"mlflow": v("mlflow"), "python": "%d.%d.%d" % sys.version_info[:3], "sqlalchemy":
                  v("sqlalchemy"), "schema_head": head, "packages": {n: v(n) for n in PACKAGES}}))
"""


def build_naive_env(spec: Spec, packages: tuple[str, ...], cache: Path, log: Path) -> float:
    """The naive way to get an env: `python -m venv` and `pip install --no-cache-dir` (pip byte-compiles what
    it installs, as it does by default; nothing more), with the same interpreter and requirements the harness
    would use, placed where EnvCache (root ``cache``/envs) looks for this spec's env, with its manifest, so
    that the harness runs its cell in it. Returns the venv+pip seconds (the manifest's probe is not timed)."""
    envs = EnvCache(cache / "envs")
    key, interp, reqs = envs.plan(spec, packages)
    venv = envs.root / key
    started = time.monotonic()
    with log.open("a") as fh:
        for cmd in ([str(interp.path), "-m", "venv", str(venv)],
                    [str(venv / "bin" / "pip"), "install", "--no-cache-dir", *reqs,
                     *(f"--find-links={p}" for p in spec.find_links())]):  # fmt: skip
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise BenchError(f"naive: {' '.join(cmd[:3])} failed for MLflow {spec.label}; see {log}")
    seconds = time.monotonic() - started
    names = tuple(sorted({Requirement(p).name for p in packages}))
    environ = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # the probe writes no bytecode into the venv
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", f"PACKAGES = {names!r}\n{_NAIVE_PROBE}"],
                           env=environ, capture_output=True, text=True, check=False)  # fmt: skip
    if probe.returncode != 0:
        raise BenchError(f"naive: the pip venv of MLflow {spec.label} does not work: {probe.stderr[-500:]}")
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    manifest = {"spec_label": spec.label, "version": facts["mlflow"], "python": facts["python"],
                "sqlalchemy": facts["sqlalchemy"], "schema_head": facts["schema_head"], "requirements": reqs,
                "build_seconds": round(seconds, 2),
                "packages": sorted([n, v] for n, v in facts["packages"].items())}  # fmt: skip
    (venv / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return seconds


def naive_cell(
    backend: str, path: tuple[Spec, ...], args: argparse.Namespace, cache: Path, work: Path
) -> MatrixRun:
    """The cell alone (-n 1), every client step its own interpreter, real CLI servers, in the pip venvs of
    ``cache`` (MLFLOW_COMPAT_CACHE: the harness's every cache starts empty there, but for the index's answers
    about requires-python, copied in, so that no lookup the naive way would not make is timed)."""
    for known in cache_root().glob("index-*.json"):
        shutil.copy(known, cache / known.name)
    results = work / "naive-results"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--runtime", "local", "--results-dir", str(results),
           "-n", "1", "--backend", backend, "--path", ":".join(s.label for s in path),
           "--client-launch", "spawn", "--server-launch", "cli"]  # fmt: skip
    if args.scenarios:
        cmd += ["--scenarios", args.scenarios]
    env = {**os.environ, "MLFLOW_COMPAT_CACHE": str(cache)}
    return run_harness(cmd, results, work / "naive-run.log", env)


def scenario_packages(names: str | None) -> tuple[str, ...]:
    """What the cells install beside mlflow: their scenarios' PACKAGES (as harness/cell.py asks EnvCache)."""
    chosen = tuple(n for n in names.split(",") if n and n != "none") if names else default_names()
    known = builtin()
    return tuple(sorted({p for n in fitting(chosen, frozenset()) for p in known[n].packages}))


# -- main ----------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlflow-compat-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help=f"default: {', '.join(DEFAULT_BACKENDS)}")
    parser.add_argument("--path", action="append", help=f"default: {', '.join(DEFAULT_PATHS)}")
    parser.add_argument("-n", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scenarios", help="built-in scenarios (default: the run's default)")
    parser.add_argument(
        "--naive", help="BACKEND:FROM:TO, a cell of the matrix run naively (default: its first)"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive measurement")
    parser.add_argument("--no-new-envs", action="store_true", help="skip building each version's env anew")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    args.backend = args.backend or DEFAULT_BACKENDS
    args.path = args.path or DEFAULT_PATHS

    def bad(text: str) -> None:
        print(f"mlflow-compat-bench: error: {text}", file=sys.stderr)
        raise SystemExit(2)

    if args.jobs < 1:
        bad(f"-n {args.jobs}: at least 1")
    if unknown := [b for b in args.backend if b not in backend_names()]:
        bad(f"unknown backend {', '.join(unknown)} (choose from {', '.join(backend_names())})")
    try:
        args.paths = [parse_path(p) for p in args.path]
    except SpecError as exc:
        bad(f"--path: {exc}")
    if any(s.version is None for p in args.paths for s in p):
        bad("--path: name versions (`latest` is not resolved by the bench)")
    if args.scenarios and (unknown := [n for n in args.scenarios.split(",") if n not in builtin()]):
        bad(f"--scenarios: unknown {', '.join(unknown)}")
    naive = args.naive or f"{args.backend[0]}:{args.path[0]}"
    backend, _, path = naive.partition(":")
    try:
        args.naive_cell = (backend, parse_path(path))
    except SpecError as exc:
        bad(f"--naive {naive}: {exc}")
    if backend not in args.backend or path not in args.path:
        bad(f"--naive {naive}: not a cell of the matrix (its verdicts are compared with the matrix's)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    procs.install_cleanup()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out_dir = args.results_dir.resolve() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = owner.mkdtemp("mlflow-compat-bench-")
    try:
        return measure(args, run_id, out_dir, work)
    except BenchError as exc:
        print(f"bench: {exc}", flush=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)  # naive venvs, stores, the matrices' cell logs


def measure(args: argparse.Namespace, run_id: str, out_dir: Path, work: Path) -> int:
    record: dict[str, Any] = {
        "run_id": run_id,
        "backends": args.backend,
        "paths": args.path,
        "jobs": args.jobs,
        "cpus": os.cpu_count(),
    }
    paths: list[tuple[Spec, ...]] = args.paths
    versions = list(dict.fromkeys(s for p in paths for s in p))
    packages = scenario_packages(args.scenarios)
    cells = [(p, b) for p in paths for b in args.backend]
    cores = min(args.jobs, len(cells), os.cpu_count() or 1)

    envs = EnvCache()
    with stage(f"envs: {', '.join(s.label for s in versions)} (built if missing)"):
        started = time.monotonic()
        built = {s.label: envs.ensure(s, work / f"env-{s.label}.log", packages) for s in versions}
        record["env_warmup_seconds"] = round(time.monotonic() - started, 2)
        record["env_build_seconds"] = {k: (0.0 if e.reused else e.build_seconds) for k, e in built.items()}
    if not args.no_new_envs:  # the harness's cold cost: a throwaway env cache (uv's downloads cached)
        with stage("new envs: each version's env built again in a throwaway cache"):
            fresh = EnvCache(work / "new-envs")
            record["new_env_seconds"] = {
                s.label: round(fresh.ensure(s, work / f"new-env-{s.label}.log", packages).build_seconds, 1)
                for s in versions
            }
            shutil.rmtree(work / "new-envs", ignore_errors=True)

    # What the cells' timelines start (planned_starts), and every version fresh and on its own schema (the
    # stores the probes start on are made that way; a cold schema cache also starts TO versions fresh).
    keys = {k for p, b in cells for k in planned_starts(p, b)}
    keys |= {StartKey(b, s.label, on) for b in args.backend for s in versions for on in (None, s.label)}
    with stage(f"floor: measuring server starts ({len(keys)} kinds x {REPEATS}, `mlflow server` CLI)"):
        samples = measure_starts(keys, built, work)
    with stage(f"starts forked: the same kinds x {REPEATS}, --server-launch fork (for comparison)"):
        forked = measure_starts(keys, built, work, launch="fork")
    with stage("floor: measuring `import mlflow` per version"):
        import_s = {s.label: import_floor(built[s.label]) for s in versions}

    with stage(f"matrix --server-launch fork ({len(cells)} cells, -n {args.jobs})"):
        fork = run_matrix(args, work / "matrix-fork", "fork", work / "matrix-fork.log")
    with stage(f"matrix --server-launch cli ({len(cells)} cells, -n {args.jobs})"):
        cli = run_matrix(args, work / "matrix-cli", "cli", work / "matrix-cli.log")
    if not fork.data["cells"]:
        raise BenchError("the matrix ran no cells")

    # The floor: the fork matrix's recorded starts (the cli matrix makes the same ones) x measured medians.
    counts, seen = start_counts(fork.data)
    medians = {k: s.median for k, s in samples.items()}
    servers_floor, missing = floor_seconds(counts, medians)
    clients_floor = client_floor(paths, len(args.backend), min(args.jobs, len(cells)), import_s)
    floor = (servers_floor + clients_floor) / cores
    surprises = [
        f"{k.label()}: the matrix saw {', '.join(sorted(seen[k]))}, measured {samples[k].kind}"
        for k in counts
        if k in samples and seen[k] != {samples[k].kind}
    ]
    surprises += [
        f"{k.label()}: forked it did {forked[k].kind}, with the CLI {samples[k].kind}"
        for k in sorted(samples)
        if k in forked and forked[k].kind != samples[k].kind
    ]
    record["floor"] = {
        "starts": [
            {
                "backend": k.backend,
                "version": k.version,
                "on": k.on,
                "kind": s.kind,
                "seconds": s.seconds,
                "median": round(s.median, 3),
                "fork_seconds": forked[k].seconds if k in forked else None,
                "count": counts.get(k, 0),
            }
            for k, s in sorted(samples.items())
        ],
        "not_measured": [k.label() for k in missing],
        "import_mlflow": import_s,
        "cells": len(cells),
        "cores": cores,
        "server_starts": round(servers_floor, 1),
        "client_imports": round(clients_floor, 1),
        "seconds": round(floor, 1),
    }

    phases: dict[str, float] = defaultdict(float)
    for cell in fork.data["cells"]:
        for phase, seconds in cell["timings"].items():
            phases[phase] += seconds
    spent = mlflow_work(fork.data, fork.run_dir)
    perfect = (servers_floor + clients_floor + sum(spent.values())) / cores
    bad = sorted(set(bad_cells(fork.data)) | {f"{c} [cli]" for c in bad_cells(cli.data)})
    disagree = [
        f"{c['id']}: {d}"
        for c in fork.data["cells"]
        if (other := find_cell(cli.data, c["backend"], c["path"])) is not None
        for d in verdict_differences(c, other)
    ]
    record["matrix"] = {
        "wall": round(fork.wall, 1),
        "cli_wall": round(cli.wall, 1),
        "phases": dict(phases),
        "peak_rss_mib": round(fork.peak / 2**20),
        "statuses": {c["id"]: c["status"] for c in fork.data["cells"]},
        "cli_statuses": {c["id"]: c["status"] for c in cli.data["cells"]},
        "fork_cli_differences": disagree,
    }
    record["work"] = {
        **{k: round(v, 1) for k, v in spent.items()},
        "floor_plus_work": round(perfect, 1),
        "overhead": round(fork.wall - perfect, 1),
    }

    naive: dict[str, Any] | None = None
    naive_diffs: list[str] = []
    if not args.no_naive:
        backend, path = args.naive_cell
        cache = owner.mkdtemp("mlflow-compat-bench-naive-", work)
        env_seconds = {}
        with stage(f"naive: python -m venv + pip install --no-cache-dir, {len(versions)} versions"):
            for spec in versions:  # every version of the matrix: the cold comparison builds them all
                env_seconds[spec.label] = round(
                    build_naive_env(spec, packages, cache, work / f"naive-env-{spec.label}.log"), 1
                )
                say(f"naive: venv+pip MLflow {spec.label}: {env_seconds[spec.label]:.0f} s")
        label = f"{backend}:{':'.join(s.label for s in path)}"
        with stage(f"naive: cell {label} (-n 1, --client-launch spawn, --server-launch cli, pip venvs)"):
            run = naive_cell(backend, path, args, cache, work)
        mine = find_cell(run.data, backend, [s.label for s in path])
        theirs = find_cell(fork.data, backend, [s.label for s in path])
        if mine is None or theirs is None:
            naive_diffs = [f"cell {label} missing from the {'naive run' if mine is None else 'matrix'}"]
        else:
            naive_diffs = verdict_differences(mine, theirs)
        used = sorted(
            {
                e.get("mlflow", "")
                for c in run.data["cells"]
                for e in c.get("components", {}).get("envs", {}).values()
            }
        )
        # Each env check of the naive cell must have reused a venv built here with pip (EnvCache found it).
        not_pip = [
            check["detail"]
            for cell in run.data["cells"]
            for check in cell["checks"]
            if check["name"] == "env" and not (check["status"] == "pass" and "(reused)" in check["detail"])
        ]
        naive = {
            "cell": label,
            "not_pip": not_pip,
            "env_seconds": env_seconds,
            "cell_seconds": round(run.wall, 1),
            "verdict_differences": naive_diffs,
            "envs_used": used,
            "warm_matrix_estimate": round(run.wall * len(cells), 1),
            "cold_matrix_estimate": round(sum(env_seconds.values()) + run.wall * len(cells), 1),
        }
        record["naive"] = naive

    # -- what it prints ------------------------------------------------------------------------------------
    wall = fork.wall
    whole = sum(phases.values()) or 1.0
    print(f"{'phase':<14}{'seconds':>10}{'share':>8}")
    for phase, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"{phase:<14}{seconds:>10.1f}{100 * seconds / whole:>7.0f}%")
    print(f"floor: server starts measured (`mlflow server` CLI, median of {REPEATS}) x counted in the cells; "
          "and the same start forked (--server-launch fork, median):")  # fmt: skip
    for key, s in sorted(samples.items()):
        n = counts.get(key, 0)
        each = ", ".join(f"{x:.1f}" for x in s.seconds)
        fork_s = f"{forked[key].median:5.2f}s" if key in forked else "  n/a"
        print(
            f"  {key.label():<34} {s.kind:<9} median {s.median:5.1f}s ({each}) x{n:<3} = {n * s.median:6.1f}s"
            f"   forked {fork_s}"
        )
    for key in missing:
        print(
            f"  {key.label()}: started {counts[key]}x in the matrix but not measured: left out of the floor"
        )
    for text in surprises:
        print(f"  note: {text}")
    imports = ", ".join(f"{k} {v:.1f}s" for k, v in import_s.items())
    print(
        f"floor: import mlflow {imports}; server starts "
        f"{servers_floor:.0f}s + client imports {clients_floor:.0f}s, over {cores} cores = {floor:.0f}s"
    )
    calls, upgrades = spent["client-calls"], spent["db-upgrade"]
    print(
        f"work: MLflow's own client calls {calls:.0f}s + db upgrades {upgrades:.0f}s; floor+work over "
        f"{cores} cores = {perfect:.0f}s; harness overhead = wall - that = {wall - perfect:.0f}s "
        f"(wall / (floor+work) = {wall / perfect:.2f})"
        + ("; negative: the matrix's own starts beat the CLI-start floor" if wall < perfect else "")
    )
    print(
        f"matrix: wall {wall:.0f}s (--server-launch fork), cli_wall {cli.wall:.0f}s (--server-launch cli): "
        f"wall/cli_wall = {wall / cli.wall:.2f}; peak RSS {fork.peak / 2**20:.0f} MiB"
    )
    if disagree:
        print(
            f"matrix: the fork and cli runs disagree on {len(disagree)} verdict(s): {'; '.join(disagree[:5])}"
        )
    print(f"env phase (lookups, builds) over {len(cells)} cells: {phases.get('env', 0.0):.1f}s")
    cold_harness = None
    if "new_env_seconds" in record:
        new = record["new_env_seconds"]
        cold_harness = sum(new.values()) + wall
        print(
            f"new env with uv, byte-compiled (uv's download cache warm): "
            f"{', '.join(f'{k} {v:.1f}s' for k, v in new.items())}"
        )
    naive_problems: list[str] = []
    if naive is not None:
        n = naive
        warm, cold = n["warm_matrix_estimate"], n["cold_matrix_estimate"]
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in n["env_seconds"].items())
        print(
            f"naive cell {n['cell']} in pip venvs (MLflow {', '.join(n['envs_used'])}): cell "
            f"{n['cell_seconds']:.0f}s; venv+pip {steps}"
        )
        print(
            f"warm (envs exist): naive {n['cell_seconds']:.0f}s x {len(cells)} cells = {warm:.0f}s vs "
            f"harness wall {wall:.0f}s: {warm / wall:.1f}x"
        )
        if cold_harness is not None:
            pip = sum(n["env_seconds"].values())
            print(
                f"cold (envs built inside the wall): naive venv+pip {pip:.0f}s + "
                f"{warm:.0f}s = {cold:.0f}s vs harness new envs {cold_harness - wall:.0f}s + wall "
                f"{wall:.0f}s = {cold_harness:.0f}s: {cold / cold_harness:.1f}x"
            )
        if naive_diffs:
            print(
                f"naive: its verdicts differ from the matrix's for {n['cell']} ({len(naive_diffs)}): "
                f"{'; '.join(naive_diffs[:5])}"
            )
            naive_problems.append(f"the naive cell's verdicts differ from the matrix's ({len(naive_diffs)})")
        if n["not_pip"]:
            naive_problems.append(f"the naive cell did not run in the pip venvs: {'; '.join(n['not_pip'])}")
    line, why = decide(
        wall,
        cli.wall,
        floor,
        fork.peak / 2**20,
        bad,
        naive["warm_matrix_estimate"] if naive else None,
        naive_problems,
    )
    for text in why:
        print(text)
    record["withheld"] = why
    record["line"] = line
    (out_dir / f"{run_id}.json").write_text(json.dumps(record, indent=2))
    shutil.copy(fork.run_dir / "results.json", out_dir / f"{run_id}-matrix.json")
    shutil.copy(cli.run_dir / "results.json", out_dir / f"{run_id}-cli-matrix.json")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
