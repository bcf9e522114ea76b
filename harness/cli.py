"""`mlflow-compat`: the command line. `run` is a pipeline of small steps:

  parse -> resolve -> plan -> prepare the run directory -> execute (pytest) -> collect -> report

Everything up to `prepare` is pure checking: bad input ends there with one line and exit code 2,
before any process, env or directory is made.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import docker.errors
import pytest

from harness import __version__, databases, images, index, owner, procs, pythons, scenarios
from harness.backends import DATABASE_BACKENDS, UNAVAILABLE_ENV, backend_names
from harness.plan import CellPlan, default_matrix, default_paths, dump_plan, plan_cells
from harness.plugin import PLAN_FILE, SELECTED_FILE
from harness.report import collect, write_reports
from harness.results import ExitCode, RunResult
from harness.runtime import NETWORK_ENV, RUNTIMES
from harness.runtime.docker import (
    LABEL_RUN,
    create_network,
    database_container,
    has_bridge,
    remove_containers,
    remove_networks,
)
from harness.specs import Spec, SpecError, SpecKind, parse_path, parse_spec


class BadInput(Exception):
    """One line for the user; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not a usage dump
        raise BadInput(message)


@dataclass
class Option:
    """An option's value and where it came from (default, command line, or an environment variable)."""

    value: Any
    source: str


@dataclass
class RunOptions:
    backends: Option
    paths: Option
    clients: Option
    results_dir: Option
    select: Option
    jobs: Option
    runtime: Option
    keep_stores: Option
    profile: Option
    scenarios: Option  # built-in scenario names
    scripts: Option  # users' own scripts (absolute paths)
    database_urls: dict[str, Option]
    images: dict[str, Option]
    resolved: dict[str, str] = field(default_factory=dict)  # `latest` -> version

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, opt in vars(self).items():
            if name == "images":
                for what, o in opt.items():
                    key = "docker_network" if what == "network" else f"{what}_image"
                    out[key] = {"value": o.value or "default", "source": o.source}
            elif name == "database_urls":
                for backend, o in opt.items():
                    value = databases.redact(str(o.value)) if o.value else "a local server started by the run"
                    out[f"{backend}_url"] = {"value": value, "source": o.source}
            elif isinstance(opt, Option):
                value = opt.value
                if name in ("paths",):
                    value = [":".join(s.label for s in p) for p in value]
                elif name == "clients" and value is not None:
                    value = [s.label for s in value]
                elif isinstance(value, Path):
                    value = str(value)
                out[name] = {"value": value, "source": opt.source}
        out["resolved"] = self.resolved
        return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlflow-compat", description="MLflow client/server compatibility across upgrades.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the compatibility matrix and write a report")
    run.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help=f"backend store, repeatable ({', '.join(backend_names())}); default: the profile's",
    )
    run.add_argument("--from", dest="from_", metavar="VERSION", help="upgrade from this MLflow (with --to)")
    run.add_argument("--to", metavar="VERSION", help="upgrade to this MLflow (with --from)")
    run.add_argument(
        "--path",
        action="append",
        metavar="FROM:TO",
        help="upgrade path, repeatable; A:B:C upgrades one store twice",
    )
    run.add_argument(
        "--clients", metavar="V1,V2", help="client versions for every cell (default: the path's ends)"
    )
    run.add_argument("--results-dir", metavar="DIR", help="where runs are written (default: results/)")
    run.add_argument("-k", dest="select", metavar="EXPR", help="select cells by id, as pytest -k does")
    run.add_argument("-n", "--jobs", type=int, metavar="N", help="cells in parallel (default: CPU count)")
    run.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="where servers and databases run (default: auto = docker when an engine answers)",
    )
    run.add_argument(
        "--docker-network",
        choices=("auto", "host", "bridge"),
        help="docker runtime networking (default: auto = bridge when the daemon has one)",
    )
    run.add_argument(
        "--base-image",
        metavar="IMAGE",
        help="base of server images (default: python:X.Y-slim, else a bootstrapped Debian)",
    )
    for backend, default in images.DEFAULT_DB_IMAGES.items():
        run.add_argument(
            f"--{backend}-image", metavar="IMAGE", help=f"{backend} image for docker (default {default})"
        )
    run.add_argument("--profile", default=None, help="default matrix profile (default: smoke)")
    run.add_argument(
        "--scenarios",
        metavar="A,B",
        help=f"built-in scenarios to run (default: all: {', '.join(scenarios.all_names())}; `none` for "
        "only your own scripts)",
    )
    run.add_argument(
        "--scenario",
        action="append",
        metavar="PATH",
        dest="scripts",
        help="your own MLflow script, run unmodified by every client as a scenario (repeatable)",
    )
    run.add_argument("--keep-stores", action="store_true", help="keep each cell's store for inspection")
    for backend in DATABASE_BACKENDS:
        run.add_argument(
            f"--{backend}-url",
            metavar="URL",
            help=f"use this {backend} server (per-cell databases are created and dropped there); "
            f"default: start a local one (env {databases.URL_ENV[backend]})",
        )
    report = sub.add_parser("report", help="render report.md again from a run's results.json")
    report.add_argument("run_dir", type=Path)
    imgs = sub.add_parser("images", help="build server (and database) images ahead of a docker run")
    imgs.add_argument(
        "versions", nargs="*", metavar="VERSION", help="MLflow specs to build server images for"
    )
    imgs.add_argument(
        "--bootstrap",
        action="store_true",
        help="no registry: make a Debian base (debootstrap) and database images from Debian packages",
    )
    imgs.add_argument("--base-image", metavar="IMAGE", help="base of server images")
    sub.add_parser(
        "clean",
        help="remove what crashed runs left (containers, temp dirs, strays); "
        "run it when no other run is active",
    )
    return parser


def _opt(cli_value: Any, env_name: str | None, default: Any) -> Option:
    if cli_value is not None:
        return Option(cli_value, "command line")
    if env_name and os.environ.get(env_name):
        return Option(os.environ[env_name], f"environment {env_name}")
    return Option(default, "default")


# -- parse -------------------------------------------------------------------------------------------
def parse_run_options(args: argparse.Namespace) -> RunOptions:
    profile = _opt(args.profile, "MLFLOW_COMPAT_PROFILE", "smoke")
    try:
        matrix = default_matrix(profile.value)
    except KeyError:
        raise BadInput(f"unknown profile {profile.value!r}") from None

    backends = _opt(args.backend, None, list(matrix["backends"]))
    for name in backends.value:
        if name not in backend_names():
            raise BadInput(f"unknown backend {name!r} (choose from {', '.join(backend_names())})")

    if (args.from_ is None) != (args.to is None):
        raise BadInput("--from and --to go together (or use --path FROM:TO)")
    texts = list(args.path or [])
    if args.from_ is not None:
        texts.insert(0, f"{args.from_}:{args.to}")
    try:
        paths = (
            Option([parse_path(t) for t in texts], "command line")
            if texts
            else Option(default_paths(profile.value), f"profile {profile.value}")
        )
        clients = (
            Option(tuple(parse_spec(c) for c in args.clients.split(",")), "command line")
            if args.clients is not None
            else Option(None, "default (each path's ends)")
        )
    except SpecError as exc:
        raise BadInput(str(exc)) from None

    jobs = _opt(args.jobs, "MLFLOW_COMPAT_JOBS", os.cpu_count() or 1)
    try:
        jobs.value = int(jobs.value)
    except ValueError:
        raise BadInput(f"--jobs must be a whole number, not {jobs.value!r}") from None
    if jobs.value < 1:
        raise BadInput(f"--jobs must be at least 1, not {jobs.value}")

    chosen = _opt(args.scenarios, "MLFLOW_COMPAT_SCENARIOS", ",".join(scenarios.all_names()))
    names = tuple(n.strip() for n in chosen.value.split(",") if n.strip())
    if names == ("none",):
        names = ()
    unknown = [n for n in names if n not in scenarios.all_names()]
    if unknown or (not names and chosen.value.strip() != "none"):
        raise BadInput(
            f"unknown scenario {', '.join(unknown) or repr(chosen.value)} "
            f"(choose from {', '.join(scenarios.all_names())}, or none)"
        )
    chosen.value = names
    scripts = Option(tuple(str(_script(p)) for p in args.scripts or ()), "command line")
    if not names and not scripts.value:
        raise BadInput("--scenarios none leaves nothing to run: add --scenario PATH")

    results_dir = _opt(args.results_dir, "MLFLOW_COMPAT_RESULTS_DIR", "results")
    results_dir.value = Path(results_dir.value).resolve()
    _check_writable(results_dir.value)
    runtime = _opt(args.runtime, "MLFLOW_COMPAT_RUNTIME", "auto")
    if runtime.value not in RUNTIMES:
        raise BadInput(f"unknown runtime {runtime.value!r} (choose from {', '.join(RUNTIMES)})")
    image_opts = {
        "base": _opt(args.base_image, "MLFLOW_COMPAT_BASE_IMAGE", None),
        "network": _opt(args.docker_network, "MLFLOW_COMPAT_DOCKER_NETWORK", "auto"),
    }
    for backend in DATABASE_BACKENDS:
        image_opts[backend] = _opt(
            getattr(args, f"{backend}_image"), f"MLFLOW_COMPAT_{backend.upper()}_IMAGE", None
        )
    urls = {}
    for backend in DATABASE_BACKENDS:
        urls[backend] = _opt(getattr(args, f"{backend}_url"), databases.URL_ENV[backend], None)
        if urls[backend].value:
            try:
                databases.parse_admin_url(backend, urls[backend].value)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
    return RunOptions(
        backends=backends,
        paths=paths,
        clients=clients,
        results_dir=results_dir,
        select=_opt(args.select, None, None),
        jobs=jobs,
        runtime=runtime,
        keep_stores=Option(args.keep_stores, "command line" if args.keep_stores else "default"),
        profile=profile,
        scenarios=chosen,
        scripts=scripts,
        database_urls=urls,
        images=image_opts,
    )


def _script(text: str) -> Path:
    path = Path(text).resolve()
    if not path.is_file():
        raise BadInput(f"--scenario {text}: no such file")
    if path.suffix != ".py":
        raise BadInput(f"--scenario {text}: not a Python script (.py)")
    return path


def _check_writable(path: Path) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise BadInput(f"results directory {path} is not writable")


# -- resolve -----------------------------------------------------------------------------------------
def resolve(opts: RunOptions) -> None:
    """Pin `auto` to a runtime and `latest` to a version; refuse versions the index has never heard of."""
    if opts.runtime.value in ("auto", "docker"):
        engine = images.engine_available()
        if opts.runtime.value == "docker" and not engine:
            raise BadInput("--runtime docker: no Docker engine answers (is dockerd running? DOCKER_HOST?)")
        if opts.runtime.value == "auto":
            opts.resolved["runtime"] = "docker" if engine else "local (no Docker engine answers)"
            opts.runtime.value = "docker" if engine else "local"
    if opts.images["base"].value:
        os.environ["MLFLOW_COMPAT_BASE_IMAGE"] = opts.images["base"].value
    if opts.runtime.value == "docker":
        network, bridge = opts.images["network"], has_bridge()
        if network.value == "bridge" and not bridge:
            raise BadInput(
                "--docker-network bridge: this Docker engine has no bridge network (--bridge=none?)"
            )
        if network.value == "auto":
            network.value = "bridge" if bridge else "host"
            opts.resolved["docker_network"] = network.value
    specs = [s for p in opts.paths.value for s in p] + list(opts.clients.value or ())
    releases = [s for s in specs if s.kind in (SpecKind.RELEASE, SpecKind.LATEST)]
    if not releases:
        return
    try:
        known = index.releases()
    except index.IndexError_ as exc:
        if any(s.kind is SpecKind.LATEST for s in releases):
            raise BadInput(f"cannot resolve `latest`: {exc}") from None
        print(f"mlflow-compat: warning: {exc}; versions are not checked before installing", file=sys.stderr)
        return
    versions = {r.version for r in known}
    for spec in releases:
        if spec.kind is SpecKind.RELEASE and spec.version not in versions:
            newest = max(versions)
            raise BadInput(
                f"unknown MLflow version {spec.label} (the index has none such; newest is {newest})"
            )
    if any(s.kind is SpecKind.LATEST for s in releases):

        def python_for(release: index.Release) -> Path | None:
            interp = pythons.pick(release.requires_python, release.version.python_max())
            return interp.path if interp else None

        latest, skipped = index.newest_installable(known, python_for)
        opts.resolved["latest"] = str(latest)
        if skipped:
            print(f"mlflow-compat: latest = {latest} (passed over: {'; '.join(skipped)})", file=sys.stderr)

        def pin(spec: Spec) -> Spec:
            return spec.resolved(latest) if spec.kind is SpecKind.LATEST else spec

        opts.paths.value = [tuple(pin(s) for s in p) for p in opts.paths.value]
        if opts.clients.value:
            opts.clients.value = tuple(pin(s) for s in opts.clients.value)


# -- plan, prepare, execute ------------------------------------------------------------------------------
def plan(opts: RunOptions) -> list[CellPlan]:
    return plan_cells(opts.backends.value, opts.paths.value, opts.clients.value, opts.runtime.value,
                      opts.scenarios.value, opts.scripts.value)  # fmt: skip


def prepare(opts: RunOptions, cells: list[CellPlan]) -> Path:
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    run_dir = opts.results_dir.value / run_id
    run_dir.mkdir(parents=True)
    (run_dir / PLAN_FILE).write_text(dump_plan(cells))
    (run_dir / "pytest.ini").write_text(
        "[pytest]\n# written by mlflow-compat: this run's cells are pytest items\n"
    )
    return run_dir


def pytest_args(opts: RunOptions, run_dir: Path) -> list[str]:
    args = [str(run_dir / PLAN_FILE), "-c", str(run_dir / "pytest.ini"), "--rootdir", str(run_dir),
            "-p", "harness.plugin", "-p", "no:cacheprovider", "--compat-run-dir", str(run_dir),
            "-q", "--no-header", "-rN", "--assert=plain"]  # fmt: skip
    if opts.select.value:
        args += ["-k", opts.select.value]
    return args


def select(opts: RunOptions, run_dir: Path, cells: list[CellPlan]) -> list[CellPlan]:
    """Apply -k as pytest does, in a collect-only pass (nothing starts); a bad or empty one is bad input."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = pytest.main([*pytest_args(opts, run_dir), "--collect-only", "-p", "no:xdist"])
    selected_file = run_dir / SELECTED_FILE
    selected = json.loads(selected_file.read_text()) if selected_file.exists() else []
    if code == pytest.ExitCode.USAGE_ERROR or (
        code != pytest.ExitCode.OK and opts.select.value and not selected
    ):
        shutil.rmtree(run_dir)
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            raise BadInput(
                f"no cell matches -k {opts.select.value!r} (cells: {', '.join(c.id for c in cells)})"
            )
        why = next((line.split(": ", 2)[-1] for line in out.getvalue().splitlines() if "-k" in line), "")
        raise BadInput(f"-k {opts.select.value!r} is not a valid selection expression ({why.strip()})")
    if code != pytest.ExitCode.OK:
        raise RuntimeError(f"collecting the planned cells failed (pytest exit {code}):\n{out.getvalue()}")
    return [c for c in cells if c.id in selected]


def execute(opts: RunOptions, run_dir: Path, ncells: int) -> int:
    args = [*pytest_args(opts, run_dir), "--junitxml", str(run_dir / "junit.xml"),
            "-o", "junit_family=xunit2", "-o", "junit_suite_name=mlflow-compat"]  # fmt: skip
    jobs = min(opts.jobs.value, ncells)
    args += ["-n", str(jobs), "--dist", "load"] if jobs > 1 else ["-p", "no:xdist"]
    if opts.keep_stores.value:
        args.append("--compat-keep-stores")
    return int(pytest.main(args))


def start_databases(opts: RunOptions, backends: set[str], run_id: str) -> list[databases.DatabaseServer]:
    """One server per database backend for the whole run (a local process, or a container with the docker
    runtime), published to the cells (the pytest workers) as a URL in the environment. A server that
    cannot start makes only that backend's cells `error`."""
    started = []
    os.environ.pop(NETWORK_ENV, None)
    bridge = None
    if opts.runtime.value == "docker" and opts.images["network"].value == "bridge":
        bridge = os.environ[NETWORK_ENV] = create_network(run_id)
    for backend in sorted(backends & set(DATABASE_BACKENDS)):
        var, given = databases.URL_ENV[backend], opts.database_urls[backend].value
        os.environ.pop(UNAVAILABLE_ENV.format(backend=backend.upper()), None)
        if given:
            os.environ[var] = given
            continue
        print(f"mlflow-compat: starting a {backend} server ({opts.runtime.value})", flush=True)
        try:
            if opts.runtime.value == "docker":
                choice = images.database_image(backend, opts.images[backend].value)
                opts.resolved[f"{backend}_image"] = f"{choice.image} ({choice.note})"
                name = database_container(run_id, backend) if bridge else None
                server = databases.start_container(backend, choice.image, {LABEL_RUN: run_id}, bridge, name)
            else:
                server = databases.start_local(backend)
        except (databases.DatabaseError, images.ImageError, docker.errors.DockerException) as exc:
            os.environ.pop(var, None)
            os.environ[UNAVAILABLE_ENV.format(backend=backend.upper())] = (
                f"the local server did not start: {exc}"
            )
            print(f"mlflow-compat: {backend}: {exc}; its cells will be errors", file=sys.stderr)
            continue
        started.append(server)
        os.environ[var] = server.admin_url.render_as_string(hide_password=False)
    return started


def update_latest_link(results_dir: Path, run_dir: Path) -> None:
    link = results_dir / "latest"
    tmp = results_dir / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


def cmd_run(args: argparse.Namespace) -> int:
    opts = parse_run_options(args)
    resolve(opts)
    cells = plan(opts)
    owner.claim()  # everything this run starts from here on is this process's, for `clean` to judge
    run_dir = prepare(opts, cells)
    cells = select(opts, run_dir, cells)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"mlflow-compat: {len(cells)} cells; results in {run_dir}", flush=True)
    interrupted = False
    started_servers = start_databases(opts, {c.backend for c in cells}, run_dir.name)
    try:
        code = execute(opts, run_dir, len(cells))
    except KeyboardInterrupt:
        code, interrupted = pytest.ExitCode.INTERRUPTED, True
    finally:
        for server in started_servers:
            server.close()
        if opts.runtime.value == "docker":
            remove_containers(run_dir.name)  # whatever a crashed or interrupted cell left behind
            remove_networks(run_dir.name)
    interrupted = interrupted or code == pytest.ExitCode.INTERRUPTED
    run = collect(
        run_dir,
        cells,
        started=started,
        options=opts.describe(),
        harness_version=__version__,
        interrupted=interrupted,
    )
    write_reports(run, run_dir)
    update_latest_link(opts.results_dir.value, run_dir)
    print_summary(run, run_dir)
    return run.exit_code()


def print_summary(run: RunResult, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    colours = {"pass": "green", "fail": "red", "error": "yellow", "skip": "dim"}
    table = Table(title=f"mlflow-compat run {run.run_id}")
    for col in ("cell", "status", "seconds", "summary"):
        table.add_column(col)
    for cell in run.cells:
        c = colours[cell.status.value]
        table.add_row(cell.id, f"[{c}]{cell.status.value}[/{c}]", f"{cell.seconds:.0f}", cell.summary or "")
    for cid in run.not_run:
        table.add_row(cid, "[yellow]not run[/yellow]", "", "no result (interrupted or crashed)")
    console.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items() if n)
    console.print(f"{counts}. Report: {run_dir / 'report.md'} (exit code {run.exit_code()})")


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import load_run

    run = load_run(args.run_dir)
    write_reports(run, args.run_dir)
    print(args.run_dir / "report.md")
    return run.exit_code()


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
        for backend in DATABASE_BACKENDS:
            print(f"{backend}: {images.bootstrap_database(backend)}", flush=True)
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


COMMANDS = {"run": cmd_run, "report": cmd_report, "images": cmd_images, "clean": cmd_clean}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BadInput as exc:
        print(f"mlflow-compat: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
