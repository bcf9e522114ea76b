"""`mlflow-compat`: the command line. `run` is a pipeline of small steps:

  parse -> resolve -> plan -> prepare the run directory -> execute (pytest) -> collect -> report

Everything up to `prepare` is pure checking: bad input ends there with one line and exit code 2,
before any process, env or directory is made. A plan with no cell (a selection, a shard or a profile that
leaves nothing) and a results directory that cannot be written are bad input too.
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
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import docker.errors
import pytest

from harness import (
    __version__,
    databases,
    durations,
    expectations,
    images,
    index,
    owner,
    procs,
    pythons,
    scenarios,
)
from harness.backends import DATABASE_BACKENDS, UNAVAILABLE_ENV, backend_names
from harness.clients import LAUNCH_ENV, LAUNCHES
from harness.plan import (
    CellPlan,
    default_matrix,
    default_paths,
    discover,
    dump_plan,
    oldest_supported,
    plan_cells,
)
from harness.plugin import PLAN_FILE, SELECTED_FILE
from harness.report import collect, load_run, write_reports
from harness.results import ExitCode, RunResult, Status
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
    expectations: Option  # the declarations file (None: the shipped one)
    allow_xpass: Option
    compare: Option  # a previous run's directory, or None
    shard: Option  # (I, N), or None
    client_launch: Option  # fork or spawn
    database_urls: dict[str, Option]
    images: dict[str, Option]
    # The gate's baseline: its cells also get the differential pass (candidate's answers vs the baseline's)
    differential: Option = field(default_factory=lambda: Option(None, "default"))
    resolved: dict[str, str] = field(default_factory=dict)  # `latest` -> version
    # What resolving found worth a line on stderr, printed once the plan is known to have cells (bad input
    # stays one line).
    notes: list[str] = field(default_factory=list)

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
                elif name == "shard" and value is not None:
                    value = f"{value[0]}/{value[1]}"
                out[name] = {"value": value, "source": opt.source}
        out["resolved"] = self.resolved
        return out


def _add_cell_arguments(p: argparse.ArgumentParser) -> None:
    """What both `run` and `gate` take: backends, where and how cells run, scenarios, verdict rules."""
    p.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help=f"backend store, repeatable ({', '.join(backend_names())}); default: the profile's",
    )
    p.add_argument("--results-dir", metavar="DIR", help="where runs are written (default: results/)")
    p.add_argument("-k", dest="select", metavar="EXPR", help="select cells by id, as pytest -k does")
    p.add_argument("-n", "--jobs", type=int, metavar="N", help="cells in parallel (default: CPU count)")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="where servers and databases run (default: auto = docker when an engine answers)",
    )
    p.add_argument(
        "--docker-network",
        choices=("auto", "host", "bridge"),
        help="docker runtime networking (default: auto = bridge when the daemon has one)",
    )
    p.add_argument(
        "--base-image",
        metavar="IMAGE",
        help="base of server images (default: python:X.Y-slim, else a bootstrapped Debian)",
    )
    for backend, default in images.DEFAULT_DB_IMAGES.items():
        p.add_argument(
            f"--{backend}-image", metavar="IMAGE", help=f"{backend} image for docker (default {default})"
        )
    p.add_argument(
        "--scenarios",
        metavar="A,B",
        help=f"built-in scenarios to run (default: {', '.join(scenarios.default_names())}; also: "
        f"{', '.join(sorted(set(scenarios.all_names()) - set(scenarios.default_names()))) or 'none'}; "
        "`none` for only your own scripts)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="PATH",
        dest="scripts",
        help="your own MLflow script, run unmodified by every client as a scenario (repeatable)",
    )
    p.add_argument(
        "--expectations",
        metavar="FILE",
        help="declared incompatibilities (default: the shipped harness/data/expectations.toml)",
    )
    p.add_argument(
        "--client-launch",
        choices=LAUNCHES,
        help="fork (default): each client step is a fresh process forked from an interpreter that imported "
        "mlflow once; spawn: each step starts its own interpreter",
    )
    p.add_argument(
        "--allow-xpass", action="store_true", help="a declared failure that passed (stale) does not fail"
    )
    p.add_argument("--keep-stores", action="store_true", help="keep each cell's store for inspection")
    for backend in DATABASE_BACKENDS:
        p.add_argument(
            f"--{backend}-url",
            metavar="URL",
            help=f"use this {backend} server (per-cell databases are created and dropped there); "
            f"default: start a local one (env {databases.URL_ENV[backend]})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlflow-compat", description="MLflow client/server compatibility across upgrades.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the compatibility matrix and write a report")
    _add_cell_arguments(run)
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
    run.add_argument("--profile", default=None, help="default matrix profile: smoke, nightly, full")
    run.add_argument("--compare", metavar="RUN_DIR", help="list what changed since this earlier run")
    run.add_argument("--shard", metavar="I/N", help="run only the I-th of N deterministic shares of cells")
    run.add_argument("--list", action="store_true", help="print the cells this run would have, start nothing")
    gate = sub.add_parser("gate", help="may we bump MLflow to this candidate? exit 0 only if so")
    gate.add_argument(
        "--candidate", required=True, metavar="SPEC", help="a version, a wheel, or a dir of wheels"
    )
    gate.add_argument(
        "--baseline", metavar="VERSION", help="upgrade from this (default: the newest release below)"
    )
    _add_cell_arguments(gate)
    gate.set_defaults(
        from_=None, to=None, path=None, clients=None, profile=None, compare=None, shard=None, list=False
    )
    report = sub.add_parser("report", help="render a run's reports again, compare runs, merge shards")
    report.add_argument("run_dir", type=Path, nargs="?", help="a run directory (results/<run-id>)")
    report.add_argument("--compare", type=Path, metavar="PREVIOUS", help="list what changed since PREVIOUS")
    report.add_argument("--merge", type=Path, nargs="+", metavar="DIR", help="join shard runs into one")
    report.add_argument("--out", type=Path, metavar="DIR", help="with --merge: the merged run's directory")
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

    chosen = _opt(args.scenarios, "MLFLOW_COMPAT_SCENARIO_NAMES", ",".join(scenarios.default_names()))
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

    declared = _opt(args.expectations, "MLFLOW_COMPAT_EXPECTATIONS", None)
    try:
        expectations.load(Path(declared.value) if declared.value else None)
    except expectations.ExpectationError as exc:
        raise BadInput(str(exc)) from None
    if declared.value:
        declared.value = Path(declared.value).resolve()
    compare = _opt(args.compare, None, None)
    if compare.value is not None:
        compare.value = Path(compare.value).resolve()
        if not (compare.value / "results.json").is_file():
            raise BadInput(f"--compare {args.compare}: no results.json there (a run directory is needed)")
    shard = _opt(args.shard, "MLFLOW_COMPAT_SHARD", None)
    if shard.value is not None:
        shard.value = _shard(shard.value)

    client_launch = _opt(args.client_launch, LAUNCH_ENV, "fork")
    if client_launch.value not in LAUNCHES:
        raise BadInput(f"{LAUNCH_ENV}={client_launch.value!r}: choose from {', '.join(LAUNCHES)}")

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
    if runtime.value == "local":
        given = [k for k, o in image_opts.items() if o.source == "command line"]
        if given:
            flag = "--docker-network" if given[0] == "network" else f"--{given[0]}-image"
            raise BadInput(f"{flag} applies to the docker runtime, not --runtime local")
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
        expectations=declared,
        allow_xpass=Option(args.allow_xpass, "command line" if args.allow_xpass else "default"),
        compare=compare,
        shard=shard,
        client_launch=client_launch,
        database_urls=urls,
        images=image_opts,
    )


def _shard(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit()) or not 1 <= int(i) <= int(n):
        raise BadInput(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(i), int(n)


def take_shard(cells: list[CellPlan], shard: tuple[int, int] | None) -> list[CellPlan]:
    """The I-th of N shares: cells sorted by id, every N-th from the I-th (the same on every machine)."""
    if shard is None:
        return cells
    i, n = shard
    ordered = sorted(cells, key=lambda c: c.id)
    return [c for k, c in enumerate(ordered) if k % n == i - 1]


def _script(text: str) -> Path:
    path = Path(text).resolve()
    if not path.is_file():
        raise BadInput(f"--scenario {text}: no such file")
    if path.suffix != ".py":
        raise BadInput(f"--scenario {text}: not a Python script (.py)")
    return path


def _check_writable(path: Path, what: str = "results directory") -> None:
    """Refuse a directory that cannot be made or written. Tried for real, in its nearest existing ancestor
    (a throwaway directory made and removed): permission bits do not tell (root passes them all, and /proc
    or a read-only mount refuse anyway)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BadInput(f"{what} {path} is not writable ({probe} is not a directory)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mlflow-compat-probe-", dir=probe))
    except OSError as exc:
        raise BadInput(f"{what} {path} is not writable ({probe}: {exc.strerror})") from None


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
    discover_paths(opts)
    specs = [s for p in opts.paths.value for s in p] + list(opts.clients.value or ())
    releases = [s for s in specs if s.kind in (SpecKind.RELEASE, SpecKind.LATEST)]
    if not releases:
        return
    try:
        known = index.releases()
    except index.IndexError_ as exc:
        if any(s.kind is SpecKind.LATEST for s in releases):
            raise BadInput(f"cannot resolve `latest`: {exc}") from None
        opts.notes.append(f"warning: {exc}; versions are not checked before installing")
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
            opts.notes.append(f"latest = {latest} (passed over: {'; '.join(skipped)})")

        def pin(spec: Spec) -> Spec:
            return spec.resolved(latest) if spec.kind is SpecKind.LATEST else spec

        pinned = [tuple(pin(s) for s in p) for p in opts.paths.value]
        # A discovered FROM that is itself the newest release has nothing to upgrade to.
        opts.paths.value = [p for p in pinned if len({s.label for s in p}) > 1]
        dropped = [":".join(s.label for s in p) for p in pinned if len({s.label for s in p}) == 1]
        if dropped:
            opts.resolved["dropped"] = f"{', '.join(dropped)}: upgrades {latest} (latest) to itself"
        if opts.clients.value:
            opts.clients.value = tuple(pin(s) for s in opts.clients.value)


def discover_paths(opts: RunOptions) -> None:
    """A discovered profile (nightly, full): FROM versions from the index, each upgraded to the profile's
    `to`, plus its fixed paths. What was left out, and why, is recorded for the report."""
    profile = default_matrix(opts.profile.value)
    if not profile.get("discover") or not opts.paths.source.startswith("profile"):
        return
    try:
        known = index.releases()
    except index.IndexError_ as exc:
        raise BadInput(f"profile {opts.profile.value}: cannot read the package index: {exc}") from None
    found, excluded = discover(profile["discover"], profile["since"], known)
    by_version = {r.version: r for r in known}
    usable = []
    for version in found:
        if pythons.pick(by_version[version].requires_python, version.python_max()) is None:
            excluded.append(f"{version}: no installed Python satisfies {by_version[version].requires_python}")
        else:
            usable.append(version)
    to = parse_spec(profile["to"])
    extra = opts.paths.value
    opts.paths.value = [(parse_spec(str(v)), to) for v in usable if to.version is None or v < to.version]
    opts.paths.value += extra
    opts.paths.source = f"profile {opts.profile.value}, discovered from the package index"
    opts.resolved["discovered"] = ", ".join(str(v) for v in usable)
    if excluded:
        opts.resolved["excluded"] = "; ".join(excluded)
        opts.notes.append(f"left out: {'; '.join(excluded)}")


# -- plan, prepare, execute ------------------------------------------------------------------------------
def plan(opts: RunOptions) -> list[CellPlan]:
    return plan_cells(opts.backends.value, opts.paths.value, opts.clients.value, opts.runtime.value,
                      opts.scenarios.value, opts.scripts.value, opts.differential.value)  # fmt: skip


def planned(opts: RunOptions) -> list[CellPlan]:
    """The cells this run (or this shard of it) has, after `resolve`. None at all is bad input, with why:
    a run that tests nothing must not pass."""
    cells = plan(opts)
    if not cells:
        why = [opts.resolved[k] for k in ("dropped", "excluded") if opts.resolved.get(k)]
        raise BadInput(
            f"no cell to run: no upgrade path is left (paths from {opts.paths.source})"
            + (f": {'; '.join(why)}" if why else "")
        )
    share = take_shard(cells, opts.shard.value)
    if not share:
        i, n = opts.shard.value or (1, 1)
        raise BadInput(f"no cell to run: --shard {i}/{n} is empty (the plan has {len(cells)} cell(s))")
    for note in opts.notes:
        print(f"mlflow-compat: {note}", file=sys.stderr)
    return share


def prepare(opts: RunOptions, cells: list[CellPlan]) -> Path:
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    run_dir = opts.results_dir.value / run_id
    try:
        run_dir.mkdir(parents=True)
        (run_dir / PLAN_FILE).write_text(dump_plan(cells))
        (run_dir / "pytest.ini").write_text(
            "[pytest]\n# written by mlflow-compat: this run's cells are pytest items\n"
        )
    except OSError as exc:  # checked at parse time; this is the same refusal, met later (full disk, a race)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise BadInput(f"results directory {opts.results_dir.value} is not writable ({exc})") from None
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
    os.environ[LAUNCH_ENV] = opts.client_launch.value  # the workers' client steps
    args += ["-n", str(jobs), "--dist", "load"] if jobs > 1 else ["-p", "no:xdist"]
    if opts.keep_stores.value:
        args.append("--compat-keep-stores")
    if opts.expectations.value:
        args += ["--compat-expectations", str(opts.expectations.value)]
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
    if args.list:
        resolve(opts)
        for cell in planned(opts):
            print(cell.id)
        for key, value in opts.resolved.items():
            print(f"# {key}: {value}", file=sys.stderr)
        return ExitCode.OK
    run, run_dir = run_matrix(opts)
    print_summary(run, run_dir)
    return run.exit_code()


def run_matrix(opts: RunOptions) -> tuple[RunResult, Path]:
    """The pipeline: resolve, plan, shard, order (longest first), prepare, select, start databases, execute,
    collect, remember durations, report."""
    resolve(opts)
    cells = durations.longest_first(planned(opts), durations.load())
    owner.claim()  # everything this run starts from here on is this process's, for `clean` to judge
    run_dir = prepare(opts, cells)
    cells = select(opts, run_dir, cells)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"mlflow-compat: {len(cells)} cells; results in {run_dir}", flush=True)
    interrupted, code = False, 0
    started_servers = start_databases(opts, {c.backend for c in cells}, run_dir.name)
    try:
        if cells:
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
    run.allow_xpass = bool(opts.allow_xpass.value)
    durations.remember(cells, run.cells)
    previous = load_run(opts.compare.value) if opts.compare.value else None
    write_reports(run, run_dir, previous)
    update_latest_link(opts.results_dir.value, run_dir)
    return run, run_dir


def print_summary(run: RunResult, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

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
        table.add_row(cell.id, f"[{c}]{cell.status.value}[/{c}]", f"{cell.seconds:.0f}", cell.summary or "")
    for cid in run.not_run:
        table.add_row(cid, "[yellow]not run[/yellow]", "", "no result (interrupted or crashed)")
    console.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items() if n)
    console.print(f"{counts}. Report: {run_dir / 'report.md'} (exit code {run.exit_code()})")


def cmd_report(args: argparse.Namespace) -> int:
    """Render a run's reports again (with --compare, against an earlier run), or merge shard runs."""

    def load(path: Path, what: str) -> RunResult:
        if not (path / "results.json").is_file():
            raise BadInput(f"{what} {path}: no results.json there (a run directory is needed)")
        return load_run(path)

    if args.merge:
        if args.run_dir is not None:
            raise BadInput("--merge takes the shard directories; name the output with --out")
        out = (args.out or Path("results") / f"merged-{datetime.now(UTC):%Y%m%dT%H%M%SZ}").resolve()
        _check_writable(out, "--out")
        previous = load(args.compare, "--compare") if args.compare else None
        run, found = merge_shards(args.merge, out.name)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for shard_dir in found:  # the cells' logs travel with the merged report
                if (shard_dir / "cells").is_dir():
                    shutil.copytree(shard_dir / "cells", out / "cells", dirs_exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--out {out} is not writable ({exc})") from None
        run_dir = out
        for entry in run.not_run:
            print(f"mlflow-compat: not run: {entry}", file=sys.stderr)
    else:
        if args.run_dir is None:
            raise BadInput("report needs a run directory (or --merge DIR...)")
        run, run_dir = load(args.run_dir, "report"), args.run_dir
        _check_writable(run_dir, "report: run directory")
        previous = load(args.compare, "--compare") if args.compare else None
    write_reports(run, run_dir, previous)
    print(run_dir / "report.md")
    return run.exit_code()


def _shard_run(shard: Path) -> Path | None:
    """The run a shard directory holds: itself (a run directory), its `latest`, or its only run (a results
    directory copied without its symlink); None when it holds none."""
    if (shard / "results.json").is_file():
        return shard
    if (shard / "latest" / "results.json").is_file():
        return shard / "latest"
    runs = sorted(p for p in shard.iterdir() if p.is_dir() and (p / "results.json").is_file())
    if len(runs) > 1:
        raise BadInput(
            f"--merge {shard}: holds {len(runs)} runs ({', '.join(p.name for p in runs)}); name one"
        )
    return runs[0] if runs else None


def merge_shards(dirs: list[Path], run_id: str) -> tuple[RunResult, list[Path]]:
    """Load every shard named (see `_shard_run`) and join them. A shard that produced no results (its
    directory missing or empty, no results.json, one that cannot be read) is not dropped: it is listed as not
    run, and the merged verdict fails (harness.compare.merge). Returns the merged run and the run
    directories found."""
    from harness.compare import merge

    runs, found, missing = [], [], []
    for shard in dirs:
        if not shard.is_dir():
            what = "not a directory" if shard.exists() else "no such directory"
            missing.append(f"{shard}: {what} (the shard produced no results)")
            continue
        if not any(shard.iterdir()):
            missing.append(f"{shard}: empty directory (the shard produced no results)")
            continue
        run_dir = _shard_run(shard)
        if run_dir is None:
            missing.append(f"{shard}: no results.json (the shard produced no results)")
            continue
        try:
            runs.append(load_run(run_dir.resolve()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            missing.append(f"{shard}: results.json cannot be read ({type(exc).__name__}: {exc})")
            continue
        found.append(run_dir.resolve())
    try:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        return merge(runs, run_id, missing, when), found
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def cmd_gate(args: argparse.Namespace) -> int:
    """Upgrade from the baseline and from the oldest supported version to the candidate, old clients against
    the candidate server and the candidate client against old servers, on every backend; the baseline's cells
    also compare the candidate's answers with the baseline's (the differential pass); then a verdict."""
    try:
        candidate = parse_spec(args.candidate)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    oldest = oldest_supported()
    baseline = args.baseline or newest_release_below(candidate)
    args.path = list(dict.fromkeys(f"{v}:{args.candidate}" for v in (baseline, oldest)))
    opts = parse_run_options(args)
    opts.differential = Option(baseline, "gate (the baseline)")
    run, run_dir = run_matrix(opts)
    print_summary(run, run_dir)
    print_verdict(run, run_dir, candidate.label, baseline, oldest)
    return run.exit_code()


def newest_release_below(candidate: Spec) -> str:
    if candidate.version is None:
        raise BadInput("--candidate latest: name a version, a wheel or a directory of wheels")
    try:
        known = index.releases()
    except index.IndexError_ as exc:
        raise BadInput(f"cannot find a baseline below {candidate.label} ({exc}); pass --baseline") from None
    below = [r.version for r in known if r.version < candidate.version and not r.version.release.is_prerelease
             and r.version.broken_reason() is None]  # fmt: skip
    if not below:
        raise BadInput(f"no release below {candidate.label} to use as the baseline; pass --baseline")
    return str(max(below))


def print_verdict(run: RunResult, run_dir: Path, candidate: str, baseline: str, oldest: str) -> None:
    """A few lines a release manager reads: the decision, then each unexpected check and its logs."""
    unexpected = [(cell, check) for cell in run.cells for check in cell.checks
                  if check.status in (Status.FAIL, Status.ERROR)
                  or (check.status is Status.XPASS and not run.allow_xpass)]  # fmt: skip
    code = run.exit_code()
    verdict = "PASS" if code == ExitCode.OK else "FAIL"
    print(f"gate: {verdict}: candidate {candidate} (from baseline {baseline} and oldest {oldest}; "
          f"{len(run.cells)} cells, {sum(len(c.checks) for c in run.cells)} checks)")  # fmt: skip
    for cell, check in unexpected:
        who = " ".join(x for x in (check.scenario, check.client and f"client {check.client}",
                                   check.server and f"server {check.server}") if x)  # fmt: skip
        print(f"  {check.status.value}: {cell.id} {check.phase}/{check.name} {who}: {check.detail[:200]}")
        for log in check.logs[:2]:
            print(f"      log: {run_dir / 'cells' / cell.dir / log}")
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
