"""Where the harness keeps things: one cache root, overridable by MLFLOW_COMPAT_CACHE."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS_DIR = Path(os.environ.get("MLFLOW_COMPAT_SCENARIOS", REPO_ROOT / "scenarios"))


def cache_root() -> Path:
    env = os.environ.get("MLFLOW_COMPAT_CACHE")
    root = (
        Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlflow-compat"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root
