"""Version facts as data: one object answers every question the harness asks about an MLflow version.

Like kafkatest's version objects, callers ask capability questions (``v.supports("serve_artifacts")``,
``v.install_requirements()``) and never compare version numbers inline. The answers come from
``harness/data/versions.toml``, the only place where MLflow version facts are written down.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# How an env's dependencies are resolved: as of the release's upload on the index, or the newest today.
RESOLUTIONS = ("release", "latest")
# What a run uses unless told (--resolution; harness.envs builds it): chosen from the measurement
# (harness.installability), the reason shown in the option's help.
RUN_RESOLUTION = "release"
RUN_RESOLUTION_WHY = (
    "measured (nox -s installability), the newest patch of every minor from 1.20 to 3.17 installs and "
    "imports when resolved as of its release, with fewer recipes, and a dependency released later cannot "
    "break an old version's env; `latest` is what `pip install mlflow==X` gets today"
)
# Days after a release's upload that still count as "its" dependencies (a fix released the next week).
DEFAULT_GRACE_DAYS = 7


@functools.cache
def _facts() -> dict[str, Any]:
    text = resources.files("harness").joinpath("data/versions.toml").read_text()
    return tomllib.loads(text)


def _matches(specifier: str, version: Version) -> bool:
    return SpecifierSet(specifier).contains(version, prereleases=True)


def capability_names() -> list[str]:
    return sorted(_facts()["capabilities"])


@dataclass(frozen=True, order=True)
class MlflowVersion:
    """An MLflow release (or a local build, identified by the version its wheel declares)."""

    release: Version

    @classmethod
    def parse(cls, text: str) -> MlflowVersion:
        try:
            return cls(Version(text))
        except InvalidVersion as exc:
            raise ValueError(f"not a version: {text!r}") from exc

    def __str__(self) -> str:
        return str(self.release)

    # -- capability questions ---------------------------------------------------------------
    def supports(self, capability: str) -> bool:
        try:
            fact = _facts()["capabilities"][capability]
        except KeyError:
            raise KeyError(f"unknown capability {capability!r}; known: {capability_names()}") from None
        base = Version(self.release.base_version)
        if base < Version(fact["since"]):
            return False
        return "until" not in fact or base < Version(fact["until"])

    def lacks(self, capabilities: tuple[str, ...]) -> str | None:
        """Why this version cannot do something that needs ``capabilities`` (None when it can)."""
        missing = [c for c in capabilities if not self.supports(c)]
        if not missing:
            return None
        facts = _facts()["capabilities"]
        return "; ".join(f"MLflow {self} has no {c} (since {facts[c]['since']})" for c in missing)

    def supports_serve_artifacts(self) -> bool:
        return self.supports("serve_artifacts")

    def needs_file_store_opt_in(self) -> bool:
        return self.supports("file_store_needs_opt_in")

    def can_upgrade_empty_db(self) -> bool:
        return self.supports("db_upgrade_on_empty_db")

    # -- installation -----------------------------------------------------------------------
    def install_requirements(self, resolution: str = "latest") -> list[str]:
        """Requirements installed beside mlflow itself (recipes), in a stable order. ``resolution`` is how
        the env is resolved (``latest``, or ``release``: as of the release's upload); a recipe with ``modes``
        applies only under those (one that release-date resolution makes unnecessary says ``["latest"]``)."""
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution {resolution!r}; known: {', '.join(RESOLUTIONS)}")
        reqs: list[str] = []
        for recipe in _facts()["recipe"]:
            if resolution not in recipe.get("modes", RESOLUTIONS):
                continue
            if _matches(recipe["versions"], self.release):
                reqs.extend(r for r in recipe["requirements"] if r not in reqs)
        return reqs

    def python_max(self) -> Version | None:
        """The newest Python minor this version really installs on, where narrower than requires-python."""
        caps = [Version(p["python_max"]) for p in _facts()["python"] if _matches(p["versions"], self.release)]
        return min(caps) if caps else None

    def broken_reason(self) -> str | None:
        """Why a release on the index must not be picked (yanked, unresolvable), or None."""
        entry = _facts()["broken"].get(str(self.release))
        return entry["reason"] if entry else None
