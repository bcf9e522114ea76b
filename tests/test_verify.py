from harness.verify import WrittenRun, compare_all, compare_run

RUN = WrittenRun(
    run_id="abcdef0123",
    writer="client 1.30.1 -> server 2.22.5 (after)",
    phase="after",
    params={"learning_rate": "0.01", "optimizer": "adam"},
    metrics={"accuracy": 0.95},
    tags={"compat.phase": "after"},
    artifacts={"model_config.txt": {"sha256": "aa" * 32, "size": 44}},
)


def seen(**changes: object) -> dict:
    base = {
        "found": True,
        "params": dict(RUN.params),
        "metrics": dict(RUN.metrics),
        "tags": dict(RUN.tags),
        "artifacts": {"model_config.txt": {"sha256": "aa" * 32, "size": 44}},
    }
    base.update(changes)
    return base


def test_identical_run_has_no_differences() -> None:
    assert compare_run(RUN, seen()) == []


def test_each_kind_of_difference_is_named() -> None:
    assert compare_run(RUN, seen(params={"learning_rate": "0.02", "optimizer": "adam"})) == [
        "param 'learning_rate' is '0.02', expected '0.01'"
    ]
    assert compare_run(RUN, seen(metrics={})) == ["metric 'accuracy' missing (expected 0.95)"]
    assert compare_run(RUN, seen(tags={"compat.phase": "after", "x": "1"})) == [
        "tag 'x' unexpected (value '1')"
    ]
    diff = compare_run(RUN, seen(artifacts={"model_config.txt": {"sha256": "bb" * 32, "size": 44}}))
    assert len(diff) == 1 and "bytes differ" in diff[0]
    assert compare_run(RUN, seen(artifacts={})) == ["artifact 'model_config.txt' missing"]


def test_unreadable_and_missing_runs() -> None:
    assert compare_run(RUN, {"found": False, "error": "RestException: RESOURCE_DOES_NOT_EXIST"}) == [
        "run unreadable: RestException: RESOURCE_DOES_NOT_EXIST"
    ]
    out = compare_all([RUN], {})
    assert out == [
        "run abcdef01 (client 1.30.1 -> server 2.22.5 (after)): run unreadable: not returned by the client"
    ]
