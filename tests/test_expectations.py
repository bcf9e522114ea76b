"""Expectations as data: parsing, matching and the statuses they give (pure units; the same statuses are
shown for real in tests/test_gate.py)."""

from pathlib import Path

import pytest

from harness import expectations
from harness.expectations import ExpectationError, apply, load
from harness.results import CellResult, Check, Status


def cell(*checks: Check, backend: str = "sqlite", path: tuple[str, ...] = ("2.22.5", "3.17.2")) -> CellResult:
    result = CellResult(id="x", backend=backend, runtime="local", path=list(path), clients=list(path))
    for c in checks:
        result.add(c)
    return result


def declared(tmp_path: Path, body: str) -> tuple[expectations.Expectation, ...]:
    path = tmp_path / "expect.toml"
    path.write_text(body)
    return load(path)


LOGGED = """
[[expect]]
id = "logged-models"
check = "write"
scenario = "logged_models"
client = ">=3.0"
server = "<3.0"
error = "logged-models failed with error code 404"
reason = "3.0 entity"
"""


def write(status: Status, detail: str, client: str = "3.17.2", server: str = "2.22.5") -> Check:
    return Check("write", "before", status, detail, client=client, server=server, scenario="logged_models")


def test_a_declared_failure_with_the_declared_error_is_xfail(tmp_path: Path) -> None:
    result = cell(write(Status.FAIL, "MlflowException: ... logged-models failed with error code 404 != 200"))
    apply(result, declared(tmp_path, LOGGED))
    (check,) = result.checks
    assert check.status is Status.XFAIL and check.expected == "logged-models"
    assert result.status is Status.XFAIL and result.summary == "1 check(s) failed as declared: logged-models"


def test_a_different_error_stays_fail_and_says_so(tmp_path: Path) -> None:
    result = cell(write(Status.FAIL, "MlflowException: 500 Internal Server Error"))
    apply(result, declared(tmp_path, LOGGED))
    assert result.checks[0].status is Status.FAIL and result.status is Status.FAIL
    assert "declared (logged-models) with a different error" in result.checks[0].detail


def test_a_declared_failure_that_passes_is_xpass(tmp_path: Path) -> None:
    result = cell(write(Status.PASS, "acknowledged"))
    apply(result, declared(tmp_path, LOGGED))
    assert result.checks[0].status is Status.XPASS and result.status is Status.XPASS
    assert "declaration is stale" in result.summary


def test_outside_the_declared_ranges_nothing_changes(tmp_path: Path) -> None:
    result = cell(write(Status.FAIL, "logged-models failed with error code 404", server="3.0.0"))
    apply(result, declared(tmp_path, LOGGED))
    assert result.checks[0].status is Status.FAIL
    errored = cell(write(Status.ERROR, "lost the connection to the server"))
    apply(errored, declared(tmp_path, LOGGED))
    assert errored.checks[0].status is Status.ERROR  # infrastructure is never declared away


def test_from_and_backend_narrow_a_declaration(tmp_path: Path) -> None:
    body = """
[[expect]]
id = "file-trash"
check = "read"
from = "<2.0"
backends = ["file"]
error = "re:stage: 'active', expected '(deleted)'"
reason = "r"
"""
    check = Check("read", "after", Status.FAIL, "experiments['3'].stage: 'active', expected 'deleted'",
                  client="2.22.5", server="2.22.5", scenario="experiment_lifecycle")  # fmt: skip
    hit = cell(check, backend="file", path=("1.30.1", "2.22.5"))
    apply(hit, declared(tmp_path, body))
    assert hit.status is Status.XFAIL
    for backend, path in (("sqlite", ("1.30.1", "2.22.5")), ("file", ("2.22.5", "3.17.2"))):
        miss = cell(Check(**{**check.to_json(), "status": Status.FAIL}), backend=backend, path=path)
        apply(miss, declared(tmp_path, body))
        assert miss.status is Status.FAIL


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[expect]]\nid = "a"\ncheck = "write"\nreason = "r"\n', "declaration 1 lacks error"),
        (
            '[[expect]]\nid = "a"\ncheck = "write"\nerror = "e"\nreason = "r"\nclient = "new"\n',
            "no version range",
        ),
        ('[[expect]]\nid = "a"\ncheck = "w"\nerror = "re:("\nreason = "r"\n', "bad pattern"),
        (
            '[[expect]]\nid = "a"\ncheck = "w"\nerror = "e"\nreason = "r"\nservr = "<2"\n',
            "unknown keys ['servr']",
        ),
        ('[[expect]]\nid = "a"\ncheck = "w"\nerror = "e"\nreason = "r"\n' * 2, "duplicate ids ['a']"),
        ("not toml [", "expect.toml"),
    ],
)
def test_bad_declarations_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ExpectationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        declared(tmp_path, body)


def test_the_shipped_declarations_load_and_carry_reasons_and_links() -> None:
    shipped = expectations.default()
    assert len(shipped) >= 8
    assert all(e.reason and e.link.startswith("https://") for e in shipped)
