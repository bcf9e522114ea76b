"""`mlflow-compat`: the command line's subcommands and what they print.

  run     the compatibility matrix (harness.run: resolve, plan, prepare, execute, collect, report)
  gate    may we bump MLflow to this candidate? the same run on the candidate's paths, then a verdict
  report  render a run's reports again, compare runs, merge shards
  table   the compatibility table (client x server x API area; store upgrades) of one or more runs
  images  build what a docker run needs ahead of it
  clean   remove what crashed runs left

What lives here: wiring each subcommand to its parser and its steps, and printing (the summary table, the
gate's verdict). What does not: the options (declared, checked and described in harness.options), resolving
and running (harness.run). Bad input anywhere is one line on stderr and exit code 2 (`BadInput`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from harness import durations, fidelity, images, options, owner, procs, progress, table
from harness.backends import SERVER_BACKENDS
from harness.durations import Split
from harness.options import BadInput, Parser, check_writable
from harness.report import load_run, write_reports
from harness.results import ExitCode, RunResult, Status
from harness.run import _shard_run as shard_run
from harness.run import gate_options, list_cells, list_shards, merge_shards, run_matrix
from harness.rundir import RunDir
from harness.runtime.docker import remove_containers, remove_networks
from harness.specs import SpecError, parse_spec


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mlflow-compat", description="MLflow client/server compatibility across upgrades.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    helps = {
        "run": "run the compatibility matrix and write a report",
        "gate": "may we bump MLflow to this candidate? exit 0 only if so",
        "report": "render a run's reports again, compare runs, merge shards",
        "table": "the compatibility table of one or more runs (client x server x API area, store upgrades): "
        "compat-table.md and compat-table.html",
        "images": "build server (and database) images ahead of a docker run",
        "clean": "remove what crashed runs left (containers, temp dirs, strays); "
        "run it when no other run is active",
    }
    for command, text in helps.items():
        options.add_options(sub.add_parser(command, help=text), command)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    opts = options.parse(args)
    if args.list and (n := opts.value("shards")) is not None:
        print_shards(list_shards(opts, n), opts.value("jobs"))
        for key, value in opts.resolved.items():
            print(f"# {key}: {value}", file=sys.stderr)
        return ExitCode.OK
    if args.list:
        for cell in list_cells(opts):
            print(cell.id)
        for key, value in opts.resolved.items():
            print(f"# {key}: {value}", file=sys.stderr)
        return ExitCode.OK
    run, run_dir = run_matrix(opts)
    print_summary(run, run_dir)
    return run.exit_code()


def print_shards(split: Split, jobs: int) -> None:
    """`run --list --shards N`: each shard's cells (with their seconds, `~` where estimated without a
    record) and its estimated wall time on a runner with ``jobs`` parallel cells; then the total. The
    estimates count the cells alone: not setting up (envs, databases) on a fresh runner."""
    n = len(split.shares)
    if split.rule == "ids":
        print("# split by id: the durations record has no time of any of these cells; no estimate")
    walls = []
    for k in range(1, n + 1):
        share = split.shares[k - 1]
        seconds = [split.seconds[c.id].seconds for c in share]
        walls.append(durations.wall(seconds, jobs))
        if split.rule == "ids":
            print(f"shard {k}/{n}: {len(share)} cells")
        else:
            print(f"shard {k}/{n}: {len(share)} cells, estimated wall {_clock(walls[-1])} with -n {jobs} "
                  f"({sum(seconds):.0f} s of cell time; {split.unmeasured(k)} cells estimated without a "
                  "record)")  # fmt: skip
        for cell in share:
            e = split.seconds[cell.id]
            print(f"  {cell.id}" if split.rule == "ids" else f"  {cell.id}  {'' if e.measured else '~'}"
                  f"{e.seconds:.0f} s")  # fmt: skip
    cells = sum(len(s) for s in split.shares)
    if split.rule == "ids":
        print(f"total: {cells} cells over {n} shards, split by id")
        return
    unmeasured = sum(split.unmeasured(k) for k in range(1, n + 1))
    work = sum(split.work(k) for k in range(1, n + 1))
    print(f"total: {cells} cells over {n} shards, {work:.0f} s of cell time; longest shard "
          f"{_clock(max(walls))} with -n {jobs}; {cells - unmeasured} cells measured, {unmeasured} "
          "estimated (the median of recorded cells alike)")  # fmt: skip


def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s ({int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m)"


def print_summary(run: RunResult, run_dir: RunDir) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # ids and summaries as they are: "[scale=1m]" or "[auth]" is not markup

    console = Console(stderr=False)
    colours = progress.COLOURS
    table = Table(title=f"mlflow-compat run {run.run_id}")
    for col in ("cell", "status", "seconds", "summary"):
        table.add_column(col)
    for cell in run.cells:
        c = colours[cell.status.value]
        table.add_row(Text(cell.id), Text(cell.status.value, style=c), f"{cell.seconds:.0f}",
                      Text(cell.summary or ""))  # fmt: skip
    for cid in run.not_run:
        table.add_row(Text(cid), Text("not run", style="yellow"), "", "no result (interrupted or crashed)")
    console.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items() if n)
    console.print(f"{counts}. Report: {run_dir.report_md} (exit code {run.exit_code()})")


def cmd_report(args: argparse.Namespace) -> int:
    """Render a run's reports again (with --compare, against an earlier run), or merge shard runs."""

    def load(path: Path, what: str) -> RunResult:
        if not RunDir(path).is_run():
            raise BadInput(f"{what} {path}: no results.json there (a run directory is needed)")
        return load_run(RunDir(path))

    if args.fidelity:
        return report_fidelity(args)
    if args.merge:
        if args.run_dir is not None:
            raise BadInput("--merge takes the shard directories; name the output with --out")
        out = (args.out or Path("results") / f"merged-{datetime.now(UTC):%Y%m%dT%H%M%SZ}").resolve()
        check_writable(out, "--out")
        previous = load(args.compare, "--compare") if args.compare else None
        run, found = merge_shards(args.merge, out.name)
        run_dir = RunDir(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for shard_dir in found:  # the cells' logs travel with the merged report
                if shard_dir.cells.is_dir():
                    shutil.copytree(shard_dir.cells, run_dir.cells, dirs_exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--out {out} is not writable ({exc})") from None
        for entry in run.not_run:
            print(f"mlflow-compat: not run: {entry}", file=sys.stderr)
    else:
        if args.run_dir is None:
            raise BadInput("report needs a run directory (or --merge DIR...)")
        run, run_dir = load(args.run_dir, "report"), RunDir(args.run_dir)
        check_writable(run_dir.path, "report: run directory")
        previous = load(args.compare, "--compare") if args.compare else None
    write_reports(run, run_dir, previous)
    print(run_dir.report_md)
    return run.exit_code()


def report_fidelity(args: argparse.Namespace) -> int:
    """`report --fidelity RUN_A RUN_B`: every difference between two runs of the same cells, one per line
    (harness.fidelity); exit 0 when there is none, 1 otherwise."""
    if args.merge or args.run_dir is not None or args.compare:
        raise BadInput("--fidelity takes its two run directories only (no other run, --merge or --compare)")
    sides = [fidelity_side(path) for path in args.fidelity]
    if sides[0].label == sides[1].label:  # e.g. both fork: name them by their run ids
        sides = [fidelity.Side(s.run.run_id, s.run, s.dir) for s in sides]
    lines = fidelity.differences(*sides)
    for line in lines:
        print(line)
    cells = len({c.id for s in sides for c in s.run.cells})
    verdict = f"{len(lines)} difference(s)" if lines else "identical"
    a, b = sides
    print(f"fidelity: {verdict} between {a.label} ({a.dir}) and {b.label} ({b.dir}), {cells} cell(s)")
    return ExitCode.FAILED if lines else ExitCode.OK


def fidelity_side(path: Path, label: str | None = None) -> fidelity.Side:
    """The run at ``path`` (a run directory, or a results directory: its `latest`, or its only run) as one
    side of a fidelity comparison, labelled by ``label`` or else by its `--server-launch`."""
    found = shard_run(path)
    if isinstance(found, str):
        raise BadInput(f"--fidelity {path}: {found} (no run there)")
    run_dir = RunDir(found.path.resolve())
    run = load_run(run_dir)
    launch = run.options.get("server_launch", {}).get("value")
    return fidelity.Side(label or str(launch or run.run_id), run, run_dir.path)


def cmd_table(args: argparse.Namespace) -> int:
    """`table RUN... [--out DIR]`: compat-table.md and compat-table.html (harness.table) in DIR (default: the
    first run's directory); prints their paths."""
    try:
        runs = table.load_runs(args.runs)
    except table.TableInput as exc:
        raise BadInput(str(exc)) from None
    out = (args.table_out or args.runs[0]).resolve()
    check_writable(out, "--out")
    try:
        paths = table.write_table(runs, out)
    except OSError as exc:
        raise BadInput(f"--out {out} is not writable ({exc})") from None
    for path in paths:
        print(path)
    return ExitCode.OK


def cmd_gate(args: argparse.Namespace) -> int:
    """Upgrade from the baseline and from the oldest supported version to the candidate, old clients against
    the candidate server and the candidate client against old servers, on every backend; the baseline's cells
    also compare the candidate's answers with the baseline's (the differential pass); then a verdict."""
    opts, gate = gate_options(args)
    run, run_dir = run_matrix(opts)
    print_summary(run, run_dir)
    print_verdict(run, run_dir, gate.candidate.label, gate.baseline, gate.oldest)
    return run.exit_code()


def print_verdict(run: RunResult, run_dir: RunDir, candidate: str, baseline: str, oldest: str) -> None:
    """A few lines a release manager reads: the decision, then each unexpected check and its logs."""
    unexpected = [(cell, check) for cell in run.cells for check in cell.checks
                  if check.status in (Status.FAIL, Status.ERROR)
                  or (check.status is Status.XPASS and not run.allow_xpass)]  # fmt: skip
    code = run.exit_code()
    verdict = "PASS" if code == ExitCode.OK else "FAIL"
    print(f"gate: {verdict}: candidate {candidate} (from baseline {baseline} and oldest {oldest}; "
          f"{len(run.cells)} cells, {sum(len(c.checks) for c in run.cells)} checks)")  # fmt: skip
    for cell, check in unexpected:
        print(f"  {check.status.value}: {cell.id} {check.label()}: {check.detail[:200]}")
        for log in check.logs[:2]:
            print(f"      log: {run_dir.cell(cell.dir).path / log}")
    if run.not_run:
        print(f"  not run: {', '.join(run.not_run)}")


def cmd_images(args: argparse.Namespace) -> int:
    """Build what a docker run needs, so that the run itself only starts containers."""
    try:
        specs = [parse_spec(v) for v in args.versions]
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    team = options.team_config()  # the envs the runs will use: resolved as they resolve them
    resolution = options.checked("resolution", args, team).value
    grace_days = options.checked("resolution_grace", args, team).value
    if not images.engine_available():
        raise BadInput("no Docker engine answers (is dockerd running? DOCKER_HOST?)")
    from harness.envs import EnvCache

    if args.bootstrap:
        from harness.runtime.docker import bootstrap_database

        for backend in SERVER_BACKENDS:
            print(f"{backend}: {bootstrap_database(backend)}", flush=True)
    cache = EnvCache(resolution=resolution, grace_days=grace_days)
    failed = 0
    for spec in specs:
        log = cache.root / f"images-{spec.label}.log"
        env = cache.ensure(spec, log)
        try:
            base = images.python_base(".".join(env.python.split(".")[:2]), args.base_image)
            choice = images.server_image(env, base)
        except images.ImageError as exc:  # this machine's trouble: said in one line, the others still built
            print(f"MLflow {spec.label}: no image: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"MLflow {spec.label}: {choice.image} ({choice.note})", flush=True)
    return ExitCode.INFRA_ONLY if failed else 0


def cmd_clean(_args: argparse.Namespace) -> int:
    """Leftovers of runs that were killed before they could clean up (SIGKILL, a crashed machine). Only
    what belongs to a run whose controller is gone is touched: running it beside a live run is safe."""
    import tempfile

    killed = procs.kill_strays()
    removed = 0
    if images.engine_available():
        removed = remove_containers()
        remove_networks()
    dirs = [
        path
        for path in Path(tempfile.gettempdir()).glob("mlflow-compat-*")
        if (found := owner.of_dir(path)) is not None and not owner.alive(found)
    ]
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    print(f"removed {removed} containers, {len(dirs)} temp directories, {killed} stray processes")
    return 0


COMMANDS = {
    "run": cmd_run,
    "gate": cmd_gate,
    "report": cmd_report,
    "table": cmd_table,
    "images": cmd_images,
    "clean": cmd_clean,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BadInput as exc:
        print(f"mlflow-compat: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
