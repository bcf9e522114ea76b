from harness.results import CellResult, Check, ExitCode, RunResult, Status, worst


def cell(*statuses: Status) -> CellResult:
    result = CellResult(
        id="sqlite:a->b", backend="sqlite", runtime="local", path=["a", "b"], clients=["a", "b"]
    )
    for i, status in enumerate(statuses):
        result.add(Check(f"c{i}", "before", status, detail=f"detail {i}", client="a", server="b"))
    result.finish()
    return result


def test_worst() -> None:
    assert worst([Status.PASS, Status.SKIP]) is Status.PASS
    assert worst([Status.SKIP, Status.SKIP]) is Status.SKIP
    assert worst([Status.PASS, Status.ERROR]) is Status.ERROR
    assert worst([Status.ERROR, Status.FAIL, Status.PASS]) is Status.FAIL


def test_cell_summary_names_the_first_failure() -> None:
    result = cell(Status.PASS, Status.FAIL, Status.FAIL)
    assert result.status is Status.FAIL
    assert result.summary == "before c1 (client a -> server b): detail 1 (+1 more)"


def test_cell_without_checks_is_an_error() -> None:
    assert cell().status is Status.ERROR


def test_exit_codes() -> None:
    def run(*cells: CellResult, **kw: object) -> RunResult:
        return RunResult("r", "s", "e", "0", {}, list(cells), **kw)  # type: ignore[arg-type]

    assert run(cell(Status.PASS), cell(Status.SKIP)).exit_code() == ExitCode.OK
    assert run(cell(Status.PASS), cell(Status.FAIL), cell(Status.ERROR)).exit_code() == ExitCode.FAILED
    assert run(cell(Status.PASS), cell(Status.ERROR)).exit_code() == ExitCode.INFRA_ONLY
    assert run(cell(Status.PASS), not_run=["x"]).exit_code() == ExitCode.INFRA_ONLY


def test_json_roundtrip() -> None:
    result = cell(Status.PASS, Status.FAIL)
    data = result.to_json()
    assert data["from"] == "a" and data["to"] == "b"
    back = CellResult.from_json(data)
    assert back == result
