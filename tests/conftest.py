from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def require_docker() -> None:
    """A Docker test's first step: under CI a missing engine fails the test; elsewhere it skips."""
    from harness import images

    if not images.engine_available():
        if os.environ.get("CI"):
            pytest.fail("CI must run the Docker tests, but no Docker engine answers")
        pytest.skip("no Docker engine answers on this machine")


def chromium() -> str:
    """Debian's Chromium for the browser tests: under CI a missing one fails the test; elsewhere it skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test, but Chromium is not installed (apt install chromium)")
        pytest.skip("Chromium is not installed")
    return found


def run_cli(
    *args: str, timeout: float = 1800, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in a child process, as a user runs it (``env``: variables to set)."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
        env={**os.environ, **(env or {})},
    )


def make_wheel(
    directory: Path, name: str, version: str, requires: list[str], requires_python: str = ">=3.8"
) -> Path:
    """A real, installable-looking wheel whose dependencies the resolver may or may not find."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    meta = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Requires-Python: {requires_python}",
    ]
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", "\n".join(meta) + "\n")
        zf.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture
def unresolvable_wheel(tmp_path: Path) -> Path:
    """An mlflow wheel that depends on a package no index has: its install must fail in the resolver."""
    return make_wheel(tmp_path, "mlflow", "0.0.1", ["mlflow-compat-no-such-package-anywhere==1.0"])


class LazyDatabases(dict):
    """The tests' database servers: started on first use (per xdist worker), closed at the end."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def get_server(self, backend: str):
        from harness.databases import start_local

        if backend not in self:
            self[backend] = start_local(backend, self.root)
        return self[backend]


@pytest.fixture(scope="session")
def databases():
    # Not under pytest's tmp_path: that is private to root, and PostgreSQL runs as `postgres` under root.
    root = Path(tempfile.mkdtemp(prefix="mlflow-compat-tests-"))
    root.chmod(0o755)
    servers = LazyDatabases(root)
    yield servers
    for server in servers.values():
        server.close()
    shutil.rmtree(root, ignore_errors=True)
