"""Every option of `mlflow-compat`, declared once, and how a command line becomes checked values.

Each `Option` says it all in one place: its flags and argparse shape, the environment variable that stands
in for the flag, its default, the check that turns what was typed into a value (or refuses it with one
line: `BadInput`, exit code 2), and how the report's options table shows it. The options of each database
backend (`--postgres-url`, `--mysql-image`, ...) are generated from the backend list (`_server_backends`),
so a new backend adds no option code here. `parse` reads an argparse namespace into `Options`: every value
with its source ("command line", "environment X", "default", "profile smoke", ...), in the order the
report lists them. Parsing is pure checking: it starts nothing, makes no directory (a results directory is
only tried for writing) and never writes `os.environ`. What does not live here: resolving `auto` and
`latest` against Docker and the package index, planning and running (harness.run), the subcommands and
printing (harness.cli).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from harness import databases, expectations, randomplan, scenarios
from harness.backends import BACKENDS, Backend, backend_names
from harness.clients import LAUNCHES
from harness.config import RunConfig
from harness.plan import ARTIFACT_STORES, default_matrix, default_paths, scale_label
from harness.rundir import RunDir
from harness.runtime import RUNTIMES
from harness.serverfork import SERVER_LAUNCHES
from harness.specs import SpecError, parse_path, parse_spec


class BadInput(Exception):
    """One line for the user; exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not a usage dump
        raise BadInput(message)


@dataclass(frozen=True)
class Value:
    """An option's value and where it came from (default, command line, an environment variable, ...)."""

    value: Any
    source: str


Lookup = Callable[[str], Value]  # another option's checked value (checked first if it was not yet)
Check = Callable[[Value, Lookup], Value]  # what was typed -> the value, or BadInput


def _as_is(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


@dataclass(frozen=True)
class Option:
    """One option: ``name`` is its key in `Options` and in the report's options table."""

    name: str
    flags: tuple[str, ...] = ()  # none: not on the command line (set by a command, e.g. the gate's baseline)
    help: str | None = None
    env: str | None = None  # stands in for the flag when the flag is not given
    default: Any = None  # a callable is called when the default is needed
    default_source: str = "default"
    argparse: Mapping[str, Any] = field(default_factory=dict)  # action, metavar, choices, type, dest, ...
    commands: tuple[str, ...] = ("run", "gate")
    check: Check | None = None
    show: Callable[[Any], Any] = _as_is  # the value as the report's options table shows it
    report: bool = True  # a row of the report's options table (inputs such as --from are folded elsewhere)
    positional: bool = False  # an argument without a flag (named by ``name``)

    @property
    def dest(self) -> str:
        return str(self.argparse.get("dest", self.name))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs = dict(self.argparse)
        if self.positional:
            parser.add_argument(self.name, help=self.help, **kwargs)
            return
        kwargs.setdefault("dest", self.name)
        kwargs.setdefault("default", None)  # None: not given (a store_true flag too), so the source is known
        parser.add_argument(*self.flags, help=self.help, **kwargs)

    def given(self, args: argparse.Namespace, environ: Mapping[str, str]) -> Value:
        """What was asked for, unchecked: the command line, else the environment variable, else default."""
        typed = getattr(args, self.dest, None)
        if typed is not None:
            return Value(typed, "command line")
        if self.env and environ.get(self.env):
            return Value(environ[self.env], f"environment {self.env}")
        default = self.default() if callable(self.default) else self.default
        return Value(default, self.default_source)


# -- checks ------------------------------------------------------------------------------------------------
def _profile(v: Value, get: Lookup) -> Value:
    try:
        default_matrix(v.value)
    except KeyError:
        raise BadInput(f"unknown profile {v.value!r}") from None
    return v


def _backends(v: Value, get: Lookup) -> Value:
    if v.source == "default":
        v = Value(list(default_matrix(get("profile").value)["backends"]), v.source)
    for name in v.value:
        if name not in backend_names():
            raise BadInput(f"unknown backend {name!r} (choose from {', '.join(backend_names())})")
        if (why := BACKENDS[name].unavailable()) is not None:
            raise BadInput(why)
    return v


def _paths(v: Value, get: Lookup) -> Value:
    start, end = get("from_").value, get("to").value
    if (start is None) != (end is None):
        raise BadInput("--from and --to go together (or use --path FROM:TO)")
    texts = list(v.value or [])
    if start is not None:
        texts.insert(0, f"{start}:{end}")
    profile = get("profile").value
    try:
        if texts:
            return Value([parse_path(t) for t in texts], "command line")
        return Value(default_paths(profile), f"profile {profile}")
    except SpecError as exc:
        raise BadInput(str(exc)) from None


def _clients(v: Value, get: Lookup) -> Value:
    get("paths")  # a bad path is named before a bad client, as the flags read
    if v.value is None:
        return v
    try:
        return Value(tuple(parse_spec(c) for c in v.value.split(",")), v.source)
    except SpecError as exc:
        raise BadInput(str(exc)) from None


def _jobs(v: Value, get: Lookup) -> Value:
    try:
        jobs = int(v.value)
    except ValueError:
        raise BadInput(f"--jobs must be a whole number, not {v.value!r}") from None
    if jobs < 1:
        raise BadInput(f"--jobs must be at least 1, not {jobs}")
    return Value(jobs, v.source)


def _scenarios(v: Value, get: Lookup) -> Value:
    if v.source == "default":  # the default selection, and what the profile adds to it (e.g. the nightly's)
        profile = get("profile").value
        extra = tuple(default_matrix(profile).get("extra_scenarios", ()))
        if extra:
            return Value((*scenarios.default_names(), *extra), f"profile {profile}")
    names = tuple(n.strip() for n in v.value.split(",") if n.strip())
    if names == ("none",):
        names = ()
    unknown = [n for n in names if n not in scenarios.all_names()]
    if unknown or (not names and v.value.strip() != "none"):
        raise BadInput(
            f"unknown scenario {', '.join(unknown) or repr(v.value)} "
            f"(choose from {', '.join(scenarios.all_names())}, or none)"
        )
    if not names and not get("scripts").value:
        raise BadInput("--scenarios none leaves nothing to run: add --scenario PATH")
    if v.source != "default":  # a named scenario that exists for a feature no cell of the run has
        has = {"auth"} if True in get("auth").value else set()
        has |= {"s3"} if "s3" in get("artifact_stores").value else set()
        for name in names:
            if missing := set(scenarios.builtin()[name].needs) - has:
                flag = {"auth": "--auth", "s3": "--artifact-store s3"}
                raise BadInput(f"scenario {name} needs {' and '.join(flag[m] for m in sorted(missing))}")
    return Value(names, v.source)


def _script(text: str) -> str:
    path = Path(text).resolve()
    if not path.is_file():
        raise BadInput(f"--scenario {text}: no such file")
    if path.suffix != ".py":
        raise BadInput(f"--scenario {text}: not a Python script (.py)")
    return str(path)


def _scripts(v: Value, get: Lookup) -> Value:
    return Value(tuple(_script(p) for p in v.value or ()), v.source)


def _expectations(v: Value, get: Lookup) -> Value:
    try:
        expectations.load(Path(v.value) if v.value else None)
    except expectations.ExpectationError as exc:
        raise BadInput(str(exc)) from None
    return Value(Path(v.value).resolve() if v.value else None, v.source)


def _compare(v: Value, get: Lookup) -> Value:
    if v.value is None:
        return v
    run = RunDir(Path(v.value).resolve())
    if not run.is_run():
        raise BadInput(f"--compare {v.value}: no results.json there (a run directory is needed)")
    return Value(run.path, v.source)


def _shard(v: Value, get: Lookup) -> Value:
    if v.value is None:
        return v
    i, _, n = v.value.partition("/")
    if not (i.isdigit() and n.isdigit()) or not 1 <= int(i) <= int(n):
        raise BadInput(f"--shard {v.value}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return Value((int(i), int(n)), v.source)


def _shards(v: Value, get: Lookup) -> Value:
    """--shards N (with --list): how the plan would split over N shards. No environment variable: one
    left set would refuse every run that is not a --list."""
    if v.value is None:
        return v
    text = str(v.value).strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise BadInput(f"--shards {v.value}: expected a number of shards, 1 or more")
    if not get("list").value:
        raise BadInput("--shards N goes with --list (it prints the split; --shard I/N runs one share)")
    if (shard := get("shard")).value is not None:
        where = "--shard" if shard.source == "command line" else shard.source
        raise BadInput(f"--shards N lists every shard: drop {where} ({shard.value[0]}/{shard.value[1]})")
    return Value(int(text), v.source)


def _one_of(choices: Iterable[str], refusal: str) -> Check:
    """A choice that argparse checks on the command line; from the environment it is checked here."""

    def check(v: Value, get: Lookup) -> Value:
        if v.value not in choices:
            raise BadInput(refusal.format(value=v.value, env=v.source.removeprefix("environment ")))
        return v

    return check


def check_writable(path: Path, what: str = "results directory") -> None:
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


def _results_dir(v: Value, get: Lookup) -> Value:
    path = Path(v.value).resolve()
    check_writable(path)
    return Value(path, v.source)


def _docker_only(flag: str, then: Check | None = None) -> Check:
    """An option that means something to the docker runtime only: given with `--runtime local`, refused."""

    def check(v: Value, get: Lookup) -> Value:
        if get("runtime").value == "local" and v.source == "command line":
            raise BadInput(f"{flag} applies to the docker runtime, not --runtime local")
        return then(v, get) if then else v

    return check


def _database_url(backend: str) -> Check:
    def check(v: Value, get: Lookup) -> Value:
        if v.value:
            try:
                databases.parse_admin_url(backend, v.value)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
        return v

    return check


def _flag(v: Value, get: Lookup) -> Value:
    return Value(bool(v.value), v.source)


def _auth(v: Value, get: Lookup) -> Value:
    """--auth: every cell's servers run the basic-auth app; else the profile's variants (off, or both)."""
    if v.source != "default":
        if str(v.value).lower() not in ("1", "true", "yes", "on"):
            raise BadInput(
                f"{v.source.removeprefix('environment ')}={v.value!r}: expected 1/true to turn auth on"
            )
        return Value((True,), v.source)
    profile = get("profile").value
    return Value(tuple(bool(a) for a in default_matrix(profile).get("auth", [False])), f"profile {profile}")


def _artifact_stores(v: Value, get: Lookup) -> Value:
    if v.source == "default":
        profile = get("profile").value
        return Value(tuple(default_matrix(profile).get("artifact_stores", ["local"])), f"profile {profile}")
    given = v.value.split(",") if isinstance(v.value, str) else v.value
    for name in given:
        if name not in ARTIFACT_STORES:
            raise BadInput(f"unknown artifact store {name!r} (choose from {', '.join(ARTIFACT_STORES)})")
    return Value(tuple(dict.fromkeys(given)), v.source)


def parse_size(text: str) -> int:
    """A seeded size as typed: "1m", "250k", "20000" (0, "0" or "off": none); ValueError if it is not one."""
    t = text.strip().lower().replace("_", "")
    if t in ("", "0", "off", "none"):
        return 0
    units = {"k": 1_000, "m": 1_000_000}
    number, unit = (t[:-1], units[t[-1]]) if t[-1] in units else (t, 1)
    value = float(number) * unit  # "1.5m" is a size too
    if not value.is_integer() or value < 0:
        raise ValueError(text)
    return int(value)


def _scale(v: Value, get: Lookup) -> Value:
    """--scale SIZE: metric points seeded into every SQL cell's FROM store (with runs, params, tags, ...)."""
    if v.source == "default":
        profile = get("profile").value
        size = default_matrix(profile).get("scale")
        return Value(parse_size(str(size)) if size else 0, f"profile {profile}" if size else v.source)
    try:
        size = parse_size(str(v.value))
    except (ValueError, IndexError):
        raise BadInput(f"--scale {v.value}: expected a size such as 1m, 250k or 20000") from None
    if size and size < 1_000:
        raise BadInput(f"--scale {v.value}: at least 1000 metric points (1k), or 0 for none")
    if size and not [b for b in get("backends").value if b not in ("file", "file_to_sqlite")]:
        raise BadInput("--scale seeds SQL stores: add --backend sqlite, postgres or mysql")
    return Value(size, v.source)


def _rolling(v: Value, get: Lookup) -> Value:
    """--rolling: the FROM server keeps serving a workload through the first upgrade (SQL server backends)."""
    if v.source == "default":
        profile = get("profile").value
        rolling = bool(default_matrix(profile).get("rolling", False))
        return Value(rolling, f"profile {profile}" if rolling else v.source)
    on = str(v.value).lower() in ("1", "true", "yes", "on")
    if on and not [b for b in get("backends").value if BACKENDS[b].has_server]:
        raise BadInput("--rolling needs a database server backend: add --backend postgres or mysql")
    return Value(on, v.source)


def _random_plan(v: Value, get: Lookup) -> Value:
    """--random-plan SEED: one drawn cell per SQL backend (harness/randomplan.py); `new` draws a seed, as the
    profile key `random_plan = true` does when no seed is given. The value is the seed, a whole number."""
    if v.source == "default":
        profile = get("profile").value
        if not default_matrix(profile).get("random_plan"):
            return v
        v = Value("new", f"profile {profile}")
    env = v.source.startswith("environment ")
    name = v.source.removeprefix("environment ") + "=" if env else "--random-plan "  # as the user typed it
    text = str(v.value).strip().lower()
    if text != "new" and not (text.isascii() and text.isdigit()):
        raise BadInput(f"{name}{v.value}: expected a seed (a whole number, 0 or more) or `new`")
    if not [b for b in get("backends").value if randomplan.drawn_for(b)]:
        if v.source.startswith("profile"):
            return Value(None, f"{v.source} (no SQL backend in this run)")
        raise BadInput(f"{name}{v.value}: random plans are drawn per SQL backend: add --backend sqlite, "
                       "postgres or mysql")  # fmt: skip
    if text == "new" and (shard := get("shard").value) and shard[1] > 1:
        raise BadInput(f"--shard {shard[0]}/{shard[1]} with a new random-plan seed: pass --random-plan N, "
                       "the same N to every shard, so that they all draw the same cells")  # fmt: skip
    if text == "new":
        return Value(randomplan.new_seed(), f"{v.source} (a new seed)")
    return Value(int(text), v.source)


# -- the options ---------------------------------------------------------------------------------------
def _server_backends() -> list[Backend]:
    """The backends that run on a database server this machine can have: each gets `--X-url` and
    `--X-image` (and a row of each in the report). The one place the per-backend options come from."""
    return [b for b in BACKENDS.values() if b.has_server]


def _url_options() -> list[Option]:
    return [
        Option(
            f"{b.name}_url",
            (f"--{b.name}-url",),
            help=f"{b.url_help()} (env MLFLOW_COMPAT_{b.name.upper()}_URL)",
            env=f"MLFLOW_COMPAT_{b.name.upper()}_URL",
            argparse={"metavar": "URL"},
            check=_database_url(b.name),
            show=lambda url: databases.redact(str(url)) if url else "a local server started by the run",
        )
        for b in _server_backends()
    ]


def _image_options() -> list[Option]:
    return [
        Option(
            f"{b.name}_image",
            (f"--{b.name}-image",),
            help=b.image_help(),
            env=f"MLFLOW_COMPAT_{b.name.upper()}_IMAGE",
            argparse={"metavar": "IMAGE"},
            check=_docker_only(f"--{b.name}-image"),
            show=lambda value: value or "default",
        )
        for b in _server_backends()
    ]


def _declare() -> list[Option]:
    """Every option of `run` and `gate` (and the few of the other commands), in the order the report's
    options table lists them; inputs that fold into another option (--from, --to) are not rows of it."""
    others = sorted(set(scenarios.all_names()) - set(scenarios.default_names()))
    flag = {"action": "store_true"}
    return [
        Option("candidate", ("--candidate",), help="a version, a wheel, or a dir of wheels",
               argparse={"metavar": "SPEC", "required": True}, commands=("gate",), report=False),
        Option("baseline", ("--baseline",), help="upgrade from this (default: the newest release below)",
               argparse={"metavar": "VERSION"}, commands=("gate",), report=False),
        Option("backends", ("--backend",),
               help=f"backend store, repeatable ({', '.join(backend_names())}); default: the profile's",
               argparse={"action": "append", "metavar": "NAME", "dest": "backend"}, check=_backends),
        Option("paths", ("--path",), help="upgrade path, repeatable; A:B:C upgrades one store twice",
               argparse={"action": "append", "metavar": "FROM:TO", "dest": "path"}, commands=("run",),
               check=_paths, show=lambda paths: [":".join(s.label for s in p) for p in paths]),
        Option("from_", ("--from",), help="upgrade from this MLflow (with --to)",
               argparse={"metavar": "VERSION"}, commands=("run",), report=False),
        Option("to", ("--to",), help="upgrade to this MLflow (with --from)",
               argparse={"metavar": "VERSION"}, commands=("run",), report=False),
        Option("auth", ("--auth",),
               help="every server runs the basic-auth app (2.5+) with an auth database of its own; cells "
               "whose path has an older server are left out (default: the profile's, off for smoke)",
               env="MLFLOW_COMPAT_AUTH", argparse=flag, check=_auth,
               show=lambda variants: ["on" if a else "off" for a in variants]),
        Option("artifact_stores", ("--artifact-store",),
               help=f"where servers keep artifacts, repeatable ({', '.join(ARTIFACT_STORES)}: an S3 "
               "bucket per cell on an S3 server the run starts); default: the profile's, local for smoke",
               env="MLFLOW_COMPAT_ARTIFACT_STORE",
               argparse={"action": "append", "metavar": "STORE", "dest": "artifact_store"},
               check=_artifact_stores, show=list),
        Option("scale", ("--scale",),
               help="seed every SQL cell's FROM store with SIZE metric points (1m, 250k; runs, params, tags, "
               "registry, inputs with them) and measure the upgrade per revision (default: the profile's: "
               "off)",
               env="MLFLOW_COMPAT_SCALE", argparse={"metavar": "SIZE"}, check=_scale,
               show=lambda size: scale_label(size) if size else "off"),
        Option("rolling", ("--rolling",),
               help="keep the FROM server serving a workload of every client through the first upgrade and "
               "the TO server's start (database server backends)", env="MLFLOW_COMPAT_ROLLING",
               argparse=flag, check=_rolling),
        Option("random_plan", ("--random-plan",),
               help="add one cell per SQL backend drawn from SEED: a 2-4 hop path through the run's "
               "versions, 1-3 clients, a scenario order; `new` draws a seed (printed first; default: the "
               "profile's, new in the nightly)", env="MLFLOW_COMPAT_RANDOM_PLAN",
               argparse={"metavar": "SEED"},
               check=_random_plan, show=lambda seed: "off" if seed is None else seed),
        Option("clients", ("--clients",), help="client versions for every cell (default: the path's ends)",
               argparse={"metavar": "V1,V2"}, commands=("run",), default_source="default (each path's ends)",
               check=_clients, show=lambda specs: None if specs is None else [s.label for s in specs]),
        Option("results_dir", ("--results-dir",), help="where runs are written (default: results/)",
               env="MLFLOW_COMPAT_RESULTS_DIR", default="results", argparse={"metavar": "DIR"},
               check=_results_dir),
        Option("select", ("-k",), help="select cells by id, as pytest -k does", argparse={"metavar": "EXPR"}),
        Option("jobs", ("-n", "--jobs"), help="cells in parallel (default: CPU count)",
               env="MLFLOW_COMPAT_JOBS", default=lambda: os.cpu_count() or 1,
               argparse={"type": int, "metavar": "N"}, check=_jobs),
        Option("runtime", ("--runtime",),
               help="where servers and databases run (default: auto = docker when an engine answers)",
               env="MLFLOW_COMPAT_RUNTIME", default="auto", argparse={"choices": RUNTIMES},
               check=_one_of(RUNTIMES, f"unknown runtime {{value!r}} (choose from {', '.join(RUNTIMES)})")),
        Option("keep_stores", ("--keep-stores",), help="keep each cell's store for inspection",
               default=False, argparse=flag, check=_flag),
        Option("profile", ("--profile",), help="default matrix profile: smoke, nightly, full",
               env="MLFLOW_COMPAT_PROFILE", default="smoke", commands=("run",), check=_profile),
        Option("scenarios", ("--scenarios",),
               help=f"built-in scenarios to run (default: {', '.join(scenarios.default_names())}; also: "
               f"{', '.join(others) or 'none'}; `none` for only your own scripts)",
               env="MLFLOW_COMPAT_SCENARIO_NAMES", default=lambda: ",".join(scenarios.default_names()),
               argparse={"metavar": "A,B"}, check=_scenarios),
        # No script given is still reported as the command line's (an empty list): as reports always had it.
        Option("scripts", ("--scenario",),
               help="your own MLflow script, run unmodified by every client as a scenario (repeatable)",
               default=(), default_source="command line", argparse={"action": "append", "metavar": "PATH"},
               check=_scripts),
        Option("expectations", ("--expectations",),
               help="declared incompatibilities (default: the shipped harness/data/expectations.toml)",
               env="MLFLOW_COMPAT_EXPECTATIONS", argparse={"metavar": "FILE"}, check=_expectations),
        Option("allow_xpass", ("--allow-xpass",),
               help="a declared failure that passed (stale) does not fail", default=False, argparse=flag,
               check=_flag),
        Option("compare", ("--compare",), help="list what changed since this earlier run",
               argparse={"metavar": "RUN_DIR"}, commands=("run",), check=_compare),
        Option("shard", ("--shard",), help="run only the I-th of N deterministic shares of cells",
               env="MLFLOW_COMPAT_SHARD", argparse={"metavar": "I/N"}, commands=("run",), check=_shard,
               show=lambda shard: None if shard is None else f"{shard[0]}/{shard[1]}"),
        Option("client_launch", ("--client-launch",),
               help="fork (default): each client step is a fresh process forked from an interpreter that "
               "imported mlflow once; spawn: each step starts its own interpreter",
               env="MLFLOW_COMPAT_CLIENT_LAUNCH", default="fork", argparse={"choices": LAUNCHES},
               check=_one_of(LAUNCHES, f"{{env}}={{value!r}}: choose from {', '.join(LAUNCHES)}")),
        Option("server_launch", ("--server-launch",),
               help="fork (default): each local server starts from a per-version process that imported the "
               "server once (scenarios/serverfork.py), running the real CLI and the real server entry point; "
               "cli: each start runs `mlflow server` from scratch. Docker always starts real containers",
               env="MLFLOW_COMPAT_SERVER_LAUNCH", default="fork", argparse={"choices": SERVER_LAUNCHES},
               check=_one_of(SERVER_LAUNCHES, "{env}={value!r}: choose from fork, cli")),
        *_url_options(),
        Option("base_image", ("--base-image",),
               help="base of server images (default: python:X.Y-slim, else a bootstrapped Debian)",
               env="MLFLOW_COMPAT_BASE_IMAGE", argparse={"metavar": "IMAGE"},
               commands=("run", "gate", "images"), check=_docker_only("--base-image"),
               show=lambda value: value or "default"),
        Option("docker_network", ("--docker-network",),
               help="docker runtime networking (default: auto = bridge when the daemon has one)",
               env="MLFLOW_COMPAT_DOCKER_NETWORK", default="auto",
               argparse={"choices": ("auto", "host", "bridge")}, check=_docker_only("--docker-network"),
               show=lambda value: value or "default"),
        *_image_options(),
        # The gate's baseline: its cells also get the differential pass (the candidate's answers vs its)
        Option("differential"),
        Option("list", ("--list",), help="print the cells this run would have, start nothing",
               argparse=flag, commands=("run",), report=False),
        Option("shards", ("--shards",),
               help="with --list: split the cells over N shards as --shard I/N would, and print each "
               "shard's cells and estimated wall time from the recorded durations",
               argparse={"metavar": "N"}, commands=("run",), report=False, check=_shards),
        # The other commands' arguments (never read through `parse`).
        Option("run_dir", (), help="a run directory (results/<run-id>)",
               argparse={"type": Path, "nargs": "?"}, commands=("report",), report=False, positional=True),
        Option("compare_to", ("--compare",), help="list what changed since PREVIOUS",
               argparse={"type": Path, "metavar": "PREVIOUS", "dest": "compare"}, commands=("report",),
               report=False),
        Option("merge", ("--merge",), help="join shard runs into one",
               argparse={"type": Path, "nargs": "+", "metavar": "DIR"}, commands=("report",), report=False),
        Option("fidelity", ("--fidelity",),
               help="list every difference between two runs of the same cells (e.g. --server-launch fork and "
               "cli), normalized only for ports, temp paths, pids, times and random ids; exit 1 on any",
               argparse={"type": Path, "nargs": 2, "metavar": ("RUN_A", "RUN_B")}, commands=("report",),
               report=False),
        Option("out", ("--out",), help="with --merge: the merged run's directory",
               argparse={"type": Path, "metavar": "DIR"}, commands=("report",), report=False),
        Option("versions", (), help="MLflow specs to build server images for",
               argparse={"nargs": "*", "metavar": "VERSION"}, commands=("images",), report=False,
               positional=True),
        Option("bootstrap", ("--bootstrap",),
               help="no registry: make a Debian base (debootstrap) and database images from Debian packages",
               argparse=flag, commands=("images",), report=False),
    ]  # fmt: skip


OPTIONS: dict[str, Option] = {o.name: o for o in _declare()}


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Put ``command``'s options on its parser."""
    for option in OPTIONS.values():
        if command in option.commands and (option.flags or option.positional):
            option.add_to(parser)


# -- the values ----------------------------------------------------------------------------------------
@dataclass
class Options:
    """The checked value of every option of a run, with its source. `resolve` (harness.run) pins `auto` and
    `latest` later (`set`), recording what it found in ``resolved``."""

    values: dict[str, Value]
    resolved: dict[str, str] = field(default_factory=dict)  # e.g. `latest` -> version
    # What resolving found worth a line on stderr, printed once the plan is known to have cells (bad input
    # stays one line).
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def value(self, name: str) -> Any:
        return self.values[name].value

    def set(self, name: str, value: Any, source: str | None = None) -> None:
        self.values[name] = replace(self.values[name], value=value, source=source or self.values[name].source)

    def describe(self) -> dict[str, Any]:
        """The report's options table: each option's value as shown, and its source; then `resolved`."""
        out: dict[str, Any] = {}
        for name, v in self.values.items():
            option = OPTIONS[name]
            if option.report:
                out[name] = {"value": option.show(v.value), "source": v.source}
        out["resolved"] = self.resolved
        return out

    def config(self, run_id: str) -> RunConfig:
        """What the run's pytest workers need (run.json), once `auto` is resolved."""
        declared = self.value("expectations")
        network = self.value("docker_network")
        return RunConfig(
            run_id=run_id,
            runtime=self.value("runtime"),
            client_launch=self.value("client_launch"),
            server_launch=self.value("server_launch"),
            keep_stores=bool(self.value("keep_stores")),
            expectations=str(declared) if declared else None,
            docker_network=network if network in ("host", "bridge") else "host",
            base_image=self.value("base_image") or None,
            database_images={b.name: self.value(f"{b.name}_image") or None for b in _server_backends()},
            database_urls={b.name: url for b in _server_backends() if (url := self.value(f"{b.name}_url"))},
        )


def parse(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Options:
    """Check every run option, in the report's order, each after the options its check asks for; the first
    bad one ends it (BadInput). Options a command does not have on its parser take their environment
    variable or default."""
    env = os.environ if environ is None else environ
    done: dict[str, Value] = {}

    def get(name: str) -> Value:
        if name not in done:
            option = OPTIONS[name]
            given = option.given(args, env)
            done[name] = option.check(given, get) if option.check else given
        return done[name]

    names = [n for n, o in OPTIONS.items() if o.report or "run" in o.commands or "gate" in o.commands]
    for name in names:
        get(name)
    return Options({n: done[n] for n in names})
