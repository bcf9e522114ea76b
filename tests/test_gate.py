"""Verdicts for real: declared incompatibilities against real servers (xfail, xpass, fail), and `gate` on a
real release and on a candidate built here from a real release with one behaviour changed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import mutants
from harness.plan import oldest_supported
from tests.conftest import run_cli

pytestmark = pytest.mark.cell

# Merged over the shipped declarations: the first two take the ids of the shipped entries that cover the same
# checks, and so replace them.
DECLARED = """
[[expect]]
id = "logged-models-need-a-3.0-server"     # real skew, declared with the server's own error: xfail
check = "write"
scenario = "logged_models"
client = ">=3.0"
server = "<3.0"
error = "logged-models failed with error code 404"
reason = "3.0 entity"
link = "https://example.invalid/1"

[[expect]]
id = "3.x-client-lists-artifact-dirs-via-logged-models"  # real skew, declared with another error: stays fail
check = "read"
scenario = "artifacts"
client = ">=3.0"
server = "<3.0"
error = "re:500 Internal Server Error"
reason = "declared wrongly on purpose"
link = "https://example.invalid/2"

[[expect]]
id = "quickstart-stale"                    # declared, but it passes: xpass
check = "write"
scenario = "quickstart"
client = ">=3.0"
server = "<3.0"
error = "anything"
reason = "a declaration that no longer holds"
link = "https://example.invalid/3"
"""


def test_declared_failures_are_xfail_stale_ones_xpass_and_others_fail(tmp_path: Path) -> None:
    declared = tmp_path / "expect.toml"
    declared.write_text(DECLARED)
    results = tmp_path / "results"
    args = ["run", "--results-dir", str(results), "--runtime", "local", "--backend", "sqlite", "--path",
            "2.22.5:3.17.2", "--expectations", str(declared)]  # fmt: skip
    proc = run_cli(*args, "--scenarios", "quickstart,logged_models,artifacts")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_dir = (results / "latest").resolve()
    (cell,) = json.loads((run_dir / "results.json").read_text())["cells"]
    by = {(c["phase"], c["name"], c["scenario"], c["client"]): c for c in cell["checks"]}
    xfail = by[("before", "write", "logged_models", "3.17.2")]
    assert xfail["status"] == "xfail" and xfail["expected"] == "logged-models-need-a-3.0-server"
    assert "logged-models failed with error code 404" in xfail["detail"]
    assert "(logged-models-need-a-3.0-server: 3.0 entity)" in xfail["detail"]  # this file's, not the shipped
    wrong = by[("before", "read", "artifacts", "3.17.2")]
    assert (
        wrong["status"] == "fail"
        and "declared (3.x-client-lists-artifact-dirs-via-logged-models) with a different error"
        in wrong["detail"]
    )
    stale = by[("before", "write", "quickstart", "3.17.2")]
    assert stale["status"] == "xpass" and "declaration is stale" in stale["detail"]
    others = [c for c in cell["checks"] if c not in (xfail, wrong, stale)]
    assert {c["status"] for c in others} <= {"pass", "skip"}
    assert cell["status"] == "fail"
    report = (run_dir / "report.md").read_text()
    # The stale declaration is listed with the failures, as xpass, naming the declaration that went stale.
    row = "| before | write | quickstart | 3.17.2 | 2.22.5 | xpass |"
    xpass_rows = [line for line in report.splitlines() if line.startswith(row)]
    assert len(xpass_rows) == 1, report
    assert "quickstart-stale" in xpass_rows[0] and "the declaration is stale" in xpass_rows[0], xpass_rows
    # The same run with the stale declaration allowed still fails: the wrongly declared error is a fail.
    proc = run_cli(*args, "--allow-xpass", "--scenarios", "quickstart,logged_models")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    junit = ET.parse((results / "latest" / "junit.xml").resolve()).getroot().find("testsuite")
    assert junit is not None and junit.get("failures") == "1"  # the xpass cell, shown in JUnit all the same


def test_gate_passes_a_release_whose_only_failures_are_declared(tmp_path: Path) -> None:
    """The shipped expectations against reality: 3.17.2 from 2.22.5 and from the oldest supported version,
    every scenario, both directions."""
    results = tmp_path / "results"
    proc = run_cli("gate", "--candidate", "3.17.2", "--baseline", "2.22.5", "--backend", "sqlite",
                   "--runtime", "local", "--results-dir", str(results), "-n", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    oldest = oldest_supported()  # [gate] oldest in harness/data/matrix.toml
    assert f"gate: PASS: candidate 3.17.2 (from baseline 2.22.5 and oldest {oldest}; 2 cells" in proc.stdout
    data = json.loads((results / "latest" / "results.json").resolve().read_text())
    assert {c["id"] for c in data["cells"]} == {"sqlite:2.22.5->3.17.2", f"sqlite:{oldest}->3.17.2"}
    statuses = {k["status"] for c in data["cells"] for k in c["checks"]}
    assert "xfail" in statuses and statuses <= {"pass", "xfail", "skip"}


def _candidate_that_changes_params(tmp_path: Path) -> Path:
    """MLflow 2.22.5's own wheels, downloaded from the index, with one change to the server: it stores every
    logged param value with a suffix. An internal build whose behaviour differs from its release."""
    edit = mutants.Edit(
        "mlflow/server/handlers.py",
        "    param = Param(request_message.key, request_message.value)\n",
        "    param = Param(request_message.key, request_message.value + '-candidate')\n",
    )
    return mutants.build_candidate("2.22.5", [edit], tmp_path / "candidate")


def test_gate_fails_a_candidate_that_behaves_differently(tmp_path: Path) -> None:
    candidate = _candidate_that_changes_params(tmp_path)
    results = tmp_path / "results"
    proc = run_cli("gate", "--candidate", str(candidate), "--baseline", "1.30.1", "--oldest", "1.30.1",
                   "--backend", "sqlite", "--runtime", "local", "--results-dir", str(results),
                   "--scenarios", "quickstart")  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    verdict = next(
        i for i, line in enumerate(lines) if line.startswith("gate: FAIL: candidate 2.22.5@wheel-dir")
    )
    named = "\n".join(lines[verdict:])
    # Runs written before the upgrade read back fine; whatever the candidate's server stored is off.
    assert "fail: sqlite:1.30.1->2.22.5@wheel-dir after/read quickstart client 1.30.1" in named
    assert "run.params.learning_rate: '0.01-candidate', expected '0.01'" in named
    assert "      log: " in named and "before/read" not in named
