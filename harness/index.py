"""The package index: which MLflow releases exist, when each was uploaded, and which one `latest` means today.

Release lists are cached for a day under the cache root, so a matrix run asks the index once. A release's
upload time (its earliest file's) is what `--resolution release` resolves its env as of (harness.envs).
Installing lives in harness.envs; version facts (recipes, broken releases) in harness.versions.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.parser import HeaderParser
from pathlib import Path

import uv
from filelock import FileLock
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.paths import cache_root
from harness.specs import Spec, SpecKind
from harness.versions import MlflowVersion

PYPI_JSON = "https://pypi.org/pypi/{package}/json"
CACHE_TTL_S = 24 * 3600


class IndexError_(RuntimeError):
    """The index could not be read (infrastructure, not bad input)."""


@dataclass(frozen=True)
class Release:
    version: MlflowVersion
    yanked: bool
    requires_python: SpecifierSet
    # When the release's first file reached the index (UTC); None when the index did not say.
    uploaded: datetime | None = None

    @property
    def excluded_reason(self) -> str | None:
        if self.yanked:
            return "yanked on the index"
        if self.version.release.is_prerelease:
            return "pre-release"
        return self.version.broken_reason()


def _fetch(package: str) -> dict:
    try:
        with urllib.request.urlopen(PYPI_JSON.format(package=package), timeout=30) as resp:
            return json.load(resp)
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise IndexError_(f"cannot read the release list of {package} from the index: {exc}") from exc


def _parse(data: dict) -> list[Release]:
    out = []
    for text, files in data.get("releases", {}).items():
        if not files:
            continue
        try:
            version = MlflowVersion(Version(text))
        except InvalidVersion:
            continue
        try:
            rp = SpecifierSet(files[0].get("requires_python") or "")
        except InvalidSpecifier:
            rp = SpecifierSet()
        out.append(Release(version, all(f.get("yanked") for f in files), rp, _earliest_upload(files)))
    return sorted(out, key=lambda r: r.version)


def _earliest_upload(files: list[dict]) -> datetime | None:
    """The earliest ``upload_time_iso_8601`` of a release's files (an sdist or a wheel may come later)."""
    times = []
    for f in files:
        text = f.get("upload_time_iso_8601")
        if not text:
            continue
        try:
            times.append(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            continue
    return min(times) if times else None


def release_time(version: MlflowVersion, package: str = "mlflow") -> datetime:
    """When ``version`` of ``package`` was uploaded to the index (its earliest file). Raises IndexError_
    when the index cannot be read, does not have that release, or gives no upload time for it."""
    found = [r for r in releases(package) if r.version == version]
    if not found:
        raise IndexError_(f"{package} {version} is not on the index")
    if found[0].uploaded is None:
        raise IndexError_(f"the index gives no upload time for {package} {version}")
    return found[0].uploaded


def releases(package: str = "mlflow", *, cache: Path | None = None) -> list[Release]:
    """Every release of ``package`` on the index, oldest first (cached for a day)."""
    path = (cache or cache_root()) / f"index-{package}.json"
    with FileLock(str(path) + ".lock"):
        if path.exists() and time.time() - path.stat().st_mtime < CACHE_TTL_S:
            data = json.loads(path.read_text())
        else:
            data = _fetch(package)
            path.write_text(json.dumps({"releases": data.get("releases", {})}))
    return _parse(data)


def resolves(version: MlflowVersion, python: Path, extra: list[str]) -> str | None:
    """None when ``mlflow==version`` plus ``extra`` resolves for ``python``; else the resolver's reason."""
    reqs = "\n".join([f"mlflow=={version}", *extra])
    proc = subprocess.run(
        [uv.find_uv_bin(), "pip", "compile", "-", "-q", "--no-header", "--python", str(python)],
        input=reqs,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode == 0:
        return None
    return " ".join(proc.stderr.split())[:500]


def newest_installable(
    candidates: list[Release], python_for: Callable[[Release], Path | None]
) -> tuple[MlflowVersion, list[str]]:
    """The newest release that really resolves; also the reasons newer ones were passed over."""
    skipped: list[str] = []
    for release in reversed(candidates):
        if release.excluded_reason:
            skipped.append(f"{release.version}: {release.excluded_reason}")
            continue
        python = python_for(release)
        if python is None:
            skipped.append(f"{release.version}: no installed Python satisfies {release.requires_python}")
            continue
        reason = resolves(release.version, python, release.version.install_requirements())
        if reason is None:
            return release.version, skipped
        skipped.append(f"{release.version}: {reason}")
        if len(skipped) >= 10:
            break
    raise IndexError_("no installable MLflow release found: " + "; ".join(skipped))


def requires_python(spec: Spec) -> SpecifierSet:
    """The Python range a spec declares: from the index for a release, from the wheel's METADATA otherwise.
    An unreachable index gives no constraint (the install itself will then say what is wrong)."""
    if spec.kind in (SpecKind.RELEASE, SpecKind.LATEST):
        try:
            found = [r for r in releases() if r.version == spec.version]
        except IndexError_:
            return SpecifierSet()
        return found[0].requires_python if found else SpecifierSet()
    mlflow_wheel = next(
        w
        for w in spec.wheels
        if w.name.startswith("mlflow-") and "skinny" not in w.name and "tracing" not in w.name
    )
    with zipfile.ZipFile(mlflow_wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = HeaderParser().parsestr(zf.read(name).decode())
    return SpecifierSet(meta.get("Requires-Python") or "")
