"""Running scenario steps in a client process inside a client version's venv."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import procs
from harness.envs import Env
from harness.paths import SCENARIOS_DIR

CLIENT_TIMEOUT_ENV = "MLFLOW_COMPAT_CLIENT_TIMEOUT"
CLIENT_TIMEOUT_S = 600.0  # one process runs a phase's scenarios; MLFLOW_COMPAT_CLIENT_TIMEOUT overrides
# MLflow clients retry a failed request 5-7 times with exponential backoff (minutes, when a server died).
# Two quick retries still ride out a blip; a dead server is then seen in seconds, not minutes.
CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
DRIVER = SCENARIOS_DIR / "driver.py"


_CONNECTION_LOST = re.compile(
    r"ConnectionError|ConnectionRefusedError|Connection refused|Max retries exceeded|RemoteDisconnected"
    r"|ConnectionResetError|Connection aborted"
)


def is_connection_failure(error: str) -> bool:
    """Whether a client call failed because the server was not there (the machine), not because it answered
    wrongly (MLflow). A server that dies mid-phase is also reported by the cell's server-alive check."""
    return bool(_CONNECTION_LOST.search(error))


@dataclass
class StepOutcome:
    """What a client step produced. ``infra`` marks a step that never got to talk to MLflow properly
    (timed out, crashed without writing its result): an error of the harness or machine, not of MLflow."""

    ok: bool
    infra: bool
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    excerpt: str = ""


def run_driver(
    env: Env,
    step: str,
    plan: dict[str, Any],
    *,
    tracking_uri: str,
    out: Path,
    log: Path,
    workdir: Path,
    timeout: float | None = None,
) -> StepOutcome:
    """One client process (scenarios/driver.py) that runs ``step`` (write or read) for every scenario in
    ``plan``. ``data["results"]`` holds each scenario's own outcome; a process that wrote no result at all
    is an infrastructure error (it never got to talk to MLflow properly)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    plan_file = out.with_name(out.stem + "-plan.json")
    plan_file.write_text(json.dumps(plan, indent=2))
    timeout = timeout or float(os.environ.get(CLIENT_TIMEOUT_ENV) or CLIENT_TIMEOUT_S)
    environ = {**env.environ(), **CLIENT_RETRIES, "MLFLOW_TRACKING_URI": tracking_uri}
    code, seconds = procs.run(
        [str(env.interpreter), str(DRIVER), step, "--plan", str(plan_file), "--out", str(out)],
        env=environ,
        log=log,
        timeout=timeout,
        cwd=workdir,
    )
    if code is None:
        return StepOutcome(
            False, True, seconds, error=f"client timed out after {timeout:.0f}s", excerpt=procs.tail(log)
        )
    if not out.exists():
        return StepOutcome(
            False,
            True,
            seconds,
            error=f"client exited with code {code} before writing a result",
            excerpt=procs.tail(log),
        )
    return StepOutcome(True, False, seconds, data=json.loads(out.read_text()))
