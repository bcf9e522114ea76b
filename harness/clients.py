"""Running one scenario step (a client process) inside a client version's venv."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import procs
from harness.envs import Env
from harness.paths import SCENARIOS_DIR

CLIENT_TIMEOUT_S = 300.0


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


def run_step(
    env: Env,
    scenario: str,
    args: list[str],
    *,
    tracking_uri: str,
    out: Path,
    log: Path,
    workdir: Path,
    timeout: float = CLIENT_TIMEOUT_S,
) -> StepOutcome:
    script = SCENARIOS_DIR / f"{scenario}.py"
    workdir.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    environ = {**env.environ(), "MLFLOW_TRACKING_URI": tracking_uri}
    code, seconds = procs.run(
        [str(env.interpreter), str(script), *args, "--out", str(out)],
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
    data = json.loads(out.read_text())
    if not data.get("ok"):
        return StepOutcome(
            False,
            False,
            seconds,
            data=data,
            error=data.get("error", "unknown error"),
            excerpt=data.get("traceback", ""),
        )
    return StepOutcome(True, False, seconds, data=data)
