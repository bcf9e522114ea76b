"""The oldest supported MLflow version (`[gate] oldest` in harness/data/matrix.toml) really works: a real
SQLite cell from it to 3.17.2 with every default scenario ends with nothing failing or broken, every problem
declared, and the scenario that needed an older API's fallback (run_lifecycle: run names as the mlflow.runName
tag before 1.30) run by the oldest client, not skipped. What does not live here: the gate's own tests
(tests/test_gate.py) and the capabilities' unit tests (tests/test_versions.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.plan import oldest_supported
from harness.results import Status
from harness.scenarios import default_names, fitting
from tests.test_cells import run_one


@pytest.mark.slow
def test_the_oldest_supported_version_upgrades_to_the_newest_on_sqlite(tmp_path: Path) -> None:
    oldest = oldest_supported()
    scenarios = fitting(default_names(), frozenset())
    result = run_one(tmp_path, "sqlite", f"{oldest}:3.17.2", scenarios=scenarios, declared=True)
    bad = [(c.phase, c.name, c.scenario, c.client, c.server, c.detail[:300]) for c in result.checks
           if c.status in (Status.FAIL, Status.ERROR, Status.XPASS)]  # fmt: skip
    assert bad == [], bad
    assert result.status in (Status.PASS, Status.XFAIL), result.summary
    # The oldest client wrote and read run_lifecycle itself (the pre-1.30 fallback), on both servers.
    done = (Status.PASS, Status.XFAIL)
    ran = {(c.phase, c.name) for c in result.checks
           if c.scenario == "run_lifecycle" and c.client == oldest and c.status in done}  # fmt: skip
    assert {("before", "write"), ("after", "write"), ("rollback", "restore-read")} <= ran, ran
    # Every scenario the oldest client has the API for ran; what it lacks is a skip with the reason.
    skipped = {
        c.scenario for c in result.checks if c.status is Status.SKIP and c.client == oldest and c.scenario
    }
    assert "run_lifecycle" not in skipped and "quickstart" not in skipped
