"""What a user may name as an MLflow to test: a release, ``latest``, a wheel, or a directory of wheels.

Parsing is pure and happens before anything starts, so bad input ends with one line and exit code 2.
``latest`` is resolved against the index by :mod:`harness.index`.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from harness.versions import MlflowVersion

# MLflow's wheels for one build: the server/client package and, from 2.x/3.x on, its slimmer siblings.
MLFLOW_DISTRIBUTIONS = ("mlflow", "mlflow-skinny", "mlflow-tracing")
_RELEASE = re.compile(r"^\d+(\.\d+){1,2}((a|b|rc)\d+)?(\.post\d+)?$")


class SpecError(ValueError):
    """A spec the user wrote that cannot name an MLflow to install (bad input: exit code 2)."""


class SpecKind(StrEnum):
    RELEASE = "release"
    LATEST = "latest"
    WHEEL = "wheel"
    WHEEL_DIR = "wheel-dir"


@dataclass(frozen=True)
class Spec:
    """One MLflow to install. ``version`` is None only for an unresolved ``latest``."""

    raw: str
    kind: SpecKind
    version: MlflowVersion | None
    wheels: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """Short name used in cell ids and reports: the version, marked when it is a local build."""
        if self.version is None:
            return self.raw
        return str(self.version) if self.kind is SpecKind.RELEASE else f"{self.version}@{self.kind.value}"

    def requirements(self) -> list[str]:
        """What `uv pip install` gets for MLflow itself (recipes come from the version's facts)."""
        if self.kind is SpecKind.RELEASE:
            return [f"mlflow=={self.version}"]
        if self.kind is SpecKind.LATEST:
            raise SpecError("`latest` must be resolved before installing")
        return [str(w) for w in self.wheels]

    def find_links(self) -> list[Path]:
        """Directories searched for the build's own dependencies (its sibling wheels)."""
        return sorted({w.parent for w in self.wheels})

    def identity(self) -> str:
        """Stable identity for cache keys: the version, or the wheels' content hashes."""
        if self.kind in (SpecKind.RELEASE, SpecKind.LATEST):
            return f"{self.kind.value}:{self.version or self.raw}"
        digests = sorted(f"{w.name}:{_sha256(w)}" for w in self.wheels)
        return f"{self.kind.value}:" + ",".join(digests)

    def resolved(self, version: MlflowVersion) -> Spec:
        return Spec(raw=self.raw, kind=SpecKind.RELEASE, version=version)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _wheel_version(path: Path) -> tuple[str, MlflowVersion]:
    try:
        name, version, _build, _tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise SpecError(f"{path}: not a wheel file name ({exc})") from None
    return str(name), MlflowVersion(version)


def parse_spec(text: str) -> Spec:
    """Parse one spec; raises SpecError with a one-line reason."""
    raw = text.strip()
    if not raw:
        raise SpecError("empty MLflow spec")
    if raw == "latest":
        return Spec(raw=raw, kind=SpecKind.LATEST, version=None)
    looks_like_path = "/" in raw or raw.endswith(".whl") or raw.startswith(".")
    if not looks_like_path:
        if not _RELEASE.match(raw):
            raise SpecError(f"{raw!r} is not an MLflow version (like 2.22.5), `latest`, or a path to wheels")
        return Spec(raw=raw, kind=SpecKind.RELEASE, version=MlflowVersion.parse(raw))
    path = Path(raw).expanduser().resolve()
    if path.is_file():
        name, version = _wheel_version(path)
        if name != "mlflow":
            raise SpecError(f"{path}: a wheel of {name!r}, not of mlflow")
        return Spec(raw=raw, kind=SpecKind.WHEEL, version=version, wheels=(path,))
    if path.is_dir():
        wheels = sorted(path.glob("*.whl"))
        ours = [(w, *_wheel_version(w)) for w in wheels]
        ours = [(w, n, v) for w, n, v in ours if n in MLFLOW_DISTRIBUTIONS]
        mlflow = [(w, v) for w, n, v in ours if n == "mlflow"]
        if len(mlflow) != 1:
            found = ", ".join(w.name for w in wheels) or "no wheels"
            raise SpecError(f"{path}: needs exactly one mlflow wheel, found {found}")
        return Spec(
            raw=raw, kind=SpecKind.WHEEL_DIR, version=mlflow[0][1], wheels=tuple(w for w, _, _ in ours)
        )
    raise SpecError(f"{raw}: no such wheel or directory")


def parse_path(text: str) -> tuple[Spec, ...]:
    """``FROM:TO`` or a multi-hop ``A:B:C``: the versions a store is upgraded through, in order."""
    parts = text.split(":")
    if len(parts) < 2 or any(not p.strip() for p in parts):
        raise SpecError(f"{text!r} is not an upgrade path: write FROM:TO, e.g. 1.30.1:2.22.5")
    specs = tuple(parse_spec(p) for p in parts)
    for a, b in itertools.pairwise(specs):
        if a.version is not None and b.version is not None and b.version < a.version:
            raise SpecError(f"{text!r} goes from {a.label} down to {b.label}: MLflow has no schema downgrade")
    return specs
