"""The run configuration: what every pytest worker of a run needs, decided once by the controller.

`RunConfig` is frozen, written as `run.json` in the run directory next to the plan, and read once by the
pytest plugin; it is the only way settings reach the workers (no module writes `os.environ` to pass
them). It holds decided values only (a runtime, never `auto`), plus what the run's services published
when they started (`services`: the database servers' URLs, or why a backend has none; the Docker
network). Passwords never go into the run directory: run.json carries every database URL with its password
masked, and the passwords go to a private file outside the results (`secrets_dir`, made and removed by the
controller), which run.json names. Options and where their values came from live in harness.options; paths
in harness.rundir.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.versions import DEFAULT_GRACE_DAYS, RUN_RESOLUTION


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    runtime: str = "local"  # "local" or "docker": resolved, never "auto"
    client_launch: str = "fork"  # each client step forked from a per-version fork server, or spawned
    server_launch: str = "fork"  # local servers forked from a per-version server fork server, or the real CLI
    keep_stores: bool = False  # keep each cell's store directory for inspection
    # How each release's env resolves (harness.envs): "release" (as of its upload + grace days) or "latest".
    resolution: str = RUN_RESOLUTION
    resolution_grace_days: int = DEFAULT_GRACE_DAYS
    # More declaration files (absolute), merged over the shipped one in order (harness.expectations.load_all)
    expectations: tuple[str, ...] = ()
    scenario_dirs: tuple[str, ...] = ()  # a team's scenario directories (absolute): scenarios.use_dirs
    docker_network: str = "host"  # "host" or "bridge" (resolved)
    base_image: str | None = None  # base of server images (docker)
    database_images: Mapping[str, str | None] = field(default_factory=dict)  # backend -> image (docker)
    database_urls: Mapping[str, str] = field(default_factory=dict)  # backend -> a user's server (admin URL)
    # Filled once the run's services are up (harness.runtime.RunScope.published): what workers attach to.
    services: Mapping[str, Any] = field(default_factory=dict)

    def with_services(self, services: Mapping[str, Any]) -> RunConfig:
        return replace(self, services=dict(services))

    def write(self, path: Path, secrets_dir: Path) -> None:
        """run.json at ``path``, with every database URL's password masked; the URLs that had one, whole, in
        ``secrets_dir``/secrets.json (readable by its owner only), named in run.json."""
        data = json.loads(json.dumps(asdict(self), default=dict))
        whole: dict[str, str] = {}
        for where, urls in _urls(data):
            for key, url in urls.items():
                masked = _masked(url)
                if masked != url:
                    whole[f"{where}/{key}"] = url
                    urls[key] = masked
        if whole:
            secrets = secrets_dir / "secrets.json"
            _write_private(secrets, json.dumps(whole))
            data["secrets"] = str(secrets)
        _write_private(path, json.dumps(data, indent=2))

    @classmethod
    def read(cls, path: Path) -> RunConfig:
        data = json.loads(path.read_text())
        secrets = data.pop("secrets", None)
        if secrets is not None:
            whole = json.loads(Path(secrets).read_text())
            for where, urls in _urls(data):
                for key in urls:
                    urls[key] = whole.get(f"{where}/{key}", urls[key])
        for key in ("expectations", "scenario_dirs"):  # JSON has lists; a run.json before these had none
            found = data.get(key) or ()
            data[key] = (found,) if isinstance(found, str) else tuple(found)
        return cls(**data)


def _urls(data: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """The places in a config's JSON that hold database URLs: a user's servers, and the published ones."""
    places = [("database_urls", data["database_urls"])]
    for backend, entry in data.get("services", {}).get("databases", {}).items():
        if "url" in entry:  # {"url": ...}, or {"unavailable": why}
            places.append((f"services/{backend}", entry))
    return places


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    # Every URL here was parsed before (a user's by its option, a published one is rendered from one).
    return make_url(url).render_as_string(hide_password=True)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
