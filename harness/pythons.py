"""Python interpreters installed on this machine, and the one a given MLflow version should run on.

pyenv's shims for versions it has not selected fail when run, so interpreters are found by path
(pyenv's versions/*/bin) as well as on PATH, and each is asked its own version before use.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PREFERRED = Version(os.environ.get("MLFLOW_COMPAT_PYTHON", "3.11"))


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
