"""One virtualenv per (MLflow spec, Python), built with uv and reused across cells and runs.

The cache key hashes everything that goes into an env (spec identity, interpreter, requirements,
this module's format), so a changed recipe builds a new env instead of reusing a stale one. Scenarios may
ask for packages beside mlflow (their ``PACKAGES``, e.g. scikit-learn): those are resolved by uv together
with mlflow's own pins, so each version gets the newest release compatible with it, and they are part of the
requirements and so of the key; an env without packages keeps the key it always had. Builds
take a file lock per key: parallel workers asking for the same env wait for one build. An env is
complete only once its manifest is written; a half-built directory is removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import uv
from filelock import FileLock
from packaging.requirements import Requirement

from harness import pythons
from harness.index import requires_python
from harness.paths import cache_root
from harness.specs import Spec
from harness.versions import MlflowVersion

FORMAT = 1  # bump when the layout or the manifest changes
MANIFEST = "mlflow-compat-env.json"
INSTALL_TIMEOUT_S = 900

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
        }

    def components(self) -> dict[str, str | None]:
        return {
            "mlflow": str(self.version),
            "python": self.python,
            "sqlalchemy": self.sqlalchemy,
            "schema_head": self.schema_head,
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


class EnvCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_root() / "envs"
        self.root.mkdir(parents=True, exist_ok=True)

    def plan(self, spec: Spec, packages: tuple[str, ...] = ()) -> tuple[str, pythons.Interpreter, list[str]]:
        """The key, interpreter and requirements an env for ``spec`` would be built with; ``packages`` are
        requirements beside mlflow (sorted and deduplicated: the same set is the same env)."""
        assert spec.version is not None, "resolve `latest` first"
        interp = pythons.pick(requires_python(spec), spec.version.python_max())
        if interp is None:
            raise EnvError(
                f"no installed Python fits MLflow {spec.label} "
                f"(requires {requires_python(spec) or 'any'}, at most {spec.version.python_max()})"
            )
        reqs = [*spec.requirements(), *spec.version.install_requirements(), *sorted(set(packages))]
        material = json.dumps(
            {
                "format": FORMAT,
                "spec": spec.identity(),
                "python": str(interp.version),
                "python_path": str(interp.path),
                "reqs": reqs,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(material.encode()).hexdigest()[:12]
        key = f"mlflow-{spec.label.replace('@', '-')}-py{interp.minor}-{digest}"
        return key, interp, reqs

    def ensure(self, spec: Spec, log: Path, packages: tuple[str, ...] = ()) -> Env:
        """Return the env for ``spec`` (with ``packages`` beside mlflow), building it first when the cache
        does not have it."""
        key, interp, reqs = self.plan(spec, packages)
        path = self.root / key
        with FileLock(str(path) + ".lock", timeout=INSTALL_TIMEOUT_S * 2):
            manifest = path / MANIFEST
            if manifest.exists():
                return Env(**{**_load(manifest), "path": path, "reused": True})
            if path.exists():
                shutil.rmtree(path)  # an earlier build died half-way
            started = time.monotonic()
            try:
                self._build(path, spec, interp, reqs, log)
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
            )
            manifest.write_text(json.dumps(env.to_manifest(), indent=2))
            return env

    def _build(self, path: Path, spec: Spec, interp: pythons.Interpreter, reqs: list[str], log: Path) -> None:
        uv_bin = uv.find_uv_bin()
        _run([uv_bin, "venv", "--quiet", "--seed", "--python", str(interp.path), str(path)], log, 120)
        cmd = [
            uv_bin,
            "pip",
            "install",
            "--python",
            str(path / "bin" / "python"),
            *reqs,
        ]
        for links in spec.find_links():
            cmd += ["--find-links", str(links)]
        _run(cmd, log, INSTALL_TIMEOUT_S)

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
