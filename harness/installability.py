"""Which MLflow releases install and import under each resolution mode: measured, not assumed.

For the newest patch of each MLflow minor from ``--since`` (default 1.20) to the newest on the index (yanked,
pre-release and broken releases left out, as harness/data/versions.toml says), this builds the env the harness
would build, in a throwaway cache directory, under each mode:

- ``latest``: today's resolution with the version's recipes (what cells got before resolution modes existed);
- ``release-bare``: as of the release's upload plus the grace period (``--exclude-newer``), on the Python of
  that time, with no version-specific recipe (only what every version gets: the database drivers). This says
  which recipes release-date resolution makes unnecessary;
- ``release``: as ``release-bare`` but with the recipes versions.toml keeps for the ``release`` mode; measured
  only where ``release-bare`` failed (and with ``--all-modes`` everywhere).

Each env is probed the way a cell would use it: ``import mlflow``; importing the server, the SQL stores and
the REST stores; a SQLite tracking store created (every migration run); ``mlflow server --help``. Then it is
deleted (each env is 0.5-2 GB). Results: a table on stdout and JSON (``--out``), with uv's reason for a
failed install and the failing step's last line for a failed probe, the Python used, the seconds, and the
versions of the dependencies the recipes are about. The cache and its modes live in harness.envs; this
module only measures (``nox -s installability``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.version import Version

from harness import index
from harness.envs import EnvCache, EnvError, iso
from harness.specs import Spec, SpecKind
from harness.versions import DEFAULT_GRACE_DAYS, MlflowVersion

MODES = ("latest", "release-bare", "release")
# Distributions the recipes constrain (or that commonly break old versions): their installed versions are
# recorded, so a recipe release resolution makes unnecessary can be seen as already satisfied.
WATCHED = ("sqlalchemy", "alembic", "setuptools", "protobuf", "numpy", "pandas", "opentelemetry-sdk",
           "flask", "werkzeug", "pyarrow", "packaging")  # fmt: skip
PROBE_TIMEOUT_S = 300

# Runs inside the env (Python 3.8+): each step's outcome, and the watched distributions' versions.
_PROBE = r"""
import importlib, importlib.metadata as md, json, sys, tempfile, os, traceback
out = {"python": "%d.%d.%d" % sys.version_info[:3], "steps": {}, "versions": {}}
for name in WATCHED:
    try:
        out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        out["versions"][name] = None
def step(name, fn):
    try:
        fn()
        out["steps"][name] = None
    except BaseException as exc:
        out["steps"][name] = ("%s: %s" % (type(exc).__name__, exc)).strip().splitlines()[-1][:400]
        return False
    return True
def store():
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    d = tempfile.mkdtemp()
    SqlAlchemyStore("sqlite:///" + os.path.join(d, "m.db"), os.path.join(d, "a"))
if step("import", lambda: importlib.import_module("mlflow")):
    step("server", lambda: [importlib.import_module(m) for m in (
        "mlflow.server", "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.tracking.rest_store")])
    step("store", store)
print(json.dumps(out))
"""


@dataclass
class Outcome:
    version: str
    mode: str
    python: str | None = None
    exclude_newer: str | None = None
    requirements: list[str] = field(default_factory=list)
    install: str = "not run"  # "ok", or uv's reason
    steps: dict[str, str | None] = field(default_factory=dict)  # step -> None (ok) or its error
    cli: str | None = "not run"  # `mlflow server --help`: None when it worked
    versions: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.install == "ok"
            and bool(self.steps)
            and all(v is None for v in self.steps.values())
            and {"import", "server", "store"} <= set(self.steps)
            and self.cli is None
        )

    def cell(self) -> str:
        """One table cell: what went how far."""
        if self.install == "not run":
            return "-"
        if self.install != "ok":
            return "install FAIL"
        failed = [k for k in ("import", "server", "store") if self.steps.get(k, "not run") is not None]
        if self.cli is not None:
            failed.append("cli")
        what = "ok" if not failed else "FAIL " + ",".join(failed)
        return f"{what} py{_minor(self.python)} {self.seconds:.0f}s"


def _minor(python: str | None) -> str:
    if not python:
        return "?"
    v = Version(python)
    return f"{v.major}.{v.minor}"


def versions_to_measure(since: str, releases: list[index.Release]) -> tuple[list[MlflowVersion], list[str]]:
    """The newest patch of each minor from ``since`` on, and why releases were left out."""
    newest: dict[tuple[int, int], MlflowVersion] = {}
    skipped = []
    for r in releases:
        if r.version.release < Version(since):
            continue
        if why := r.excluded_reason:
            if not r.version.release.is_prerelease:
                skipped.append(f"{r.version}: {why}")
            continue
        key = (r.version.release.major, r.version.release.minor)
        newest[key] = max(r.version, newest.get(key, r.version))
    return sorted(newest.values()), skipped


def _always_requirements() -> list[str]:
    """What every version gets (recipes matching any version): the database drivers."""
    return MlflowVersion.parse("99999").install_requirements("latest")


def measure(
    version: MlflowVersion, mode: str, work: Path, grace_days: int, install_timeout_s: float
) -> Outcome:
    """Build ``version``'s env under ``mode`` in a directory of its own under ``work``; probe, delete it."""
    spec = Spec(raw=str(version), kind=SpecKind.RELEASE, version=version)
    out = Outcome(version=str(version), mode=mode)
    root = Path(tempfile.mkdtemp(prefix=f"{version}-{mode}-", dir=work))
    started = time.monotonic()
    try:
        cache = EnvCache(root, resolution="latest" if mode == "latest" else "release", grace_days=grace_days)
        cache.install_timeout_s = install_timeout_s
        try:
            _, interp, reqs = cache.plan(spec)
            cutoff = cache.cutoff(spec)
        except EnvError as exc:
            out.install = f"not planned: {exc}"
            return out
        if mode == "release-bare":
            reqs = [*spec.requirements(), *_always_requirements()]
        out.python, out.requirements = str(interp.version), reqs
        out.exclude_newer = None if cutoff is None else iso(cutoff)
        env = root / "env"
        log = root / "build.log"
        try:
            cache._build(env, spec, interp, reqs, log, cutoff)
        except EnvError as exc:
            out.install = str(exc)
            return out
        out.install = "ok"
        _probe(env, out)
        return out
    finally:
        out.seconds = round(time.monotonic() - started, 1)
        shutil.rmtree(root, ignore_errors=True)


def _probe(env: Path, out: Outcome) -> None:
    python = str(env / "bin" / "python")
    environ = {
        "PATH": f"{env / 'bin'}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    try:
        proc = subprocess.run([python, "-c", f"WATCHED = {WATCHED!r}\n{_PROBE}"], env=environ,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        out.steps = {"import": f"probe timed out after {PROBE_TIMEOUT_S}s"}
        return
    try:
        facts = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        out.steps = {"import": f"probe crashed (exit {proc.returncode}): {tail[:400]}"}
        return
    out.steps, out.versions = facts["steps"], facts["versions"]
    if out.steps.get("import") is not None:
        out.cli = "not run: mlflow does not import"
        return
    try:
        cli = subprocess.run([str(env / "bin" / "mlflow"), "server", "--help"], env=environ,
                             capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        out.cli = f"timed out after {PROBE_TIMEOUT_S}s"
        return
    if cli.returncode == 0 and "--backend-store-uri" in cli.stdout:
        out.cli = None
    else:
        out.cli = ((cli.stderr or cli.stdout).strip().splitlines() or ["no output"])[-1][:400]


def table(outcomes: Iterable[Outcome]) -> str:
    """A Markdown table: one row per version, one column per mode."""
    by: dict[str, dict[str, Outcome]] = {}
    for o in outcomes:
        by.setdefault(o.version, {})[o.mode] = o
    lines = ["| version | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
    for v in sorted(by, key=Version):
        row = [by[v][m].cell() if m in by[v] else "-" for m in MODES]
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def failures(outcomes: Iterable[Outcome]) -> str:
    lines = []
    for o in sorted(outcomes, key=lambda o: (Version(o.version), o.mode)):
        if o.ok or o.install == "not run":
            continue
        why = o.install if o.install != "ok" else "; ".join(
            f"{k}: {v}" for k, v in [*o.steps.items(), ("cli", o.cli)] if v is not None
        )  # fmt: skip
        lines.append(f"- {o.version} {o.mode} (py{_minor(o.python)}): {why[:600]}")
    return "\n".join(lines)


def recipe_verdicts(outcomes: Iterable[Outcome]) -> list[str]:
    """For each version-specific recipe: is it still needed when resolving as of the release? Not needed
    where, for every measured version it applies to, the env without it (``release-bare``) installed and
    imported and already has versions inside the recipe's bounds (so runtime fixes, such as
    opentelemetry-sdk<1.45, are covered as well as import fixes)."""
    from packaging.requirements import Requirement

    from harness.versions import _facts, _matches

    bare = {o.version: o for o in outcomes if o.mode == "release-bare"}
    lines = []
    for recipe in _facts()["recipe"]:
        if recipe["versions"] == ">=0":
            continue  # what every version gets (the drivers): part of release-bare too
        applies = [v for v in sorted(bare, key=Version) if _matches(recipe["versions"], Version(v))]
        if not applies:
            continue
        unmet = []
        for v in applies:
            o = bare[v]
            if not o.ok:
                unmet.append(f"{v}: release-bare fails")
                continue
            for text in recipe["requirements"]:
                req = Requirement(text)
                got = o.versions.get(req.name.lower())
                if got is not None and not req.specifier.contains(got, prereleases=True):
                    unmet.append(f"{v}: {req.name} {got}")
        verdict = "still needed" if unmet else "unnecessary under release"
        why = ": " + "; ".join(unmet) if unmet else ""
        lines.append(f"- {recipe['versions']} {recipe['requirements']} (modes {recipe.get('modes', 'all')}): "
                     f"{verdict} ({len(applies)} versions measured){why}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.installability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--since", default="1.20", help="oldest minor measured (default 1.20)")
    parser.add_argument("--versions", nargs="*", help="measure these versions instead of discovering them")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES)
    )
    parser.add_argument(
        "--all-modes", action="store_true", help="measure `release` even where release-bare worked"
    )
    parser.add_argument("--grace-days", type=int, default=DEFAULT_GRACE_DAYS)
    parser.add_argument("--jobs", type=int, default=2, help="builds at once (default 2)")
    parser.add_argument("--install-timeout", type=float, default=600, help="seconds per uv install")
    parser.add_argument(
        "--work", type=Path, default=None, help="where the throwaway envs go (default: a tmp dir)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/installability.json"),
        help="the JSON written (default: results/installability.json)",
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        print(f"installability: unknown mode(s) {', '.join(bad)}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.grace_days < 0:
        print("installability: --jobs must be 1 or more and --grace-days 0 or more", file=sys.stderr)
        return 2
    try:
        if args.versions:
            versions, skipped = [MlflowVersion.parse(v) for v in args.versions], []
        else:
            versions, skipped = versions_to_measure(args.since, index.releases())
    except (ValueError, index.IndexError_) as exc:
        print(f"installability: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlflow-compat-installability-", dir=args.work))
    print(
        f"installability: {len(versions)} versions x {modes}; left out: {skipped or 'none'}; work {work}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def record(o: Outcome) -> None:
        with lock:
            outcomes.append(o)
            print(f"{time.strftime('%H:%M:%S')} {o.version} {o.mode}: {o.cell()}"
                  + ("" if o.ok else f" -- {failures([o])[:300]}"), flush=True)  # fmt: skip
            _write(args.out, outcomes, args, skipped)

    def one(v: MlflowVersion) -> None:
        for mode in [m for m in modes if m != "release"]:
            record(measure(v, mode, work, args.grace_days, args.install_timeout))
        if "release" in modes:
            bare = next((o for o in outcomes if o.version == str(v) and o.mode == "release-bare"), None)
            if args.all_modes or bare is None or not bare.ok:
                record(measure(v, "release", work, args.grace_days, args.install_timeout))

    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, reversed(versions)))  # newest first: their caches are warm
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(outcomes))
    print(failures(outcomes))
    print("\n".join(recipe_verdicts(outcomes)))
    print(f"installability: wrote {args.out}")
    return 0


def _write(path: Path, outcomes: list[Outcome], args: argparse.Namespace, skipped: list[str]) -> None:
    data = {
        "grace_days": args.grace_days,
        "left_out": skipped,
        "outcomes": [
            {**asdict(o), "ok": o.ok} for o in sorted(outcomes, key=lambda o: (Version(o.version), o.mode))
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
