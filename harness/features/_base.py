"""What a cell feature is: something beside the tracking store that every server of a cell runs with (the
basic-auth app and its database, an S3 artifact store), that clients may need settings for, and that an
operator backs up and restores together with the store.

A feature is opened per cell (harness/features/__init__.py: `open_features`) and closed when the cell ends
(its databases dropped, its bucket removed). For each server start the runtime asks it for a `ServerSetup`
(arguments and environment for `mlflow server`, files it wrote under the store's workdir), given a
`ServerView`: how that server sees the machine (a local process sees it as it is; a container sees the
store's workdir at its bind mount and reaches the run's services by name). What does not live here: the
features themselves (one module each in this package), where servers run (harness/runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.results import Check
from harness.versions import MlflowVersion


@dataclass(frozen=True)
class ServerView:
    """How one server start sees the cell. ``workdir``: the store's workdir as the server sees it (a path
    written under ``Store.workdir`` on this machine is at the same relative path under it). ``reach(service,
    url)``: a URL of a run-level service on this machine (service: a database backend's name, or "s3") as
    the server reaches it (unchanged for a local process)."""

    workdir: Path
    reach: Callable[[str, str], str]
    container: bool = False


def local_view(workdir: Path) -> ServerView:
    """A local server process: it sees the machine as it is."""
    return ServerView(workdir=workdir, reach=lambda service, url: url)


@dataclass
class ServerSetup:
    """What a feature adds to one `mlflow server` start. ``artifacts``: where the server keeps artifacts,
    replacing the store's local directory (``artifact_mode`` then says how, for the report);
    ``server_app``: the `--app-name` (one feature at most sets it)."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    artifacts: str | None = None
    artifact_mode: str | None = None
    server_app: str | None = None


class Feature(Protocol):
    """One feature of one cell (see the module docstring)."""

    name: str  # as scenarios name it in NEEDS ("auth", "s3")

    def server(self, version: MlflowVersion, view: ServerView) -> ServerSetup:
        """What a server of ``version`` needs to run with this feature, seen through ``view``."""
        ...

    def client_env(self, version: MlflowVersion) -> dict[str, str]:
        """Environment every client process of ``version`` gets (credentials, endpoints)."""
        ...

    def on_started(self, phase: str, version: MlflowVersion) -> list[Check]:
        """Called right after each server of the cell started (``phase``: its phase): checks about what the
        start did to this feature's state (e.g. an auth database migrated on start: every row kept), to be
        recorded in the cell; [] when there is nothing to say."""
        ...

    def backup(self, dest: Path) -> None:
        """Copy this feature's state into ``dest`` (a fresh directory beside the store's backup)."""
        ...

    def restore(self, src: Path) -> None:
        """Put back what `backup` copied into ``src``."""
        ...

    def describe(self) -> dict[str, str]:
        """What the report says about it (product, version, where)."""
        ...

    def close(self) -> None:
        """Remove what it made for the cell (a database, a bucket). Raises StoreError when it cannot."""
        ...


def combine(setups: list[ServerSetup]) -> ServerSetup:
    """The features' setups for one start, as one: arguments and environment joined; at most one feature
    may say where artifacts go and at most one which app runs (two would be a harness bug)."""
    out = ServerSetup()
    for s in setups:
        out.args += s.args
        out.env.update(s.env)
        for attr in ("artifacts", "artifact_mode", "server_app"):
            if getattr(s, attr) is not None:
                if getattr(out, attr) is not None:
                    raise ValueError(f"two features set {attr}")
                setattr(out, attr, getattr(s, attr))
    return out
