"""A team's noxfile: gate an MLflow upgrade with mlflow-compat before bumping the pin.

Copy this session (and the `[tool.mlflow-compat]` table of pyproject.toml beside it) into your repository:

    nox -s mlflow_gate -- --candidate 3.17.2        # or MLFLOW_CANDIDATE=3.17.2 nox -s mlflow_gate

The session installs mlflow-compat from the package index (or the wheel that MLFLOW_COMPAT_WHEEL names, e.g.
one you built), then runs `mlflow-compat gate`: it upgrades a store from the baseline and from the oldest
version your pyproject names to the candidate, with old and new clients, and exits 0 only when every check
passes or fails as declared. Its settings (backends, baseline, oldest, scenarios, results directory, ...)
come from pyproject.toml; anything after `--` overrides them.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"


@nox.session
def mlflow_gate(session: nox.Session) -> None:
    """May we bump MLflow to the candidate? Exit 0 only if so."""
    session.install(os.environ.get("MLFLOW_COMPAT_WHEEL") or "mlflow-compat")
    args = list(session.posargs)
    if "--candidate" not in args:
        candidate = os.environ.get("MLFLOW_CANDIDATE")
        if not candidate:
            session.error("name the MLflow to gate: nox -s mlflow_gate -- --candidate VERSION")
        args = ["--candidate", candidate, *args]
    session.run("mlflow-compat", "gate", *args)
