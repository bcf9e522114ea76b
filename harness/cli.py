"""`mlflow-compat`: the command line's subcommands and what they print.

  run     the compatibility matrix (harness.run: resolve, plan, prepare, execute, collect, report)
  gate    may we bump MLflow to this candidate? the same run on the candidate's paths, then a verdict
  report  render a run's reports again, compare runs, merge shards
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

from harness import images, options, owner, procs
from harness.backends import SERVER_BACKENDS
from harness.options import BadInput, Parser, check_writable
from harness.report import load_run, write_reports
from harness.results import ExitCode, RunResult, Status
from harness.run import gate_options, list_cells, merge_shards, run_matrix
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
        "images": "build server (and database) images ahead of a docker run",
        "clean": "remove what crashed runs left (containers, temp dirs, strays); "
        "run it when no other run is active",
    }
    for command, text in helps.items():
        options.add_options(sub.add_parser(command, help=text), command)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    opts = options.parse(args)
    if args.list:
        for cell in list_cells(opts):
            print(cell.id)
        for key, value in opts.resolved.items():
            print(f"# {key}: {value}", file=sys.stderr)
        return ExitCode.OK
    run, run_dir = run_matrix(opts)
    print_summary(run, run_dir)
    return run.exit_code()


def print_summary(run: RunResult, run_dir: RunDir) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # ids and summaries as they are: "[scale=1m]" or "[auth]" is not markup

    console = Console(stderr=False)
    colours = {
        "pass": "green",
        "fail": "red",
        "error": "yellow",
        "skip": "dim",
        "xfail": "blue",
        "xpass": "magenta",
    }
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
    if not images.engine_available():
        raise BadInput("no Docker engine answers (is dockerd running? DOCKER_HOST?)")
    from harness.envs import EnvCache

    if args.bootstrap:
        from harness.runtime.docker import bootstrap_database

        for backend in SERVER_BACKENDS:
            print(f"{backend}: {bootstrap_database(backend)}", flush=True)
    cache = EnvCache()
    for spec in specs:
        log = cache.root / f"images-{spec.label}.log"
        env = cache.ensure(spec, log)
        base = images.python_base(".".join(env.python.split(".")[:2]), args.base_image)
        choice = images.server_image(env, base)
        print(f"MLflow {spec.label}: {choice.image} ({choice.note})", flush=True)
    return 0


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


COMMANDS = {"run": cmd_run, "gate": cmd_gate, "report": cmd_report, "images": cmd_images, "clean": cmd_clean}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BadInput as exc:
        print(f"mlflow-compat: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
