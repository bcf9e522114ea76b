"""Python interpreters installed on this machine, and the one a given MLflow version should run on.

pyenv's shims for versions it has not selected fail when run, so interpreters are found by path
(pyenv's versions/*/bin) as well as on PATH, and each is asked its own version before use. For envs resolved
as of an MLflow release (``--resolution release``), ``newest_minor_at`` says which Python minor was current
then (its wheels had had time to appear): a 2021 dependency set has no wheels for a 2022 Python. Which
requirements an env gets, and the cutoff itself, live in harness.envs.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PREFERRED = Version(os.environ.get("MLFLOW_COMPAT_PYTHON", "3.11"))

# First final release of each CPython minor (python.org). A minor counts as current at a date only once
# WHEEL_LAG has passed: numpy, pandas, pyarrow and scipy publish wheels for a new Python months later.
FIRST_RELEASE = {
    Version("3.7"): datetime(2018, 6, 27, tzinfo=UTC),
    Version("3.8"): datetime(2019, 10, 14, tzinfo=UTC),
    Version("3.9"): datetime(2020, 10, 5, tzinfo=UTC),
    Version("3.10"): datetime(2021, 10, 4, tzinfo=UTC),
    Version("3.11"): datetime(2022, 10, 24, tzinfo=UTC),
    Version("3.12"): datetime(2023, 10, 2, tzinfo=UTC),
    Version("3.13"): datetime(2024, 10, 7, tzinfo=UTC),
    Version("3.14"): datetime(2025, 10, 7, tzinfo=UTC),
}
WHEEL_LAG = timedelta(days=180)


@dataclass(frozen=True, order=True)
class Interpreter:
    version: Version
    path: Path

    @property
    def minor(self) -> Version:
        return Version(f"{self.version.major}.{self.version.minor}")


def _pyenv_root() -> Path | None:
    if root := os.environ.get("PYENV_ROOT"):
        return Path(root)
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def _candidates() -> list[Path]:
    paths: list[Path] = []
    if (root := _pyenv_root()) is not None:
        paths += sorted((root / "versions").glob("*/bin/python3"))
    for minor in range(8, 16):
        if found := shutil.which(f"python3.{minor}"):
            paths.append(Path(found))
    for name in ("python3", "/usr/bin/python3"):
        if found := shutil.which(name):
            paths.append(Path(found))
    return paths


def _ask(path: Path) -> Interpreter | None:
    """Run the interpreter and ask for its version and real executable (shims resolve to it)."""
    try:
        proc = subprocess.run(
            [str(path), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        return None
    return Interpreter(Version(lines[0]), Path(lines[1]))


@functools.cache
def installed() -> tuple[Interpreter, ...]:
    """Every working CPython 3 found, one per minor version (the newest patch), oldest first."""
    best: dict[Version, Interpreter] = {}
    for path in _candidates():
        interp = _ask(path)
        if interp is None or interp.version.major != 3:
            continue
        if interp.minor not in best or best[interp.minor].version < interp.version:
            best[interp.minor] = interp
    return tuple(sorted(best.values()))


def newest_minor_at(when: datetime) -> Version | None:
    """The newest Python minor that had been out for WHEEL_LAG at ``when`` (None: none had)."""
    current = [minor for minor, first in FIRST_RELEASE.items() if first + WHEEL_LAG <= when]
    return max(current) if current else None


def pick(
    requires_python: SpecifierSet,
    python_max: Version | None = None,
    available: tuple[Interpreter, ...] | None = None,
) -> Interpreter | None:
    """The interpreter to use: the preferred minor when allowed, else the newest allowed below it,
    else the oldest allowed above it. None when nothing installed fits."""
    pool = [
        i
        for i in (installed() if available is None else available)
        if requires_python.contains(i.version, prereleases=True)
        and (python_max is None or i.minor <= python_max)
    ]
    if not pool:
        return None
    at_or_below = [i for i in pool if i.minor <= PREFERRED]
    return max(at_or_below) if at_or_below else min(pool)
