"""`nox -s bench`: the matrix's cost against its own floor and against the naive way, in one run.

  warm     every version's env exists (built now if not, and that build time is reported apart)
  new env  each version's env built again in a throwaway cache (uv's download cache stays warm): what a
           version the matrix has not seen yet costs
  floor    per version: launching its server on an empty store until /health answers; per client venv: a
           bare `import mlflow`. A cell cannot avoid its server starts (before, the un-upgraded probe, after,
           the rollback probe, the restore); clients import mlflow once per version and worker (every step
           is a fork of that import, scenarios/forkserver.py). The floor is the sum spread over the cores.
  work     what MLflow itself spends inside the cells, read from results.json: the client steps' own
           seconds (each scenario's calls, as its client timed them) and `mlflow db upgrade`. floor + work
           over the cores is what a perfect harness would take; wall minus that is the harness's overhead.
  matrix   `mlflow-compat run` on the benchmark matrix (warm caches), peak RSS of its whole process tree
           sampled every 0.2 s; wall time and the per-phase totals from its results.json.
  naive    one cell the naive way: a fresh `python -m venv` and `pip install --no-cache-dir` per version,
           nothing reused (every client step its own interpreter: MLFLOW_COMPAT_CLIENT_LAUNCH=spawn), then
           the cell alone (-n 1). Multiplied by the matrix's cell count, that is what the matrix would cost
           done naively, serially.

Prints a table, writes results/bench/<run-id>.json and ends with the one line:
  bench: wall=<s> floor=<s> ratio=<wall/floor> naive_speedup=<x> peak_rss=<MiB>
Timings are measurements to read, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import owner, procs
from harness.backends import new_store
from harness.envs import EnvCache
from harness.rundir import RunDir
from harness.runtime.local import LocalRuntime
from harness.specs import Spec, parse_path

DEFAULT_BACKENDS = ["sqlite", "postgres"]
DEFAULT_PATHS = ["1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2"]


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


def server_floor(spec: Spec, envs: EnvCache, work: Path) -> float:
    """Seconds from launching ``spec``'s server on an empty SQLite store until /health answers."""
    env = envs.ensure(spec, work / f"env-{spec.label}.log")
    store = new_store("sqlite", owner.mkdtemp("mlflow-compat-bench-", work), servers={}, run_id="bench",
                      cell_slug=spec.label)  # fmt: skip
    started = time.monotonic()
    server = LocalRuntime().start_server(env, store, work / f"floor-server-{spec.label}.log")
    seconds = time.monotonic() - started
    server.stop()
    return seconds


def import_floor(spec: Spec, envs: EnvCache, work: Path) -> float:
    env = envs.ensure(spec, work / f"env-{spec.label}.log")
    started = time.monotonic()
    subprocess.run([str(env.interpreter), "-c", "import mlflow"], check=True, capture_output=True)
    return time.monotonic() - started


def cell_floor(path: tuple[Spec, ...], backend: str, server_s: dict[str, float]) -> float:
    """The server starts a cell's timeline cannot avoid, one after another."""
    has_schema = backend != "file"
    starts = server_s[path[0].label] * (2 + (1 if has_schema else 0))  # before, rollback(-probe), restore
    for target in path[1:]:
        starts += server_s[target.label] * (2 if has_schema else 1)  # un-upgraded probe, after
    return starts


def client_floor(
    paths: list[tuple[Spec, ...]], backends: int, jobs: int, import_s: dict[str, float]
) -> float:
    """One `import mlflow` per client version and worker that runs a cell with it (at most ``jobs``)."""
    cells_with: dict[str, int] = {}
    for path in paths:
        for client in dict.fromkeys((path[0].label, path[-1].label)):
            cells_with[client] = cells_with.get(client, 0) + backends
    return sum(import_s[v] * min(jobs, n) for v, n in cells_with.items())


def mlflow_work(data: dict) -> dict[str, float]:
    """Seconds MLflow itself spent in the cells: client steps' own calls and `mlflow db upgrade`."""
    work = {"client-calls": 0.0, "db-upgrade": 0.0}
    for cell in data["cells"]:
        for check in cell["checks"]:
            if check["scenario"] and check["name"] in ("write", "read", "restore-read"):
                work["client-calls"] += check["seconds"]
            elif check["name"] == "db-upgrade":
                work["db-upgrade"] += check["seconds"]
    return work


def run_matrix(args: argparse.Namespace, results: Path) -> tuple[float, dict, int]:
    cmd = [sys.executable, "-m", "harness.cli", "run", "--runtime", "local", "--results-dir", str(results),
           "-n", str(args.jobs)]  # fmt: skip
    for backend in args.backend:
        cmd += ["--backend", backend]
    for path in args.path:
        cmd += ["--path", path]
    if args.scenarios:
        cmd += ["--scenarios", args.scenarios]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = PeakRss(proc.pid)
    out, _ = proc.communicate()
    peak = sampler.stop()
    wall = time.monotonic() - started
    data = json.loads(RunDir((results / "latest").resolve()).results.read_text())
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench: the matrix run failed (exit {proc.returncode}):\n{out[-3000:]}")
    return wall, data, peak


def naive_cell(path: tuple[Spec, ...], backend: str, args: argparse.Namespace, work: Path) -> dict:
    """One cell the naive way: fresh venvs with pip (no cache, no reuse), then the cell alone."""
    env_seconds = {}
    for spec in dict.fromkeys(path):
        venv = work / f"naive-{spec.label}"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        reqs = [*spec.requirements(), *spec.version.install_requirements()]
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-cache-dir", *reqs], check=True,
                       capture_output=True)  # fmt: skip
        env_seconds[spec.label] = time.monotonic() - started
    results = work / "naive-results"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--runtime", "local", "--results-dir", str(results),
           "-n", "1", "--backend", backend, "--path", ":".join(s.label for s in path),
           "--client-launch", "spawn"]  # fmt: skip
    if args.scenarios:
        cmd += ["--scenarios", args.scenarios]
    started = time.monotonic()
    subprocess.run(cmd, capture_output=True, check=False)
    cell_seconds = time.monotonic() - started
    return {"env_seconds": env_seconds, "cell_seconds": cell_seconds,
            "total": sum(env_seconds.values()) + cell_seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-compat-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help=f"default: {', '.join(DEFAULT_BACKENDS)}")
    parser.add_argument("--path", action="append", help=f"default: {', '.join(DEFAULT_PATHS)}")
    parser.add_argument("-n", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scenarios", help="built-in scenarios (default: all)")
    parser.add_argument("--naive", default="sqlite:1.30.1:2.22.5", help="BACKEND:FROM:TO measured naively")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive measurement")
    parser.add_argument("--no-new-envs", action="store_true", help="skip building each version's env anew")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    args.backend = args.backend or DEFAULT_BACKENDS
    args.path = args.path or DEFAULT_PATHS
    procs.install_cleanup()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out_dir = args.results_dir.resolve() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = owner.mkdtemp("mlflow-compat-bench-")
    try:
        return measure(args, run_id, out_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # naive venvs, stores, the matrix's cell logs


def measure(args: argparse.Namespace, run_id: str, out_dir: Path, work: Path) -> int:
    record: dict = {"run_id": run_id, "backends": args.backend, "paths": args.path, "jobs": args.jobs,
                    "cpus": os.cpu_count()}  # fmt: skip

    envs = EnvCache()
    paths = [parse_path(p) for p in args.path]
    versions = list(dict.fromkeys(s for p in paths for s in p))
    started = time.monotonic()
    built = {s.label: envs.ensure(s, work / f"env-{s.label}.log") for s in versions}
    record["env_warmup_seconds"] = round(time.monotonic() - started, 2)
    record["env_build_seconds"] = {
        k: (0.0 if e.reused else round(e.build_seconds, 1)) for k, e in built.items()
    }
    if not args.no_new_envs:  # what a version the matrix has not seen yet costs (uv's downloads cached)
        fresh = EnvCache(work / "new-envs")
        record["new_env_seconds"] = {
            s.label: round(fresh.ensure(s, work / f"new-env-{s.label}.log").build_seconds, 1)
            for s in versions
        }
        shutil.rmtree(work / "new-envs", ignore_errors=True)

    server_s = {s.label: server_floor(s, envs, work) for s in versions}
    import_s = {s.label: import_floor(s, envs, work) for s in versions}
    cells = [(p, b) for p in paths for b in args.backend]
    cores = min(args.jobs, len(cells), os.cpu_count() or 1)
    servers_floor = sum(cell_floor(p, b, server_s) for p, b in cells)
    clients_floor = client_floor(paths, len(args.backend), min(args.jobs, len(cells)), import_s)
    floor = (servers_floor + clients_floor) / cores
    record["floor"] = {"server_start": server_s, "import_mlflow": import_s, "cells": len(cells),
                       "cores": cores, "server_starts": round(servers_floor, 1),
                       "client_imports": round(clients_floor, 1), "seconds": round(floor, 1)}  # fmt: skip

    wall, data, peak = run_matrix(args, work / "matrix-results")
    phases: dict[str, float] = {}
    for cell in data["cells"]:
        for phase, seconds in cell["timings"].items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    spent = mlflow_work(data)
    perfect = (servers_floor + clients_floor + sum(spent.values())) / cores
    record["matrix"] = {"wall": round(wall, 1), "phases": phases, "peak_rss_mib": round(peak / 2**20),
                        "statuses": {c["id"]: c["status"] for c in data["cells"]}}  # fmt: skip
    record["work"] = {**{k: round(v, 1) for k, v in spent.items()}, "floor_plus_work": round(perfect, 1),
                      "overhead": round(wall - perfect, 1)}  # fmt: skip

    naive_speedup = None
    if not args.no_naive:
        backend, path = args.naive.split(":", 1)
        naive = naive_cell(parse_path(path), backend, args, work)
        naive["matrix_estimate"] = naive["total"] * len(cells)
        naive_speedup = naive["matrix_estimate"] / wall
        record["naive"] = naive

    whole = sum(phases.values()) or 1.0
    print(f"{'phase':<14}{'seconds':>10}{'share':>8}")
    for phase, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"{phase:<14}{seconds:>10.1f}{100 * seconds / whole:>7.0f}%")
    print(f"floor: servers {', '.join(f'{k} {v:.1f}s' for k, v in server_s.items())}; "
          f"import mlflow {', '.join(f'{k} {v:.1f}s' for k, v in import_s.items())}; "
          f"{len(cells)} cells over {cores} cores")  # fmt: skip
    print(f"floor: server starts {servers_floor:.0f}s + client imports {clients_floor:.0f}s, over {cores} "
          f"cores = {floor:.0f}s")  # fmt: skip
    calls, upgrades = spent["client-calls"], spent["db-upgrade"]
    print(f"work: MLflow's own client calls {calls:.0f}s + db upgrades {upgrades:.0f}s; floor+work over "
          f"{cores} cores = {perfect:.0f}s; harness overhead = wall - that = {wall - perfect:.0f}s "
          f"(wall / (floor+work) = {wall / perfect:.2f})")  # fmt: skip
    if "new_env_seconds" in record:
        print("new env, byte-compiled (uv's download cache warm): "
              + ", ".join(f"{k} {v:.1f}s" for k, v in record["new_env_seconds"].items()))  # fmt: skip
    print(f"env phase (lookups, builds) over {len(cells)} cells: {phases.get('env', 0.0):.1f}s")
    if "naive" in record:
        n = record["naive"]
        print(
            f"naive cell {args.naive}: venv+pip {sum(n['env_seconds'].values()):.0f}s + cell "
            f"{n['cell_seconds']:.0f}s = {n['total']:.0f}s; x{len(cells)} cells = {n['matrix_estimate']:.0f}s"
        )
    (out_dir / f"{run_id}.json").write_text(json.dumps(record, indent=2))
    shutil.copy(
        RunDir((work / "matrix-results" / "latest").resolve()).results, out_dir / f"{run_id}-matrix.json"
    )
    speed = f"{naive_speedup:.1f}x" if naive_speedup is not None else "n/a"
    print(
        f"bench: wall={wall:.0f} floor={floor:.0f} ratio={wall / floor:.2f} naive_speedup={speed} "
        f"peak_rss={peak / 2**20:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
