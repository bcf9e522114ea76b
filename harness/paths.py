"""Where the harness keeps things: the scenario scripts, and one cache root (MLFLOW_COMPAT_CACHE overrides).

The scenario scripts live at the repository's top (`scenarios/`) and ship inside the installed package as
`harness/_scenarios` (pyproject.toml maps the one to the other). `SCENARIOS_DIR` is the shipped copy when the
package has one (an installed wheel), else the checkout's `scenarios/` beside the package (a checkout, or an
editable install of it); `MLFLOW_COMPAT_SCENARIOS` names another directory outright. The package's data and
templates are read through importlib.resources (harness/data, harness/templates), in both layouts alike.
What does not live here: a run's own paths (harness.rundir), the envs' cache layout (harness.envs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_SCENARIOS = PACKAGE_DIR / "_scenarios"  # in an installed wheel
CHECKOUT_SCENARIOS = PACKAGE_DIR.parent / "scenarios"  # in a checkout (and its editable install)


def scenarios_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of the shipped scenario scripts (and their driver, fork servers and helpers)."""
    env = os.environ if environ is None else environ
    if named := env.get("MLFLOW_COMPAT_SCENARIOS"):
        return Path(named)
    return SHIPPED_SCENARIOS if (SHIPPED_SCENARIOS / "driver.py").is_file() else CHECKOUT_SCENARIOS


SCENARIOS_DIR = scenarios_dir()


def cache_root() -> Path:
    env = os.environ.get("MLFLOW_COMPAT_CACHE")
    root = (
        Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlflow-compat"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root
