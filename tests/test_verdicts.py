"""Whose fault is a failed call: a server that answered (any HTTP status) is MLflow's behaviour, a call that
got no answer is the machine's. Pure units on what the driver's wire records, then real servers: a candidate
build whose handler raises for one endpoint (HTTP 500, retried by the client until it gives up) is `fail`
naming the endpoint and status; a killed server is `error` (tests/test_faults.py)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.clients import call_failure

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


def test_a_client_that_raises_on_a_good_answer_or_without_a_call_is_mlflows() -> None:
    after_ok = call_failure(got("KeyError: 'run'", {"method": "GET", "url": SET_TAG, "status": 200}))
    assert after_ok.answered and "after the server answered HTTP 200 to GET" in after_ok.text
    local = call_failure(got("AttributeError: 'MlflowClient' object has no attribute 'x'"))
    assert local.answered and local.text.startswith("the client failed before any HTTP exchange")
