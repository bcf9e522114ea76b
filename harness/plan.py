"""The matrix: which cells a run has. The default matrix is data (harness/data/matrix.toml).

A cell is a backend store x an upgrade path x its client versions, and the features its servers run with:
the basic-auth app (`auth`) and where artifacts go (`artifact_store`: the store's local directory, or an
S3 bucket). Scenarios that exist for a feature (a scenario's ``NEEDS``) are part of a cell only when the
cell has that feature. What does not live here: how a feature is set up for a server (harness/cell.py and
the runtimes), the options that choose them (harness/options.py).
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from harness.backends import BACKENDS
from harness.results import features_of
from harness.scenarios import builtin, default_names, fitting
from harness.specs import Spec, parse_path, parse_spec
from harness.versions import MlflowVersion

if TYPE_CHECKING:
    from harness.index import Release


@functools.cache
def _matrix_data() -> dict[str, Any]:
    return tomllib.loads(resources.files("harness").joinpath("data/matrix.toml").read_text())


def default_matrix(profile: str = "smoke") -> dict[str, Any]:
    return _matrix_data()["profile"][profile]


def profiles() -> list[str]:
    return list(_matrix_data()["profile"])


def oldest_supported() -> str:
    """The oldest MLflow a gate upgrades a candidate from (besides the baseline)."""
    return str(_matrix_data()["gate"]["oldest"])


DISCOVERY = ("newest-patch-per-minor", "every-patch")
ARTIFACT_STORES = ("local", "s3")  # where a cell's servers keep artifacts
AUTH_CAPABILITY = "auth_app"  # every server of an auth cell needs it (harness/data/versions.toml)


def auth_lacking(path: tuple[Spec, ...]) -> str | None:
    """Why a path's servers cannot all run the auth app (None when they can)."""
    for spec in path:
        if spec.version is not None and (why := spec.version.lacks((AUTH_CAPABILITY,))):
            return why
    return None


def backend_lacking(backend: str, path: tuple[Spec, ...]) -> str | None:
    """Why ``path`` cannot run on ``backend`` (None when it can): e.g. a file store migrated into SQLite by a
    TO version without `mlflow migrate-filestore`."""
    return BACKENDS[backend].path_lacks(tuple(s.version for s in path))


def left_out(backends: list[str], paths: list[tuple[Spec, ...]], auth: tuple[bool, ...]) -> dict[str, str]:
    """The cells `plan_cells` leaves out, and why: {"backend:path" or "path [auth]": reason}."""
    out: dict[str, str] = {}
    for p in paths:
        label = "->".join(s.label for s in p)
        if True in auth and (why := auth_lacking(p)):
            out[f"{label} [auth]"] = why
        for b in backends:
            if why := backend_lacking(b, p):
                out[f"{b}:{label}"] = why
    return out


def discover(kind: str, since: str, releases: list[Release]) -> tuple[list[MlflowVersion], list[str]]:
    """FROM versions for a discovered profile, and why the releases left out were left out."""
    kept: list[MlflowVersion] = []
    excluded: list[str] = []
    for release in releases:
        if release.version.release < Version(since) or release.version.release.is_prerelease:
            continue  # pre-releases are never candidates for a nightly; not worth listing either
        if why := release.excluded_reason:
            excluded.append(f"{release.version}: {why}")
        else:
            kept.append(release.version)
    if kind == "every-patch":
        return sorted(kept), excluded
    newest: dict[tuple[int, int], MlflowVersion] = {}
    first: dict[int, MlflowVersion] = {}
    for v in kept:
        major, minor = v.release.major, v.release.minor
        newest[(major, minor)] = max(v, newest.get((major, minor), v))
        if minor == 0:  # a major's first release (X.0.0, or the first X.0.* that is not excluded)
            first[major] = min(v, first.get(major, v))
    return sorted(set(newest.values()) | set(first.values())), excluded


@dataclass(frozen=True)
class CellPlan:
    """One cell: a backend store upgraded through ``path`` (FROM, ..., TO), exercised by ``clients``."""

    backend: str
    path: tuple[Spec, ...]
    clients: tuple[Spec, ...]
    runtime: str = "local"
    # Built-in scenarios, by name; by default those of the default selection a cell without features has.
    scenarios: tuple[str, ...] = field(default_factory=lambda: fitting(default_names(), frozenset()))
    scripts: tuple[str, ...] = ()  # users' own scripts (--scenario PATH), absolute paths
    # The gate's differential pass: every client against FROM's server and TO's, fresh stores, compared.
    differential: bool = False
    auth: bool = False  # every server runs the basic-auth app, with its own auth database
    artifact_store: str = "local"  # one of ARTIFACT_STORES
    # Metric points seeded into the FROM store before the first upgrade (0: none), with the rest of a
    # realistic volume (harness/scale.py); the upgrade is then measured per revision.
    scale: int = 0
    rolling: bool = False  # the FROM server keeps serving a workload through the first upgrade
    seed: int | None = None  # the seed of the random plan this cell was drawn from (harness/randomplan.py)

    def __post_init__(self) -> None:
        known = builtin()
        for name in self.scenarios:
            if missing := set(known[name].needs) - self.features:
                raise ValueError(f"scenario {name} needs a cell with {', '.join(sorted(missing))}")

    @property
    def features(self) -> frozenset[str]:
        """The cell's features, as scenarios name them in NEEDS."""
        return features_of(self.auth, self.artifact_store)

    @property
    def id(self) -> str:
        cid = f"{self.backend}:{'->'.join(s.label for s in self.path)}"
        default = (self.path[0], self.path[-1])
        if tuple(s.label for s in self.clients) != tuple(s.label for s in default):
            cid += f"[clients={','.join(s.label for s in self.clients)}]"
        if self.artifact_store != "local":
            cid += f"[artifacts={self.artifact_store}]"
        if self.auth:
            cid += "[auth]"
        if self.scale:
            cid += f"[scale={scale_label(self.scale)}]"
        if self.rolling:
            cid += "[rolling]"
        if self.seed is not None:
            cid += f"[seed={self.seed}]"
        return cid

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id.replace("->", "_to_")).strip("_")

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "runtime": self.runtime,
            "path": [s.raw for s in self.path],
            "resolved_path": [s.label for s in self.path],
            "clients": [s.raw for s in self.clients],
            "versions": {s.raw: str(s.version) for s in (*self.path, *self.clients)},
            "scenarios": list(self.scenarios),
            "scripts": list(self.scripts),
            "differential": self.differential,
            "auth": self.auth,
            "artifact_store": self.artifact_store,
            "scale": self.scale,
            "rolling": self.rolling,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellPlan:
        versions = data["versions"]

        def spec(raw: str) -> Spec:
            parsed = parse_spec(raw)
            if parsed.version is None:  # `latest`, pinned to what the controller resolved
                parsed = parsed.resolved(MlflowVersion.parse(versions[raw]))
            return parsed

        return cls(
            backend=data["backend"],
            runtime=data["runtime"],
            path=tuple(spec(r) for r in data["path"]),
            clients=tuple(spec(r) for r in data["clients"]),
            scenarios=tuple(data["scenarios"]),
            scripts=tuple(data["scripts"]),
            differential=bool(data.get("differential", False)),
            auth=bool(data.get("auth", False)),
            artifact_store=data.get("artifact_store", "local"),
            scale=int(data.get("scale", 0)),
            rolling=bool(data.get("rolling", False)),
            seed=data.get("seed"),
        )


def scale_label(points: int) -> str:
    """How ids and reports write a seeded size: 1000000 -> "1m", 20000 -> "20k", 1500 -> "1500"."""
    for suffix, unit in (("m", 1_000_000), ("k", 1_000)):
        if points % unit == 0:
            return f"{points // unit}{suffix}"
    return str(points)


def default_clients(path: tuple[Spec, ...]) -> tuple[Spec, ...]:
    """By default a cell's clients are its path's two ends: the old client and the new one."""
    return (path[0], path[-1]) if path[0].label != path[-1].label else (path[0],)


def plan_cells(
    backends: list[str],
    paths: list[tuple[Spec, ...]],
    clients: tuple[Spec, ...] | None,
    runtime: str,
    scenarios: tuple[str, ...] | None = None,
    scripts: tuple[str, ...] = (),
    differential_from: str | None = None,
    auth: tuple[bool, ...] = (False,),
    artifact_stores: tuple[str, ...] = ("local",),
    scale: int = 0,
    rolling: bool = False,
) -> list[CellPlan]:
    """One cell per path, backend, auth variant and artifact store; ``differential_from`` (the gate's
    baseline) adds the differential pass to the cells whose path starts at that version. An auth cell whose
    path has a server without the auth app, and a cell its backend cannot run the path on, is not planned
    (`left_out` says which and why). Each cell gets the chosen scenarios its features allow (their NEEDS)."""
    chosen = default_names() if scenarios is None else scenarios
    cells = []
    for p in paths:
        for b in backends:
            if backend_lacking(b, p):
                continue
            for with_auth in auth:
                if with_auth and auth_lacking(p):
                    continue
                for artifacts in artifact_stores:
                    cell = CellPlan(
                        backend=b,
                        path=p,
                        clients=clients or default_clients(p),
                        runtime=runtime,
                        scenarios=fitting(chosen, features_of(with_auth, artifacts)),
                        scripts=scripts,
                        differential=differential_from is not None and p[0].raw == differential_from,
                        auth=with_auth,
                        artifact_store=artifacts,
                        scale=scale if BACKENDS[b].has_server or b == "sqlite" else 0,
                        rolling=rolling and BACKENDS[b].has_server,
                    )
                    cells.append(cell)
    seen: set[str] = set()
    unique = []
    for cell in cells:
        if cell.id not in seen:
            seen.add(cell.id)
            unique.append(cell)
    return unique


def default_paths(profile: str = "smoke") -> list[tuple[Spec, ...]]:
    """A profile's fixed paths (a discovered profile adds the index's versions to these when resolved)."""
    return [parse_path(p) for p in default_matrix(profile)["paths"]]


def dump_plan(cells: list[CellPlan]) -> str:
    return json.dumps({"cells": [c.to_json() for c in cells]}, indent=2)
