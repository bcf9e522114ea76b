"""Expectations as data: parsing, matching and the statuses they give (pure units; the same statuses are
shown for real in tests/test_gate.py)."""

from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from harness import expectations
from harness.expectations import ExpectationError, apply, load
from harness.results import CellResult, Check, Problem, Status


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


def test_from_sqlalchemy_covers_only_stores_made_under_that_sqlalchemy(tmp_path: Path) -> None:
    """A store's schema can depend on the SQLAlchemy its creator ran on (--resolution decides it): a
    declaration that names it covers only cells whose FROM env ran on it, and says nothing (no xpass)
    elsewhere; an env the cell never recorded is not assumed to match."""
    body = """
[[expect]]
id = "status-check"
check = "schema-drift"
from = "<1.23"
from_sqlalchemy = ">=1.4"
backends = ["mysql"]
error = "check constraint status"
reason = "r"
"""

    def drift(sqlalchemy: str | None, status: Status = Status.FAIL) -> CellResult:
        detail = "check constraint status (...) on runs only in the upgraded store"
        result = cell(
            Check("schema-drift", "upgrade", status, detail), backend="mysql", path=("1.20.2", "3.17.2")
        )
        if sqlalchemy is not None:
            result.components["envs"] = {
                "1.20.2": {"sqlalchemy": sqlalchemy},
                "3.17.2": {"sqlalchemy": "2.1.6"},
            }
        apply(result, declared(tmp_path, body))
        return result

    assert drift("1.4.23").status is Status.XFAIL
    assert drift("1.3.24").status is Status.FAIL  # the same failure from a store made under 1.3: undeclared
    assert drift("1.3.24", Status.PASS).status is Status.PASS  # and its absence there is not stale
    assert drift("1.4.23", Status.PASS).status is Status.XPASS
    assert drift(None).status is Status.FAIL


TRASH = """
[[expect]]
id = "file-trash"
check = "read"
scenario = "experiment_lifecycle"
error = "stage: 'active', expected 'deleted'"
reason = "r"
written_by = { client = "<2.0", phase = "before" }
"""
OLD = {"client": "1.30.1", "server": "1.30.1", "phase": "before"}
NEW = {"client": "2.22.5", "server": "2.22.5", "phase": "after"}


def lifecycle_read(*problems: Problem, writers: tuple[dict[str, str], ...] = (OLD, NEW)) -> Check:
    check = Check("read", "after", Status.PASS, "read", client="2.22.5", server="2.22.5",
                  scenario="experiment_lifecycle", writers=list(writers))  # fmt: skip
    check.problems = list(problems)
    check.settle()
    return check


def test_a_declaration_covers_each_difference_it_names_and_no_other(tmp_path: Path) -> None:
    """A declared difference and an undeclared one in the same check: the check is fail, naming the other."""
    declared_one = Problem("client 1.30.1 (before): experiments['3'].stage: 'active', expected 'deleted'",
                           Status.FAIL, "before/1.30.1/experiment_lifecycle", OLD)  # fmt: skip
    other = Problem("client 1.30.1 (before): experiments['3'].name: 'x', expected 'y'", Status.FAIL,
                    "before/1.30.1/experiment_lifecycle", OLD)  # fmt: skip
    result = cell(lifecycle_read(declared_one, other), backend="file", path=("1.30.1", "2.22.5"))
    apply(result, declared(tmp_path, TRASH))
    (check,) = result.checks
    assert check.status is Status.FAIL and result.status is Status.FAIL
    assert declared_one.status is Status.XFAIL and declared_one.expected == "file-trash"
    assert other.status is Status.FAIL and other.expected is None
    assert "1 of 2 problem(s) not covered by the declarations (file-trash)" in check.detail
    assert "name: 'x', expected 'y'" in check.detail
    # Alone, the declared difference is xfail.
    alone = Problem(declared_one.text, Status.FAIL, declared_one.record, OLD)
    result = cell(lifecycle_read(alone), backend="file", path=("1.30.1", "2.22.5"))
    apply(result, declared(tmp_path, TRASH))
    assert result.checks[0].status is Status.XFAIL and result.checks[0].expected == "file-trash"


def test_written_by_names_whose_records_a_declaration_covers(tmp_path: Path) -> None:
    """The same difference in a record a 2.x client wrote after the upgrade is not what was declared."""
    text = "client 2.22.5 (after): experiments['3'].stage: 'active', expected 'deleted'"
    result = cell(lifecycle_read(Problem(text, Status.FAIL, "after/2.22.5/experiment_lifecycle", NEW)))
    apply(result, declared(tmp_path, TRASH))
    assert result.checks[0].status is Status.FAIL
    assert "declared (file-trash) with a different error" in result.checks[0].detail
    # A passing read of records a 1.x client wrote is a stale declaration; one of 2.x records only is not.
    stale = cell(lifecycle_read(writers=(OLD, NEW)))
    apply(stale, declared(tmp_path, TRASH))
    assert stale.checks[0].status is Status.XPASS
    unrelated = cell(lifecycle_read(writers=(NEW,)))
    apply(unrelated, declared(tmp_path, TRASH))
    assert unrelated.checks[0].status is Status.PASS


def test_a_record_without_an_answer_keeps_the_check_an_error_when_the_rest_is_declared(
    tmp_path: Path,
) -> None:
    covered = Problem("client 1.30.1 (before): experiments['3'].stage: 'active', expected 'deleted'",
                      Status.FAIL, "before/1.30.1/experiment_lifecycle", OLD)  # fmt: skip
    lost = Problem("no answer from the server to GET /api/2.0/mlflow/experiments/get (ConnectionError)",
                   Status.ERROR, "after/2.22.5/experiment_lifecycle", NEW)  # fmt: skip
    check = lifecycle_read(covered, lost)
    assert check.status is Status.FAIL  # fail outranks error inside a check
    result = cell(check)
    apply(result, declared(tmp_path, TRASH))
    assert covered.status is Status.XFAIL and lost.status is Status.ERROR
    assert check.status is Status.ERROR and result.status is Status.ERROR


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
        (
            '[[expect]]\nid = "a"\ncheck = "w"\nerror = "e"\nreason = "r"\nfrom_sqlalchemy = "one-four"\n',
            "from_sqlalchemy 'one-four' is no version range",
        ),
        (
            '[[expect]]\nid = "a"\ncheck = "w"\nerror = "e"\nreason = "r"\nwritten_by = { clint = "<2" }\n',
            "written_by takes a table of client, server and phase",
        ),
        (
            '[[expect]]\nid = "a"\ncheck = "w"\nerror = "e"\nreason = "r"\nwritten_by = { client = "x" }\n',
            "written_by.client 'x' is no version range",
        ),
    ],
)
def test_bad_declarations_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ExpectationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        declared(tmp_path, body)


def test_the_shipped_declarations_load_and_carry_reasons_and_links() -> None:
    shipped = expectations.default()
    assert len(shipped) >= 8
    assert all(e.reason and e.link.startswith("https://") for e in shipped)


def test_no_shipped_declaration_can_cover_a_regression_of_a_new_build() -> None:
    """Each shipped declaration pins at least one side to released versions (an old server, an old client,
    a store or records an old version made), so a future build on every side is outside all of them: a new
    regression can never be declared away by what ships today. And each names one specific answer."""
    future = "99.0"
    for e in expectations.default():
        pinned = [
            spec
            for spec in (e.client, e.server, e.from_, dict(e.written_by).get("client", ""))
            if spec and not SpecifierSet(spec).contains(future, prereleases=True)
        ]
        assert pinned, f"{e.id}: every version range admits a future build"
        assert len(e.error) >= 20 and e.error not in ("re:.*", "re:.+"), f"{e.id}: the error names nothing"


def test_a_declaration_for_a_cell_feature_covers_only_the_cells_that_have_it(tmp_path: Path) -> None:
    """The auth app failing to start on MySQL is about auth cells: a plain cell's server start that passes
    is no stale declaration, and an auth cell's that fails is xfail."""
    body = """
[[expect]]
id = "auth-on-mysql"
check = "server-start"
backends = ["mysql"]
features = ["auth"]
error = "exited with code 1"
reason = "duplicate constraint names"
"""
    start = dict(name="server-start", phase="before", server="2.22.5")
    plain = cell(Check(status=Status.PASS, detail="http://127.0.0.1:1", **start), backend="mysql")
    apply(plain, declared(tmp_path, body))
    assert plain.checks[0].status is Status.PASS
    failing = Check(status=Status.FAIL, detail="server 2.22.5 exited with code 1: ...", **start)
    with_auth = cell(failing, backend="mysql")
    with_auth.auth = True
    apply(with_auth, declared(tmp_path, body))
    assert with_auth.checks[0].status is Status.XFAIL
    with pytest.raises(ExpectationError, match="features may name auth, s3"):
        declared(tmp_path, body.replace('features = ["auth"]', 'features = ["ldap"]'))
