from pathlib import Path

from harness import scenarios
from harness.versions import MlflowVersion as V


def test_builtin_scenarios_declare_what_they_need_without_being_imported() -> None:
    found = scenarios.builtin()
    assert next(iter(found)) == "quickstart"  # the baseline comes first
    assert set(found) == {
        "quickstart", "metric_history", "tags_and_status", "nested_and_batch", "search",
        "experiment_lifecycle", "long_values", "long_params", "artifacts", "registry", "registry_aliases",
        "datasets", "logged_models",
    }  # fmt: skip
    assert found["datasets"].requires == ("log_input",)
    assert found["registry"].store_requires == {"file": ("file_store_registry",)}
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
