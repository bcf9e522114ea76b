from harness.verify import diff

FILE = {"sha256": "aa" * 32, "size": 44}
RECORD = {
    "run_id": "abcdef0123",
    "run": {
        "params": {"learning_rate": "0.01", "optimizer": "adam"},
        "metrics": {"accuracy": 0.95},
        "tags": {"compat.phase": "after", "mlflow.note.content": "d"},
        "artifacts": {"model_config.txt": FILE},
    },
    "history": {"loss": [[0, 1000, 1.0], [1, 2000, 0.5]]},
    "versions": {"2": {"stage": "None", "flag": True}},
}


def changed(path: list, value: object) -> dict:
    import copy

    record = copy.deepcopy(RECORD)
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return record


def test_identical_record_has_no_differences() -> None:
    assert diff(RECORD, changed(["run_id"], "abcdef0123")) == []


def test_each_kind_of_difference_is_named_by_its_place() -> None:
    assert diff(RECORD, changed(["run", "params", "learning_rate"], "0.02")) == [
        "run.params.learning_rate: '0.02', expected '0.01'"
    ]
    assert diff(RECORD, changed(["history", "loss", 1, 2], 0.25)) == [
        "history.loss[1][2]: 0.25, expected 0.5"
    ]
    assert diff(RECORD, changed(["history", "loss"], [[0, 1000, 1.0]])) == [
        "history.loss: 1 items, expected 2"
    ]
    bytes_differ = diff(
        RECORD, changed(["run", "artifacts", "model_config.txt"], {"sha256": "bb" * 32, "size": 45})
    )
    assert bytes_differ == [
        "run.artifacts['model_config.txt']: bytes differ (45 bytes, sha256 bbbbbbbbbbbb…, expected 44 bytes, "
        "sha256 aaaaaaaaaaaa…)"
    ]
    assert diff(RECORD, changed(["versions", "2", "stage"], "Staging")) == [
        "versions['2'].stage: 'Staging', expected 'None'"
    ]
    assert diff(RECORD, changed(["run", "tags", "mlflow.note.content"], "e")) == [
        "run.tags['mlflow.note.content']: 'e', expected 'd'"
    ]


def test_missing_unexpected_and_type_differences() -> None:
    observed = changed(["run", "params"], {"optimizer": "adam", "extra": "1"})
    assert sorted(diff(RECORD, observed)) == [
        "run.params.extra: unexpected ('1')",
        "run.params.learning_rate: missing (expected '0.01')",
    ]
    assert diff(RECORD, changed(["versions", "2", "flag"], 1)) == ["versions['2'].flag: 1, expected True"]
    assert diff({"a": 1}, None) == ["(record): None, expected {'a': 1}"]


def test_long_strings_say_where_they_differ() -> None:
    long = "x" * 6000
    assert diff({"p": long}, {"p": long[:500]}) == [
        "p: 500 characters, expected 6000; first difference at 500"
    ]
    assert diff({"p": long}, {"p": "x" * 10 + "y" + long[11:]}) == [
        "p: 6000 characters, expected 6000; first difference at 10"
    ]
