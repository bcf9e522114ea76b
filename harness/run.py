"""A run as a list of small steps, executed one after the other the way nox's `workflow.execute` runs its
tasks:

  resolve -> plan -> order -> prepare -> select -> open services -> execute -> close services -> collect
  -> remember durations -> report -> latest link

Each step takes the `Run` (what the steps before it decided) and returns None to go on, or an exit code to
end the run there. The run's services (harness.runtime.open_run) are closed whatever happens. Up to
`prepare`, everything is checking: bad input ends the run with `BadInput` (one line, exit code 2) before any
process, env or directory is made; a plan with no cell is bad input too. `gate` runs the same steps on the
paths it derives from its candidate. Also here: joining shard runs into one (`merge_shards`). What does not
live here: declaring and checking options (harness.options), the subcommands and what they print
(harness.cli), what a cell does (harness.cell, run by the pytest workers through harness.plugin).
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness import __version__, durations, images, index, migration, owner, progress, pythons, randomplan
from harness.config import RunConfig
from harness.options import BadInput, Options, given, parse, team_config
from harness.plan import (
    CellPlan,
    default_matrix,
    discover,
    dump_plan,
    left_out,
    oldest_supported,
    plan_cells,
)
from harness.report import collect, load_run, write_reports
from harness.results import RunResult
from harness.rundir import RunDir
from harness.runtime import RunScope, open_run
from harness.runtime.docker import has_bridge
from harness.specs import Spec, SpecError, SpecKind, parse_spec


@dataclass
class Run:
    """What the steps of one run have decided so far."""

    opts: Options
    cells: list[CellPlan] = field(default_factory=list)
    run_dir: RunDir | None = None
    config: RunConfig | None = None
    scope: RunScope | None = None
    secrets_dir: Path | None = None  # private, outside the results: the passwords run.json must not hold
    started: str = ""
    code: int = 0  # pytest's exit code
    interrupted: bool = False
    result: RunResult | None = None

    @property
    def dir(self) -> RunDir:
        assert self.run_dir is not None, "the run directory is made by `prepare`"
        return self.run_dir


Step = Callable[[Run], int | None]


def execute(steps: Iterable[Step], run: Run) -> int | None:
    """Each step in turn; one that returns an exit code ends the run there. The run's services are closed
    whatever happens (an exception, Ctrl-C in a step that does not handle it)."""
    try:
        for step in steps:
            code = step(run)
            if code is not None:
                return code
        return None
    finally:
        close_services(run)


# -- resolve -----------------------------------------------------------------------------------------
def resolve(run: Run) -> None:
    """Pin `auto` to a runtime and `latest` to a version; refuse versions the index has never heard of."""
    opts = run.opts
    runtime = opts.value("runtime")
    if runtime in ("auto", "docker"):
        engine = images.engine_available()
        if runtime == "docker" and not engine:
            raise BadInput("--runtime docker: no Docker engine answers (is dockerd running? DOCKER_HOST?)")
        if runtime == "auto":
            opts.resolved["runtime"] = "docker" if engine else "local (no Docker engine answers)"
            opts.set("runtime", "docker" if engine else "local")
    if opts.value("runtime") == "docker":
        network, bridge = opts.value("docker_network"), has_bridge()
        if network == "bridge" and not bridge:
            raise BadInput(
                "--docker-network bridge: this Docker engine has no bridge network (--bridge=none?)"
            )
        if network == "auto":
            opts.set("docker_network", "bridge" if bridge else "host")
            opts.resolved["docker_network"] = opts.value("docker_network")
    discover_paths(opts)
    specs = [s for p in opts.value("paths") for s in p] + list(opts.value("clients") or ())
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
        latest, skipped = index.newest_installable(known, _python_for)
        opts.resolved["latest"] = str(latest)
        if skipped:
            opts.notes.append(f"latest = {latest} (passed over: {'; '.join(skipped)})")

        def pin(spec: Spec) -> Spec:
            return spec.resolved(latest) if spec.kind is SpecKind.LATEST else spec

        pinned = [tuple(pin(s) for s in p) for p in opts.value("paths")]
        # A discovered FROM that is itself the newest release has nothing to upgrade to.
        opts.set("paths", [p for p in pinned if len({s.label for s in p}) > 1])
        dropped = [":".join(s.label for s in p) for p in pinned if len({s.label for s in p}) == 1]
        if dropped:
            opts.resolved["dropped"] = f"{', '.join(dropped)}: upgrades {latest} (latest) to itself"
        if opts.value("clients"):
            opts.set("clients", tuple(pin(s) for s in opts.value("clients")))


def _python_for(release: index.Release) -> Path | None:
    """The installed interpreter a release's env would be built with (None: no installed Python fits)."""
    interp = pythons.pick(release.requires_python, release.version.python_max())
    return interp.path if interp else None


def discover_paths(opts: Options) -> None:
    """A discovered profile (nightly, full): FROM versions from the index, each upgraded to the profile's
    `to`, plus its fixed paths. What was left out, and why, is recorded for the report."""
    profile_name = opts.value("profile")
    profile = default_matrix(profile_name)
    if not profile.get("discover") or not opts["paths"].source.startswith("profile"):
        return
    try:
        known = index.releases()
    except index.IndexError_ as exc:
        raise BadInput(f"profile {profile_name}: cannot read the package index: {exc}") from None
    found, excluded = discover(profile["discover"], profile["since"], known)
    by_version = {r.version: r for r in known}
    usable = []
    for version in found:
        if _python_for(by_version[version]) is None:
            excluded.append(f"{version}: no installed Python satisfies {by_version[version].requires_python}")
        else:
            usable.append(version)
    to = parse_spec(profile["to"])
    paths = [(parse_spec(str(v)), to) for v in usable if to.version is None or v < to.version]
    opts.set(
        "paths", paths + opts.value("paths"), f"profile {profile_name}, discovered from the package index"
    )
    opts.resolved["discovered"] = ", ".join(str(v) for v in usable)
    if excluded:
        opts.resolved["excluded"] = "; ".join(excluded)
        opts.notes.append(f"left out: {'; '.join(excluded)}")


# -- plan -----------------------------------------------------------------------------------------------
def split_cells(cells: list[CellPlan], n: int, known: dict[str, float]) -> durations.Split:
    """N shares of the cells. When the durations record (``known``) has a time of any of them: by duration,
    longest first, each to the shard with the least so far (`durations.split`; the cells it has no time of
    are estimated). Otherwise by id: sorted by id, every N-th from the I-th. Either way it is the same on
    every machine that has the same record, which is why the nightly gives every shard the same one."""
    if any(durations.estimate(c, known) != float("inf") for c in cells):
        return durations.split(cells, n, known)
    ordered = sorted(cells, key=lambda c: c.id)
    unknown = {c.id: durations.Estimate(0.0, False) for c in cells}
    return durations.Split("ids", [ordered[i::n] for i in range(n)], unknown)


def take_shard(
    cells: list[CellPlan], shard: tuple[int, int] | None, known: dict[str, float] | None = None
) -> list[CellPlan]:
    """The I-th of N shares of `split_cells` (no record given: by id)."""
    if shard is None:
        return cells
    i, n = shard
    return split_cells(cells, n, known or {}).shares[i - 1]


def describe_split(split: durations.Split) -> str:
    """The split as the run's resolved facts (and so its report) tell it: the same words in every shard of
    one split, ending with its digest (harness.compare refuses to merge shards whose digests differ)."""
    n, cells = len(split.shares), sum(len(s) for s in split.shares)
    if split.rule == "ids":
        how = f"by id over {n} shards (every {n}-th of the {cells} cells; no recorded duration of any)"
    else:
        unmeasured = sum(split.unmeasured(k) for k in range(1, n + 1))
        work = ", ".join(f"{split.work(k):.0f}" for k in range(1, n + 1))
        how = (
            f"by recorded durations over {n} shards, longest first ({cells - unmeasured} of the {cells} "
            f"cells measured, {unmeasured} estimated; seconds of cell time per shard: {work})"
        )
    return f"{how}; split {split.digest()}"


def plan(run: Run) -> None:
    """The cells this run (or this shard of it) has, after `resolve`. None at all is bad input, with why:
    a run that tests nothing must not pass."""
    opts = run.opts
    names = ("backends", "paths", "clients", "runtime", "scenarios", "scripts", "differential", "auth",
             "artifact_stores", "scale", "rolling")  # fmt: skip
    cells = plan_cells(*(opts.value(n) for n in names))
    if (seed := opts.value("random_plan")) is not None:  # one cell per SQL backend drawn from the seed
        pool = randomplan.pool_of(opts.value("paths"))
        opts.resolved["random plan pool"] = ", ".join(s.label for s in pool)
        try:
            rest = (opts.value(n) for n in ("scenarios", "runtime", "scripts"))
            cells += randomplan.draw_run(seed, opts.value("backends"), pool, *rest)
        except randomplan.PlanError as exc:
            raise BadInput(str(exc)) from None
    if left := left_out(opts.value("backends"), opts.value("paths"), opts.value("auth")):
        opts.resolved["left out"] = "; ".join(f"{what}: {why}" for what, why in left.items())
        opts.notes.append(f"cells left out: {opts.resolved['left out']}")
    if not cells:
        why = [opts.resolved[k] for k in ("dropped", "excluded", "left out") if opts.resolved.get(k)]
        raise BadInput(
            f"no cell to run: no upgrade path is left (paths from {opts['paths'].source})"
            + (f": {'; '.join(why)}" if why else "")
        )
    if shard := opts.value("shard"):
        split = split_cells(cells, shard[1], durations.load())
        run.cells = split.shares[shard[0] - 1]
        opts.resolved["shard split"] = describe_split(split)
    else:
        run.cells = cells
    if not run.cells:
        i, n = opts.value("shard") or (1, 1)
        raise BadInput(f"no cell to run: --shard {i}/{n} is empty (the plan has {len(cells)} cell(s))")
    if seed is not None:  # the run's first line: whatever happens next, the plan can be replayed
        print(f"random plan seed: {seed} (replay with --random-plan {seed})", file=sys.stderr, flush=True)
    for note in opts.notes:
        print(f"mlflow-compat: {note}", file=sys.stderr)


def order(run: Run) -> None:
    """Longest cells first (by the last run's durations), so the tail of a parallel run stays short."""
    run.cells = durations.longest_first(run.cells, durations.load())


def claim(run: Run) -> None:
    """Everything this run starts from here on is this process's, for `clean` to judge."""
    owner.claim()


# -- prepare, select --------------------------------------------------------------------------------------
def prepare(run: Run) -> None:
    results_dir = run.opts.value("results_dir")
    run.run_dir = RunDir(results_dir / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}")
    try:
        run.run_dir.path.mkdir(parents=True)
        run.run_dir.plan.write_text(dump_plan(run.cells))
        run.run_dir.pytest_ini.write_text(
            "[pytest]\n# written by mlflow-compat: this run's cells are pytest items\n"
        )
    except OSError as exc:  # checked at parse time; this is the same refusal, met later (full disk, a race)
        shutil.rmtree(run.run_dir.path, ignore_errors=True)
        raise BadInput(f"results directory {results_dir} is not writable ({exc})") from None


def pytest_args(run: Run) -> list[str]:
    rd = run.dir
    args = [str(rd.plan), "-c", str(rd.pytest_ini), "--rootdir", str(rd.path),
            "-p", "harness.plugin", "-p", "no:cacheprovider", "--compat-run-dir", str(rd.path),
            "-q", "--no-header", "-rN", "--assert=plain", "-o", "console_output_style=classic"]  # fmt: skip
    if run.opts.value("select"):
        args += ["-k", run.opts.value("select")]
    return args


def select(run: Run) -> None:
    """Apply -k as pytest does, in a collect-only pass (nothing starts); a bad or empty one is bad input."""
    expr, rd = run.opts.value("select"), run.dir
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = pytest.main([*pytest_args(run), "--collect-only", "-p", "no:xdist"])
    selected = json.loads(rd.selected.read_text()) if rd.selected.exists() else []
    if code == pytest.ExitCode.USAGE_ERROR or (code != pytest.ExitCode.OK and expr and not selected):
        shutil.rmtree(rd.path)
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            raise BadInput(f"no cell matches -k {expr!r} (cells: {', '.join(c.id for c in run.cells)})")
        why = next((line.split(": ", 2)[-1] for line in out.getvalue().splitlines() if "-k" in line), "")
        raise BadInput(f"-k {expr!r} is not a valid selection expression ({why.strip()})")
    if code != pytest.ExitCode.OK:
        raise RuntimeError(f"collecting the planned cells failed (pytest exit {code}):\n{out.getvalue()}")
    run.cells = [c for c in run.cells if c.id in selected]
    run.started = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"mlflow-compat: {len(run.cells)} cells; results in {rd.path}", flush=True)


# -- services, execute ------------------------------------------------------------------------------------
def open_services(run: Run) -> None:
    """Start what the cells share (one database server per backend, an S3 server when a cell keeps its
    artifacts there, a Docker network) and write run.json, the workers' only source of settings, with what
    the services published."""
    run.config = run.opts.config(run.dir.run_id)
    s3 = any("s3" in c.features for c in run.cells)
    run.scope = open_run(run.config, {c.backend for c in run.cells}, object_store=s3)
    run.opts.resolved.update(run.scope.facts)
    run.secrets_dir = owner.mkdtemp("mlflow-compat-secrets-")
    run.config.with_services(run.scope.published()).write(run.dir.config, run.secrets_dir)


def run_cells(run: Run) -> None:
    """The cells as pytest items, in parallel (pytest-xdist), their progress shown as they go
    (harness.progress: live on a terminal, else a line per event); Ctrl-C ends them and the run goes on to
    report what finished."""
    if not run.cells:
        return
    args = [*pytest_args(run), "--junitxml", str(run.dir.junit),
            "-o", "junit_family=xunit2", "-o", "junit_suite_name=mlflow-compat"]  # fmt: skip
    jobs = min(run.opts.value("jobs"), len(run.cells))
    args += ["-n", str(jobs), "--dist", "load"] if jobs > 1 else ["-p", "no:xdist"]
    try:
        with progress.show(run.dir.path, run.cells, jobs, durations.expected_seconds(run.cells)):
            run.code = int(pytest.main(args))
    except KeyboardInterrupt:
        run.code, run.interrupted = pytest.ExitCode.INTERRUPTED, True


def close_services(run: Run) -> None:
    """Stop what `open_services` started (and, for docker, whatever a crashed cell left behind)."""
    scope, run.scope = run.scope, None
    secrets, run.secrets_dir = run.secrets_dir, None
    try:
        if scope is not None:
            scope.close()
    finally:
        if secrets is not None:
            shutil.rmtree(secrets, ignore_errors=True)


# -- collect, report ---------------------------------------------------------------------------------------
def collect_results(run: Run) -> None:
    run.interrupted = run.interrupted or run.code == pytest.ExitCode.INTERRUPTED
    run.result = collect(run.dir, run.cells, started=run.started, options=run.opts.describe(),
                         harness_version=__version__, interrupted=run.interrupted)  # fmt: skip
    run.result.allow_xpass = bool(run.opts.value("allow_xpass"))


def compare_migrations(run: Run) -> None:
    """The gate at --scale: each candidate cell's upgrade, revision by revision, against the reference cell
    that upgraded the same FROM to the baseline (harness/migration.py); a synthetic result per pair, so that
    the verdict counts in the exit code and shows in the report. Nothing outside the gate at scale."""
    assert run.result is not None
    baseline = run.opts.value("differential")
    candidates = {c.path[-1].label for c in run.cells if c.differential}
    if baseline and run.opts.value("scale"):
        for candidate in sorted(candidates):
            run.result.cells += migration.gate_results(list(run.result.cells), candidate, baseline)


def remember_durations(run: Run) -> None:
    """The cells' times into the durations record; a shard's into its run directory instead, so that the
    other shards of its split read the record it read (they join the record at `merge_shards`)."""
    assert run.result is not None
    if run.opts.value("shard"):
        durations.keep_with_run(run.cells, run.result.cells, run.dir.path)
    else:
        durations.remember(run.cells, run.result.cells)


def report(run: Run) -> None:
    assert run.result is not None
    compare = run.opts.value("compare")
    write_reports(run.result, run.dir, load_run(RunDir(compare)) if compare else None)


def update_latest_link(run: Run) -> None:
    results_dir: Path = run.opts.value("results_dir")
    link = results_dir / "latest"
    tmp = results_dir / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.dir.path.name)
    tmp.replace(link)


LIST: tuple[Step, ...] = (resolve, plan)
RUN: tuple[Step, ...] = (resolve, plan, order, claim, prepare, select, open_services, run_cells,
                         close_services, collect_results, compare_migrations, remember_durations, report,
                         update_latest_link)  # fmt: skip


def list_cells(opts: Options) -> list[CellPlan]:
    """The cells this run would have (`run --list`): resolved and planned, nothing started or written."""
    run = Run(opts)
    execute(LIST, run)
    return run.cells


def list_shards(opts: Options, n: int) -> durations.Split:
    """`run --list --shards N`: the whole plan (as `list_cells`) split as `--shard I/N` would split it."""
    cells = list_cells(opts)
    split = split_cells(cells, n, durations.load())
    opts.resolved["shard split"] = describe_split(split)
    return split


def run_matrix(opts: Options) -> tuple[RunResult, RunDir]:
    run = Run(opts)
    execute(RUN, run)
    assert run.result is not None
    return run.result, run.dir


# -- gate ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    """What the gate decides before it runs: the candidate, the baseline it upgrades from, the oldest."""

    candidate: Spec
    baseline: str
    oldest: str


def gate_options(args: argparse.Namespace) -> tuple[Options, Gate]:
    """The gate's run: upgrade from the baseline and from the oldest supported version to the candidate; the
    baseline's cells also get the differential pass."""
    team = team_config()  # a bad config file is refused before anything else
    try:
        candidate = parse_spec(args.candidate)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    # The baseline and the oldest: --baseline/--oldest, their environment variables, the team's config file,
    # else the newest release below the candidate and the oldest supported version (data/matrix.toml).
    chosen: dict[str, tuple[str, str]] = {}
    for name, fallback, why in (
        ("oldest", oldest_supported, "[gate] oldest in harness/data/matrix.toml"),
        ("baseline", lambda: newest_release_below(candidate), "the newest release below the candidate"),
    ):
        v = given(name, args, team=team)
        if v.value is None:
            chosen[name] = (fallback(), why)
            continue
        try:
            parse_spec(str(v.value))
        except SpecError as exc:
            where = f"--{name}" if v.source == "command line" else v.source
            raise BadInput(f"{where}: {name} {v.value}: {exc}") from None
        chosen[name] = (str(v.value), v.source)
    (oldest, oldest_from), (baseline, baseline_from) = chosen["oldest"], chosen["baseline"]
    args.path = list(dict.fromkeys(f"{v}:{args.candidate}" for v in (baseline, oldest)))
    opts = parse(args)
    paths_from = f"gate: from baseline {baseline} ({baseline_from}) and oldest {oldest} ({oldest_from})"
    opts.set("paths", opts.value("paths"), paths_from)
    opts.set("differential", baseline, "gate (the baseline)")
    if opts.value("scale") and oldest != baseline:  # the baseline's own upgrade, timed beside the candidate's
        reference = (parse_spec(oldest), parse_spec(baseline))
        scaled = f"{paths_from} (+ {oldest}:{baseline} at --scale)"
        opts.set("paths", [*opts.value("paths"), reference], scaled)
    return opts, Gate(candidate, baseline, oldest)


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


# -- merge ---------------------------------------------------------------------------------------------
def _shard_run(shard: Path) -> RunDir | str:
    """The run a shard directory holds: itself (a run directory), its `latest`, or its only run (a results
    directory copied without its symlink); else why it holds none (the shard produced no results)."""
    if not shard.is_dir():
        return "not a directory" if shard.exists() else "no such directory"
    if not any(shard.iterdir()):
        return "empty directory"
    for candidate in (RunDir(shard), RunDir(shard / "latest")):
        if candidate.is_run():
            return candidate
    runs = sorted(p for p in shard.iterdir() if p.is_dir() and RunDir(p).is_run())
    if len(runs) > 1:
        raise BadInput(
            f"--merge {shard}: holds {len(runs)} runs ({', '.join(p.name for p in runs)}); name one"
        )
    return RunDir(runs[0]) if runs else "no results.json"


def merge_shards(dirs: list[Path], run_id: str) -> tuple[RunResult, list[RunDir]]:
    """Load every shard named (see `_shard_run`) and join them. A shard that produced no results (its
    directory missing or empty, no results.json, one that cannot be read) is not dropped: it is listed as not
    run, and the merged verdict fails (harness.compare.merge). The shards' cell times join the durations
    record (each shard kept them in its run directory). Returns the merged run and the run directories
    found."""
    from harness.compare import merge

    runs, found, missing = [], [], []
    for shard in dirs:
        run_dir = _shard_run(shard)
        if isinstance(run_dir, str):
            missing.append(f"{shard}: {run_dir} (the shard produced no results)")
            continue
        resolved = RunDir(run_dir.path.resolve())
        try:
            runs.append(load_run(resolved))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            missing.append(f"{shard}: results.json cannot be read ({type(exc).__name__}: {exc})")
            continue
        found.append(resolved)
    try:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        merged = merge(runs, run_id, missing, when)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    durations.absorb([d.path / durations.FILE for d in found])
    return merged, found
