"""One virtualenv per (MLflow spec, Python), built with uv and reused across cells and runs.

The cache key hashes everything that goes into an env (spec identity, interpreter, requirements,
this module's format), so a changed recipe builds a new env instead of reusing a stale one. Scenarios may
ask for packages beside mlflow (their ``PACKAGES``, e.g. scikit-learn): those are resolved by uv together
with mlflow's own pins, so each version gets the newest release compatible with it, and they are part of the
requirements and so of the key; an env without packages keeps the key it always had. Builds
take a file lock per key: parallel workers asking for the same env wait for one build. An env is
complete only once its manifest is written; a half-built directory is removed and rebuilt.

Resolution (``EnvCache(resolution=...)``): ``latest`` installs the newest dependencies that satisfy a
version's pins today (plus its recipes); ``release`` installs a release from the index as it resolved when it
came out: uv's ``--exclude-newer`` at the release's upload time (harness.index) plus a grace period, on the
newest Python minor that was current then (harness.pythons), with only the recipes still needed in that mode
(harness/data/versions.toml ``modes``). Local wheels and wheel directories (candidates) always resolve
``latest``: they have no release date. The cutoff is part of the key and of the manifest (so of the report's
env facts); a ``latest`` env keeps the key it always had. Measuring which releases install under each mode
lives in harness.installability.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uv
from filelock import FileLock
from packaging.requirements import Requirement

from harness import pythons
from harness.index import IndexError_, release_time, requires_python
from harness.paths import cache_root
from harness.specs import Spec, SpecKind
from harness.versions import DEFAULT_GRACE_DAYS, RESOLUTIONS, MlflowVersion

FORMAT = 1  # bump when the layout or the manifest changes
MANIFEST = "mlflow-compat-env.json"
INSTALL_TIMEOUT_S = 900
DEFAULT_RESOLUTION = "latest"  # EnvCache's default: tests and tools that build an env keep today's keys

# Runs inside the env, with bytecode writing on: reports what was really installed and the schema head its
# migrations declare, and byte-compiles what the harness will run by importing it (mlflow, its CLI, server,
# stores, artifact repositories, the WSGI/ASGI servers) and compiling the migrations. That is about a
# quarter of the env (2.22.5: 2,000 of 8,200 files); compiling all of it took 19 s of a 26 s build.
# Whatever a process imports later is compiled on first use and kept (Env.environ lifts
# PYTHONDONTWRITEBYTECODE for the env's own processes). A second process imports the heavy dependencies at
# the same time, on the other core (2.22.5: 14 s -> 10 s; 3.17.2: 15 s -> 10 s).
_WARM = ("mlflow", "mlflow.cli", "mlflow.server", "mlflow.store.tracking.sqlalchemy_store",
         "mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.tracking.rest_store",
         "mlflow.store.model_registry.rest_store", "mlflow.store.artifact.http_artifact_repo",
         "mlflow.store.artifact.local_artifact_repo", "mlflow.tracking", "gunicorn.app.wsgiapp",
         "uvicorn", "requests", "psycopg2", "pymysql")  # fmt: skip
_WARM_DEPENDENCIES = ("pandas", "sqlalchemy", "sqlalchemy.orm", "alembic", "flask", "pyarrow", "scipy",
                      "gunicorn.app.wsgiapp", "uvicorn", "fastapi")  # fmt: skip
_WARM_ONLY = r"""
import importlib
for name in WARM:
    try:
        importlib.import_module(name)
    except Exception:  # absent in this version: nothing to compile (the probe reports what mlflow lacks)
        pass
"""
_PROBE = r"""
import compileall, importlib, importlib.metadata as md, importlib.util, json, os, sys
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
head = None
spec = importlib.util.find_spec("mlflow")
mig = os.path.join(list(spec.submodule_search_locations)[0], "store", "db_migrations")
if os.path.isdir(mig):
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    cfg = Config()
    cfg.set_main_option("script_location", mig)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    compileall.compile_dir(mig, quiet=1)
not_warmed = []
packages = {name: v(name) for name in PACKAGES}
for name in WARM:
    try:
        importlib.import_module(name)
    except Exception as exc:  # absent in this version, or broken: reported, and the cell will show it
        not_warmed.append("%s: %s" % (name, exc))
print(json.dumps({"mlflow": v("mlflow"), "mlflow_skinny": v("mlflow-skinny"), "sqlalchemy": v("sqlalchemy"),
                  "alembic": v("alembic"), "python": "%d.%d.%d" % sys.version_info[:3], "schema_head": head,
                  "not_warmed": not_warmed, "packages": packages}))
"""


class EnvError(RuntimeError):
    """An env could not be created: the cells that need it end as `error` with this reason."""


@dataclass(frozen=True)
class Env:
    path: Path
    spec_label: str
    version: MlflowVersion
    python: str
    sqlalchemy: str | None
    schema_head: str | None
    requirements: tuple[str, ...]
    build_seconds: float
    reused: bool = False
    # Packages asked for beside mlflow (scenarios' PACKAGES), as (distribution, installed version).
    packages: tuple[tuple[str, str | None], ...] = ()
    # How it was resolved: "latest", or "release" with ``exclude_newer`` the cutoff (ISO 8601, UTC).
    resolution: str = "latest"
    exclude_newer: str | None = None

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def interpreter(self) -> Path:
        return self.bin / "python"

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """A process environment that runs this env's programs first (1.x servers exec gunicorn by name)."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("MLFLOW_")}
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # what is imported first is compiled once, into the env
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def to_manifest(self) -> dict[str, object]:
        return {
            "spec_label": self.spec_label,
            "version": str(self.version),
            "python": self.python,
            "sqlalchemy": self.sqlalchemy,
            "schema_head": self.schema_head,
            "requirements": list(self.requirements),
            "build_seconds": self.build_seconds,
            "packages": [list(p) for p in self.packages],
            "resolution": self.resolution,
            "exclude_newer": self.exclude_newer,
        }

    def components(self) -> dict[str, str | None]:
        return {
            "mlflow": str(self.version),
            "python": self.python,
            "sqlalchemy": self.sqlalchemy,
            "schema_head": self.schema_head,
            "resolution": self.resolution
            if self.exclude_newer is None
            else f"release (<= {self.exclude_newer})",
            **dict(self.packages),
        }


def _run(cmd: list[str], log: Path, timeout: float) -> None:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EnvError(f"timed out after {timeout:.0f}s: {' '.join(cmd[:3])}") from exc
    if proc.returncode != 0:
        raise EnvError(_resolver_reason(log.read_text()))


def _resolver_reason(output: str) -> str:
    """The part of uv's output a person needs: from its first error line on, squeezed to one paragraph."""
    lines = output.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.lstrip().startswith(("error:", "Error:", "\u00d7"))), None
    )
    tail = lines[start:] if start is not None else lines[-8:]
    return " ".join(" ".join(tail).split())[:1200]


def cutoff_of(uploaded: datetime, grace_days: int) -> datetime:
    """The newest upload time a ``release`` env may install: the release's upload plus the grace period,
    in UTC, to the second (uv reads RFC 3339)."""
    return (uploaded + timedelta(days=grace_days)).astimezone(UTC).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EnvCache:
    def __init__(
        self,
        root: Path | None = None,
        resolution: str = DEFAULT_RESOLUTION,
        grace_days: int = DEFAULT_GRACE_DAYS,
    ) -> None:
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution {resolution!r}; known: {', '.join(RESOLUTIONS)}")
        if grace_days < 0:
            raise ValueError(f"the grace period must be 0 days or more, not {grace_days}")
        self.root = root or cache_root() / "envs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.resolution = resolution
        self.grace_days = grace_days
        self.install_timeout_s: float = INSTALL_TIMEOUT_S

    def mode(self, spec: Spec) -> str:
        """How ``spec``'s env resolves: this cache's mode for a release, ``latest`` for local wheels."""
        return self.resolution if spec.kind is SpecKind.RELEASE else "latest"

    def cutoff(self, spec: Spec) -> datetime | None:
        """The ``--exclude-newer`` of ``spec``'s env (None: resolved as of today). Raises EnvError when the
        release's upload time cannot be read from the index (no silent fallback to ``latest``)."""
        if self.mode(spec) != "release":
            return None
        assert spec.version is not None
        try:
            uploaded = release_time(spec.version)
        except IndexError_ as exc:
            raise EnvError(f"cannot resolve MLflow {spec.label} as of its release: {exc}") from exc
        return cutoff_of(uploaded, self.grace_days)

    def plan(self, spec: Spec, packages: tuple[str, ...] = ()) -> tuple[str, pythons.Interpreter, list[str]]:
        """The key, interpreter and requirements an env for ``spec`` would be built with; ``packages`` are
        requirements beside mlflow (sorted and deduplicated: the same set is the same env)."""
        assert spec.version is not None, "resolve `latest` first"
        mode, cutoff = self.mode(spec), self.cutoff(spec)
        cap = spec.version.python_max()
        if cutoff is not None and (then := pythons.newest_minor_at(cutoff)) is not None:
            cap = then if cap is None else min(cap, then)
        # A Python of the release's time when one is installed; else the pick a `latest` env would get.
        interp = pythons.pick(requires_python(spec), cap) or pythons.pick(
            requires_python(spec), spec.version.python_max()
        )
        if interp is None:
            raise EnvError(
                f"no installed Python fits MLflow {spec.label} "
                f"(requires {requires_python(spec) or 'any'}, at most {spec.version.python_max()})"
            )
        reqs = [*spec.requirements(), *spec.version.install_requirements(mode), *sorted(set(packages))]
        fields: dict[str, object] = {
            "format": FORMAT,
            "spec": spec.identity(),
            "python": str(interp.version),
            "python_path": str(interp.path),
            "reqs": reqs,
        }
        if cutoff is not None:  # a `latest` env keeps the key it had before resolution modes existed
            fields |= {"resolution": mode, "exclude_newer": iso(cutoff)}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        tag = "" if cutoff is None else f"-rel{cutoff:%Y%m%d}"
        key = f"mlflow-{spec.label.replace('@', '-')}-py{interp.minor}{tag}-{digest}"
        return key, interp, reqs

    def ensure(self, spec: Spec, log: Path, packages: tuple[str, ...] = ()) -> Env:
        """Return the env for ``spec`` (with ``packages`` beside mlflow), building it first when the cache
        does not have it."""
        key, interp, reqs = self.plan(spec, packages)
        cutoff = self.cutoff(spec)
        path = self.root / key
        with FileLock(str(path) + ".lock", timeout=INSTALL_TIMEOUT_S * 2):
            manifest = path / MANIFEST
            if manifest.exists():
                return Env(**{**_load(manifest), "path": path, "reused": True})
            if path.exists():
                shutil.rmtree(path)  # an earlier build died half-way
            started = time.monotonic()
            try:
                self._build(path, spec, interp, reqs, log, cutoff)
                facts = self._probe(path, log, _names(packages))
            except EnvError:
                shutil.rmtree(path, ignore_errors=True)
                raise
            if facts["mlflow"] is None:
                raise EnvError(f"{spec.label}: installed, but no mlflow distribution in the env")
            env = Env(
                path=path,
                spec_label=spec.label,
                version=MlflowVersion.parse(facts["mlflow"]),
                python=facts["python"],
                sqlalchemy=facts["sqlalchemy"],
                schema_head=facts["schema_head"],
                requirements=tuple(reqs),
                build_seconds=round(time.monotonic() - started, 2),
                packages=tuple(sorted(facts.get("packages", {}).items())),
                resolution=self.mode(spec),
                exclude_newer=None if cutoff is None else iso(cutoff),
            )
            manifest.write_text(json.dumps(env.to_manifest(), indent=2))
            return env

    def _build(
        self,
        path: Path,
        spec: Spec,
        interp: pythons.Interpreter,
        reqs: list[str],
        log: Path,
        cutoff: datetime | None,
    ) -> None:
        uv_bin = uv.find_uv_bin()
        # The seed packages (pip, setuptools, wheel) too are as of the cutoff: today's setuptools has no
        # pkg_resources, which old versions import.
        as_of = [] if cutoff is None else ["--exclude-newer", iso(cutoff)]
        _run([uv_bin, "venv", "--quiet", "--seed", *as_of, "--python", str(interp.path), str(path)], log, 120)
        cmd = [
            uv_bin,
            "pip",
            "install",
            *as_of,
            "--python",
            str(path / "bin" / "python"),
            *reqs,
        ]
        for links in spec.find_links():
            cmd += ["--find-links", str(links)]
        _run(cmd, log, self.install_timeout_s)

    def _probe(self, path: Path, log: Path, packages: tuple[str, ...] = ()) -> dict:
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        python = str(path / "bin" / "python")
        helper = subprocess.Popen(
            [python, "-c", f"WARM = {_WARM_DEPENDENCIES!r}\n{_WARM_ONLY}"],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            script = f"WARM = {_WARM!r}\nPACKAGES = {packages!r}\n{_PROBE}"
            proc = subprocess.run([python, "-c", script], env=environ, capture_output=True, text=True,
                                  timeout=120, check=False)  # fmt: skip
        finally:
            try:
                helper.wait(timeout=120)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        with log.open("a") as fh:
            fh.write(f"probe: {proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise EnvError(f"the new env does not work: {proc.stderr.strip().splitlines()[-1:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])  # the last line: imports may print


def _names(packages: tuple[str, ...]) -> tuple[str, ...]:
    """The distribution names of requirements (``scikit-learn>=1.0`` -> ``scikit-learn``), for the probe."""
    return tuple(sorted({Requirement(p).name for p in packages}))


def _load(manifest: Path) -> dict:
    data = json.loads(manifest.read_text())
    data["version"] = MlflowVersion.parse(data["version"])
    data["requirements"] = tuple(data["requirements"])
    data["packages"] = tuple(tuple(p) for p in data.get("packages", ()))  # manifests before packages: none
    return data
