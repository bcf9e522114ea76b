from pathlib import Path

import pytest

from harness import scenarios
from harness.versions import MlflowVersion as V


def test_builtin_scenarios_declare_what_they_need_without_being_imported() -> None:
    found = scenarios.builtin()
    assert next(iter(found)) == "quickstart"  # the baseline comes first
    assert set(found) == {
        "quickstart", "metric_history", "tags_and_status", "nested_and_batch", "search",
        "experiment_lifecycle", "long_values", "long_params", "artifacts", "registry", "registry_aliases",
        "datasets", "logged_models", "metric_values", "metric_pages", "run_lifecycle", "traces", "prompts",
        "assessments", "models", "auth", "s3_artifacts",
    }  # fmt: skip
    assert found["datasets"].requires == ("log_input",)
    assert found["registry"].store_requires == {
        "file": ("file_store_registry",),
        "file_to_sqlite": ("file_store_registry",),  # a file store until the upgrade
    }
    assert all(s.doc for s in found.values()), "every scenario says what it covers"


def test_a_client_without_the_api_skips_with_the_reason() -> None:
    datasets = scenarios.builtin()["datasets"]
    assert datasets.lacks(V.parse("2.22.5"), V.parse("1.30.1"), "sqlite") is None  # a server lacking it: skew
    assert datasets.lacks(V.parse("1.30.1"), V.parse("2.22.5"), "sqlite") == (
        "MLflow 1.30.1 has no log_input (since 2.4.0)"
    )


def test_a_store_without_the_feature_skips_only_on_that_backend() -> None:
    registry = scenarios.builtin()["registry"]
    assert registry.lacks(V.parse("2.22.5"), V.parse("1.30.1"), "sqlite") is None
    assert registry.lacks(V.parse("2.22.5"), V.parse("1.30.1"), "file") == (
        "MLflow 1.30.1 has no file_store_registry (since 2.0.0), which the file store needs for this scenario"
    )
    assert registry.lacks(V.parse("1.30.1"), V.parse("2.22.5"), "file") is None


def test_user_scripts_run_through_the_script_adapter(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    (chosen,) = scenarios.resolve((), (str(script),))
    assert chosen.name == "script:train.py"
    assert chosen.path.name == "script.py" and chosen.options == {"script": str(script)}
    assert [s.name for s in scenarios.resolve(("search", "quickstart"))] == ["search", "quickstart"]


def test_a_costly_scenario_is_known_but_not_in_the_default_selection() -> None:
    named_only = ("assessments", "metric_pages", "models", "prompts", "traces")
    for name in named_only:
        assert not scenarios.builtin()[name].default
        assert name in scenarios.all_names() and name not in scenarios.default_names()
    assert scenarios.default_names() == tuple(n for n in scenarios.all_names() if n not in named_only)


def test_scenario_scripts_parse_on_the_oldest_python_a_client_runs() -> None:
    """Scenario scripts run in MLflow 1.30.1 venvs, on Python 3.8: its grammar must accept them."""
    import ast

    from harness.paths import SCENARIOS_DIR

    for path in sorted(SCENARIOS_DIR.glob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


def _common():  # type: ignore[no-untyped-def]
    """scenarios/common.py, imported with a stand-in for mlflow (the helpers tested here are pure)."""
    import importlib.util
    import sys
    import types

    from harness.paths import SCENARIOS_DIR

    fake = types.ModuleType("mlflow")
    tracking = types.ModuleType("mlflow.tracking")
    tracking.MlflowClient = object  # type: ignore[attr-defined]
    fake.tracking = tracking  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("mlflow", "mlflow.tracking")}
    sys.modules.update({"mlflow": fake, "mlflow.tracking": tracking})
    try:
        spec = importlib.util.spec_from_file_location("scenario_common", SCENARIOS_DIR / "common.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_floats_survive_json_and_compare_exactly() -> None:
    import json
    import math

    from harness.verify import diff

    num = _common().num
    values = [math.nan, math.inf, -math.inf, -2.5, 1e-300, 0.30000000000000004, 1.2345678901234567e17]
    encoded = json.loads(json.dumps([num(v) for v in values]))
    assert diff([num(v) for v in values], encoded) == []  # NaN equals NaN once canonical
    assert [float(e["float"]) for e in encoded][1:] == values[1:] and math.isnan(float(encoded[0]["float"]))
    # What a SQL store does to infinity, and a last-digit change, are differences.
    assert diff(num(math.inf), num(1.7976931348623157e308)) == [
        "float: '1.7976931348623157e+308', expected 'inf'"
    ]
    assert diff(num(0.30000000000000004), num(0.3)) == ["float: '0.3', expected '0.30000000000000004'"]


def test_a_generated_time_outside_the_write_window_is_implausible() -> None:
    common = _common()
    window = common.Window()
    window.check("run.info.start_time", window.start)  # inside: fine
    window.check("run.info.end_time", None)  # not set (a running run): fine
    with pytest.raises(AssertionError, match=r"implausible run\.info\.start_time"):
        window.check("run.info.start_time", window.start - common.CLOCK_SLACK_MS - 60_000)
    closed = window.close()
    with pytest.raises(AssertionError, match="outside the write step's window"):
        window.check("experiment.creation_time", closed["end"] + common.CLOCK_SLACK_MS + 60_000)


def test_what_the_client_sent_is_laid_over_the_writers_snapshot() -> None:
    common = _common()
    snapshot = {"info": {"run_id": "r1", "status": "RUNNING", "start_time": 5},
                "tags": {"mlflow.user": "me", "scratch": "x", "team": "old"}}  # fmt: skip
    sent = {"info": {"status": "FINISHED"}, "tags": {"team": "a", "scratch": common.ABSENT}}
    assert common.expect(snapshot, sent) == {
        "info": {"run_id": "r1", "status": "FINISHED", "start_time": 5},  # generated fields kept
        "tags": {"mlflow.user": "me", "team": "a"},  # sent wins; a deleted tag must be absent
    }


def test_a_metric_history_is_a_canonical_multiset() -> None:
    common = _common()

    class M:
        def __init__(self, step: int, ts: int, value: float) -> None:
            self.step, self.timestamp, self.value = step, ts, value

    a = common.history_points([M(2, 20, 0.5), M(0, 0, float("nan")), M(2, 10, 0.25)])
    b = common.history_points([M(2, 10, 0.25), M(2, 20, 0.5), M(0, 0, float("nan"))])
    assert a == b == [[0, 0, {"float": "nan"}], [2, 10, {"float": "0.25"}], [2, 20, {"float": "0.5"}]]
    long = [[i, i, {"float": "1.0"}] for i in range(common.DIGEST_HISTORY_OVER + 1)]
    view = common.history_view(long)
    changed = [*long[:-1], [0, 0, {"float": "1.0"}]]
    assert view["points"] == len(long) and view != common.history_view(changed)
