"""Whose fault is a failed call: a server that answered (any HTTP status) is MLflow's behaviour, a call that
got no answer is the machine's. Pure units on what the driver's wire records, then real servers: a candidate
build whose handler raises for one endpoint (HTTP 500, retried by the client until it gives up) is `fail`
naming the endpoint and status; a killed server is `error` (tests/test_faults.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import mutants
from harness.clients import call_failure
from harness.ledger import Ledger
from harness.results import CellResult, Check, Status
from harness.scenarios import resolve
from harness.specs import parse_path
from harness.verify import Written
from harness.versions import MlflowVersion
from tests.test_cells import checks, run_one

RETRIES_EXHAUSTED = (
    "MlflowException: API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/set-tag failed with exception "
    "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/"
    "set-tag (Caused by ResponseError('too many 500 error responses'))"
)
SET_TAG = "http://127.0.0.1:5000/api/2.0/mlflow/runs/set-tag"


def got(error: str, *exchanges: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": error, "http": {"count": len(exchanges), "recent": list(exchanges)}}


def test_retried_500s_are_the_servers_answer_whatever_the_client_says() -> None:
    """MLflow's client hides retried 500s behind "Max retries exceeded", the wording of a lost connection."""
    failure = call_failure(got(RETRIES_EXHAUSTED, *[{"method": "POST", "url": SET_TAG, "status": 500}] * 3))
    assert failure.answered
    assert failure.text.startswith("the server answered HTTP 500 to POST /api/2.0/mlflow/runs/set-tag: ")


@pytest.mark.parametrize("status", [400, 403, 404, 502, 503])
def test_any_error_status_is_an_answer(status: int) -> None:
    failure = call_failure(got("MlflowException: boom", {"method": "GET", "url": SET_TAG, "status": status}))
    assert failure.answered and f"HTTP {status} to GET /api/2.0/mlflow/runs/set-tag" in failure.text


def test_no_answer_to_the_last_call_is_the_machines_even_after_earlier_answers() -> None:
    refused = {
        "method": "POST",
        "url": SET_TAG,
        "error": "NewConnectionError: [Errno 111] Connection refused",
    }
    failure = call_failure(
        got(RETRIES_EXHAUSTED, {"method": "POST", "url": SET_TAG, "status": 500}, refused, refused)
    )
    assert not failure.answered
    assert failure.text.startswith("no answer from the server to POST /api/2.0/mlflow/runs/set-tag (New")


def test_the_failing_call_is_the_one_that_went_wrong_not_the_clean_up_after_it() -> None:
    """A client ends its run (runs/update, 200) after log-inputs got a 404; a handled 404 came earlier."""
    failure = call_failure(
        got(
            "MlflowException: API request to endpoint /api/2.0/mlflow/runs/log-inputs failed with error code 404",  # noqa: E501
            {"method": "GET", "url": "http://h:1/api/2.0/mlflow/experiments/get-by-name", "status": 404},
            {"method": "POST", "url": "http://h:1/api/2.0/mlflow/runs/log-inputs", "status": 404},
            {"method": "POST", "url": "http://h:1/api/2.0/mlflow/runs/update", "status": 200},
        )
    )
    assert failure.answered and "HTTP 404 to POST /api/2.0/mlflow/runs/log-inputs: " in failure.text
    # The server died after answering: the failing call (named by the client) got no answer.
    refused = {"method": "POST", "url": SET_TAG, "error": "NewConnectionError: [Errno 111] refused"}
    died = call_failure(
        got(
            RETRIES_EXHAUSTED, {"method": "GET", "url": "http://h:1/api/2.0/mlflow/x", "status": 404}, refused
        )
    )
    assert not died.answered and "no answer from the server to POST /api/2.0/mlflow/runs/set-tag" in died.text


def test_a_client_that_raises_on_a_good_answer_or_without_a_call_is_mlflows() -> None:
    after_ok = call_failure(got("KeyError: 'run'", {"method": "GET", "url": SET_TAG, "status": 200}))
    assert after_ok.answered and "after the server answered HTTP 200 to GET" in after_ok.text
    local = call_failure(got("AttributeError: 'MlflowClient' object has no attribute 'x'"))
    assert local.answered and local.text.startswith("the client failed before any HTTP exchange")


@pytest.mark.cell
def test_a_server_answering_500_is_a_failure_naming_the_endpoint_never_an_error(tmp_path: Path) -> None:
    """A real candidate server (3.17.2's wheels, its get-history handler raising): the clients retry the 500s
    until they give up with "Max retries exceeded", and every check that met it is `fail`, naming the call
    and the status. Nothing is blamed on the machine; the baseline server's phase is untouched."""
    candidate = mutants.candidate_for(mutants.kinds_by_id()["metric-history-500"], "3.17.2")
    result = run_one(tmp_path, "sqlite", f"2.22.5:{candidate}", scenarios=("metric_history",))
    assert checks(result, Status.ERROR) == []
    failed = [c for c in result.checks if c.status is Status.FAIL and c.name != "acked-writes"]
    assert failed and {c.phase for c in failed} == {"after"}, checks(result, Status.FAIL)
    assert {c.client for c in failed if c.name == "read"} == {"2.22.5", "3.17.2@wheel-dir"}
    for check in failed:
        assert "the server answered HTTP 500 to GET /api/2.0/mlflow/metrics/get-history" in check.detail
    # The records the candidate's server would not return are named by the acked-writes account, as fails.
    account = next(c for c in result.checks if c.name == "acked-writes")
    assert account.status is Status.FAIL and "not confirmed in after (reads: fail)" in account.excerpt
    before = [c for c in result.checks if c.phase == "before" and c.name in ("write", "read")]
    assert before and all(c.status is Status.PASS for c in before)


def test_a_checks_who_names_the_parts_present() -> None:
    check = Check("read", "after", Status.PASS, client="2.22.5", server="3.17.2", scenario="quickstart")
    assert check.who() == "quickstart client 2.22.5 server 3.17.2"
    assert Check("server-start", "after", Status.PASS, server="3.17.2").who() == "server 3.17.2"
    assert Check("acked-writes", "cell", Status.PASS).who() == ""


def _ledger() -> tuple[Ledger, CellResult, list[Written]]:
    specs = parse_path("2.22.5:3.17.2")
    ledger = Ledger(resolve(("quickstart",)), specs[0], list(specs), "sqlite")
    for phase, version in (("before", "2.22.5"), ("after", "3.17.2"), ("rollback", "2.22.5")):
        ledger.serving(phase, MlflowVersion.parse(version))
    writes = [Written(f"{phase}/2.22.5/quickstart", "quickstart", f"client 2.22.5 -> server {server}",
                      phase, {}, client="2.22.5", server=server)
              for phase, server in (("before", "2.22.5"), ("after", "3.17.2"))]  # fmt: skip
    for w in writes:
        ledger.acknowledged(w)
    result = CellResult("c", "sqlite", "local", ["2.22.5", "3.17.2"], ["2.22.5", "3.17.2"])
    return ledger, result, writes


def test_the_ledger_accounts_for_every_acked_write_in_every_later_phase() -> None:
    ledger, result, (before, after) = _ledger()
    for phase in ("before", "after", "rollback"):
        ledger.confirm(before.key, phase)
    ledger.confirm(after.key, "after")  # written after the upgrade: the restore rightly lost it
    account = ledger.account(result)
    assert account is not None and account.check.detail == "acked writes: 2, read back: 2"
    Ledger.settle(account, result, completed=True)
    assert account.check.status is Status.PASS


def test_the_ledger_names_writes_never_read_back_and_reads_that_did_not_confirm() -> None:
    """A write no read tried is lost (fail; error when the cell ended early); a write reads tried and did not
    confirm takes the worst status of those reads."""
    ledger, result, (before, after) = _ledger()
    ledger.confirm(before.key, "before")
    ledger.reading(before.key, "after").append(Check("read", "after", Status.ERROR))
    ledger.reading(before.key, "after").append(Check("read", "after", Status.FAIL))
    ledger.confirm(before.key, "rollback")
    account = ledger.account(result)
    assert account is not None
    assert account.lost == [f"{after.key}: never read back in after"]
    assert account.unconfirmed == [f"{before.key}: not confirmed in after (reads: error, fail)"]
    assert account.check.detail.startswith("acked writes: 2, read back: 0; missing: ")
    Ledger.settle(account, result, completed=True)
    assert account.check.status is Status.FAIL and result.status is Status.FAIL

    ledger, result, (before, after) = _ledger()
    for phase in ("before", "after", "rollback"):
        ledger.confirm(before.key, phase)
    account = ledger.account(result)
    Ledger.settle(account, result, completed=False)  # never read because the cell ended early: not lost
    assert account is not None and account.check.status is Status.ERROR
