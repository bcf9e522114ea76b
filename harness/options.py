"""Every option of `mlflow-compat`, declared once, and how a command line becomes checked values.

Each `Option` says it all in one place: its flags and argparse shape, the environment variable that stands
in for the flag, its default, the check that turns what was typed into a value (or refuses it with one
line: `BadInput`, exit code 2), how the report's options table shows it, and its key in a team's config file
(`file_key`: `[tool.mlflow-compat]` in pyproject.toml or mlflow-compat.toml, harness.configfile; None where a
file has no meaning, e.g. the gate's candidate). A value comes from the command line, else the environment
variable, else the config file, else the default. The options of each database
backend (`--postgres-url`, `--mysql-image`, ...) are generated from the backend list (`_server_backends`),
so a new backend adds no option code here. `parse` reads an argparse namespace into `Options`: every value
with its source ("command line", "environment X", "file F [tool.mlflow-compat]", "default", "profile
smoke", ...), in the order the
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

from harness import configfile, databases, expectations, randomplan, scenarios
from harness.backends import BACKENDS, Backend, backend_names
from harness.clients import LAUNCHES
from harness.config import RunConfig
from harness.plan import ARTIFACT_STORES, default_matrix, default_paths, scale_label
from harness.rundir import RunDir
from harness.runtime import RUNTIMES
from harness.serverfork import SERVER_LAUNCHES
from harness.specs import SpecError, parse_path, parse_spec
from harness.versions import DEFAULT_GRACE_DAYS, RESOLUTIONS, RUN_RESOLUTION, RUN_RESOLUTION_WHY


class BadInput(Exception):
    """One line for the user; exit code 2."""

    option: str | None = None  # the option whose check refused (set by `parse`, for a file's values)


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
    file_key: str | None = ""  # its key in a team's config file ("": its name; None: not settable there)
    file_kind: str | None = None  # what the file's value is (configfile.KINDS); None: as the flag takes it
    paths: bool = False  # its values are paths (a config file's are relative to the file's directory)

    def __post_init__(self) -> None:
        if self.file_key == "":
            object.__setattr__(self, "file_key", self.name)

    @property
    def file_type(self) -> configfile.Key:
        """What this option's key in a config file takes: as the flag does (a repeated flag: a list)."""
        action = self.argparse.get("action")
        derived = {"append": "list", "store_true": "bool"}.get(str(action)) or (
            "int" if self.argparse.get("type") is int else "str"
        )
        return configfile.Key(self.file_kind or derived, self.paths)

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

    def given(
        self, args: argparse.Namespace, environ: Mapping[str, str], team: configfile.TeamConfig | None = None
    ) -> Value:
        """What was asked for, unchecked: the command line, else the environment variable, else the team's
        config file, else default."""
        typed = getattr(args, self.dest, None)
        if typed is not None:
            return Value(typed, "command line")
        if self.env and environ.get(self.env):
            return Value(environ[self.env], f"environment {self.env}")
        if team is not None and self.file_key and self.file_key in team.values:
            return Value(team.values[self.file_key], team.source)
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
    source = v.source if texts else "command line"
    if start is not None:
        if v.source != "command line":  # --from/--to on the command line override a config file's paths
            texts, source = [], "command line"
        texts.insert(0, f"{start}:{end}")
    profile = get("profile").value
    try:
        if texts:
            return Value([parse_path(t) for t in texts], source)
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


def _grace(v: Value, get: Lookup) -> Value:
    text = str(v.value).strip()
    if not (text.isascii() and text.isdigit()):
        name = "--resolution-grace" if v.source == "command line" else v.source.removeprefix("environment ")
        raise BadInput(f"{name} {v.value!r}: expected a whole number of days, 0 or more")
    return Value(int(text), v.source)


def _scenarios(v: Value, get: Lookup) -> Value:
    get("scenario_dirs")  # a team's scenarios join the built-in ones first
    if v.source == "default":  # the default selection, and what the profile adds to it (e.g. the nightly's)
        profile = get("profile").value
        extra = tuple(default_matrix(profile).get("extra_scenarios", ()))
        return Value((*scenarios.default_names(), *extra), f"profile {profile}" if extra else v.source)
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


def _path_list(value: Any) -> list[str]:
    """Paths as given: a repeated flag's or a file's list, or one environment variable's os.pathsep list."""
    if not value:
        return []
    if isinstance(value, str):
        return [p for p in value.split(os.pathsep) if p]
    return [str(p) for p in value]


def _expectations(v: Value, get: Lookup) -> Value:
    """Extra declaration files, merged over the shipped one in order (an id given again replaces it)."""
    given = [Path(p) for p in _path_list(v.value)]
    try:
        expectations.load_all(tuple(given))
    except expectations.ExpectationError as exc:
        raise BadInput(str(exc)) from None
    return Value(tuple(p.resolve() for p in given), v.source)


def _scenario_dirs(v: Value, get: Lookup) -> Value:
    """A team's directories of scenario modules: they join the built-in scenarios (harness.scenarios)."""
    dirs = []
    for text in _path_list(v.value):
        path = Path(text).resolve()
        if not path.is_dir():
            raise BadInput(f"scenario directory {text}: no such directory")
        dirs.append(path)
    try:
        scenarios.use_dirs(tuple(dirs))
    except scenarios.ScenarioError as exc:
        raise BadInput(str(exc)) from None
    return Value(tuple(dirs), v.source)


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
        if v.value is False:  # a config file's `auth = false`
            return Value((False,), v.source)
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
               argparse={"metavar": "SPEC", "required": True}, commands=("gate",), report=False,
               file_key=None),
        # The gate's two FROM versions: folded into its paths (the row says where each came from).
        Option("baseline", ("--baseline",), help="upgrade from this (default: the newest release below)",
               env="MLFLOW_COMPAT_BASELINE", argparse={"metavar": "VERSION"}, commands=("gate",),
               report=False),
        Option("oldest", ("--oldest",),
               help="also upgrade from this (default: the oldest supported, [gate] oldest in "
               "harness/data/matrix.toml)", env="MLFLOW_COMPAT_OLDEST", argparse={"metavar": "VERSION"},
               commands=("gate",), report=False),
        Option("backends", ("--backend",),
               help=f"backend store, repeatable ({', '.join(backend_names())}); default: the profile's",
               argparse={"action": "append", "metavar": "NAME", "dest": "backend"}, check=_backends),
        Option("paths", ("--path",), help="upgrade path, repeatable; A:B:C upgrades one store twice",
               argparse={"action": "append", "metavar": "FROM:TO", "dest": "path"}, commands=("run",),
               check=_paths, show=lambda paths: [":".join(s.label for s in p) for p in paths]),
        Option("from_", ("--from",), help="upgrade from this MLflow (with --to)",
               argparse={"metavar": "VERSION"}, commands=("run",), report=False, file_key=None),
        Option("to", ("--to",), help="upgrade to this MLflow (with --from)",
               argparse={"metavar": "VERSION"}, commands=("run",), report=False, file_key=None),
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
               file_kind="csv", check=_clients,
               show=lambda specs: None if specs is None else [s.label for s in specs]),
        Option("results_dir", ("--results-dir",), help="where runs are written (default: results/)",
               env="MLFLOW_COMPAT_RESULTS_DIR", default="results", argparse={"metavar": "DIR"},
               check=_results_dir, paths=True),
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
               argparse={"metavar": "A,B"}, file_kind="csv", check=_scenarios),
        # No script given is still reported as the command line's (an empty list): as reports always had it.
        Option("scripts", ("--scenario",),
               help="your own MLflow script, run unmodified by every client as a scenario (repeatable)",
               default=(), default_source="command line", argparse={"action": "append", "metavar": "PATH"},
               check=_scripts, paths=True),
        Option("scenario_dirs", ("--scenario-dir",),
               help="a directory of your own scenario modules (write/read, as scenarios/ has them), which "
               "join the built-in scenarios by name (repeatable; env: os.pathsep-separated)",
               env="MLFLOW_COMPAT_SCENARIO_DIRS", argparse={"action": "append", "metavar": "DIR"},
               check=_scenario_dirs, show=lambda dirs: [str(d) for d in dirs], paths=True),
        Option("expectations", ("--expectations",),
               help="more declared incompatibilities, merged over the shipped harness/data/expectations.toml "
               "in order (an entry whose id is taken replaces it; repeatable; env: os.pathsep-separated)",
               env="MLFLOW_COMPAT_EXPECTATIONS", argparse={"action": "append", "metavar": "FILE"},
               check=_expectations, show=lambda paths: [str(p) for p in paths], paths=True),
        Option("allow_xpass", ("--allow-xpass",),
               help="a declared failure that passed (stale) does not fail", default=False, argparse=flag,
               check=_flag),
        Option("compare", ("--compare",), help="list what changed since this earlier run",
               argparse={"metavar": "RUN_DIR"}, commands=("run",), check=_compare, file_key=None),
        Option("shard", ("--shard",), help="run only the I-th of N deterministic shares of cells",
               env="MLFLOW_COMPAT_SHARD", argparse={"metavar": "I/N"}, commands=("run",), check=_shard,
               file_key=None,
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
        Option("resolution", ("--resolution",),
               help="how a release's env is resolved: release = its dependencies as of its upload on the "
               f"index plus the grace period (uv --exclude-newer), latest = today's newest; wheels and dirs "
               f"always latest (default: {RUN_RESOLUTION}: {RUN_RESOLUTION_WHY})",
               env="MLFLOW_COMPAT_RESOLUTION", default=RUN_RESOLUTION, argparse={"choices": RESOLUTIONS},
               commands=("run", "gate", "images"),
               check=_one_of(RESOLUTIONS, f"{{env}}={{value!r}}: choose from {', '.join(RESOLUTIONS)}")),
        Option("resolution_grace", ("--resolution-grace",),
               help=f"with --resolution release: days after a release's upload still allowed (default "
               f"{DEFAULT_GRACE_DAYS})", env="MLFLOW_COMPAT_RESOLUTION_GRACE", default=DEFAULT_GRACE_DAYS,
               argparse={"metavar": "DAYS"}, commands=("run", "gate", "images"), check=_grace),
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
        Option("differential", file_key=None),
        Option("list", ("--list",), help="print the cells this run would have, start nothing",
               argparse=flag, commands=("run",), report=False, file_key=None),
        Option("shards", ("--shards",),
               help="with --list: split the cells over N shards as --shard I/N would, and print each "
               "shard's cells and estimated wall time from the recorded durations",
               argparse={"metavar": "N"}, commands=("run",), report=False, check=_shards, file_key=None),
        # The other commands' arguments (never read through `parse`).
        Option("run_dir", (), help="a run directory (results/<run-id>)",
               argparse={"type": Path, "nargs": "?"}, commands=("report",), report=False, positional=True,
               file_key=None),
        Option("compare_to", ("--compare",), help="list what changed since PREVIOUS",
               argparse={"type": Path, "metavar": "PREVIOUS", "dest": "compare"}, commands=("report",),
               report=False, file_key=None),
        Option("merge", ("--merge",), help="join shard runs into one",
               argparse={"type": Path, "nargs": "+", "metavar": "DIR"}, commands=("report",), report=False,
               file_key=None),
        Option("fidelity", ("--fidelity",),
               help="list every difference between two runs of the same cells (e.g. --server-launch fork and "
               "cli), normalized only for ports, temp paths, pids, times and random ids; exit 1 on any",
               argparse={"type": Path, "nargs": 2, "metavar": ("RUN_A", "RUN_B")}, commands=("report",),
               report=False, file_key=None),
        Option("out", ("--out",), help="with --merge: the merged run's directory",
               argparse={"type": Path, "metavar": "DIR"}, commands=("report",), report=False, file_key=None),
        Option("runs", (), help="run directories (results/<run-id>; e.g. a nightly's merged run)",
               argparse={"type": Path, "nargs": "+", "metavar": "RUN"}, commands=("table",), report=False,
               positional=True, file_key=None),
        Option("table_out", ("--out",), help="where compat-table.md and compat-table.html go (default: the "
               "first run's directory)", argparse={"type": Path, "metavar": "DIR"}, commands=("table",),
               report=False, file_key=None),
        Option("versions", (), help="MLflow specs to build server images for",
               argparse={"nargs": "*", "metavar": "VERSION"}, commands=("images",), report=False,
               positional=True, file_key=None),
        Option("bootstrap", ("--bootstrap",),
               help="no registry: make a Debian base (debootstrap) and database images from Debian packages",
               argparse=flag, commands=("images",), report=False, file_key=None),
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
        network = self.value("docker_network")
        return RunConfig(
            run_id=run_id,
            runtime=self.value("runtime"),
            client_launch=self.value("client_launch"),
            server_launch=self.value("server_launch"),
            keep_stores=bool(self.value("keep_stores")),
            resolution=self.value("resolution"),
            resolution_grace_days=self.value("resolution_grace"),
            expectations=tuple(str(p) for p in self.value("expectations")),
            scenario_dirs=tuple(str(d) for d in self.value("scenario_dirs")),
            docker_network=network if network in ("host", "bridge") else "host",
            base_image=self.value("base_image") or None,
            database_images={b.name: self.value(f"{b.name}_image") or None for b in _server_backends()},
            database_urls={b.name: url for b in _server_backends() if (url := self.value(f"{b.name}_url"))},
        )


def team_config(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> configfile.TeamConfig | None:
    """The team's config file for a command run in ``cwd`` (harness.configfile), checked against every
    option's key; a bad one is BadInput naming the file and the key."""
    keys = {o.file_key: o.file_type for o in OPTIONS.values() if o.file_key}
    try:
        return configfile.find(cwd or Path.cwd(), keys, environ)
    except configfile.ConfigError as exc:
        raise BadInput(str(exc)) from None


def given(name: str, args: argparse.Namespace, environ: Mapping[str, str] | None = None,
          team: configfile.TeamConfig | None = None) -> Value:  # fmt: skip
    """One option's value as asked for, unchecked (for what a command decides before `parse`)."""
    return OPTIONS[name].given(args, os.environ if environ is None else environ, team)


def checked(name: str, args: argparse.Namespace, team: configfile.TeamConfig | None = None) -> Value:
    """One option's checked value, for a command that reads only a few (its check must not ask for others)."""
    option, value = OPTIONS[name], given(name, args, team=team)

    def others(other: str) -> NoReturn:
        raise AssertionError(f"{name}'s check asked for {other}: use `parse`")

    return option.check(value, others) if option.check else value


def parse(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Options:
    """Check every run option, in the report's order, each after the options its check asks for; the first
    bad one ends it (BadInput). Options a command does not have on its parser take their environment
    variable, the team's config file's value (found from ``cwd``, default the current directory) or
    default. A value from the file that its check refuses is named by the file and its key."""
    env = os.environ if environ is None else environ
    team = team_config(env, cwd)
    done: dict[str, Value] = {}

    def get(name: str) -> Value:
        if name not in done:
            option = OPTIONS[name]
            given = option.given(args, env, team)
            try:
                done[name] = option.check(given, get) if option.check else given
            except BadInput as exc:
                if exc.option is not None:  # refused by an option this one's check asked for
                    raise
                if team is not None and given.source == team.source:
                    where = " [tool.mlflow-compat]" if team.in_pyproject else ""
                    exc = BadInput(f"{team.path}{where}: {option.file_key}: {exc}")
                exc.option = name
                raise exc from None
        return done[name]

    names = [n for n, o in OPTIONS.items() if o.report or "run" in o.commands or "gate" in o.commands]
    for name in names:
        get(name)
    return Options({n: done[n] for n in names})
