import pytest
from packaging.version import Version

from harness.versions import MlflowVersion, capability_names

V = MlflowVersion.parse


def test_capabilities_answer_from_data() -> None:
    assert not V("1.22.0").supports_serve_artifacts()
    assert V("1.23.0").supports_serve_artifacts()
    assert not V("3.12.0").needs_file_store_opt_in()
    assert V("3.13.0").needs_file_store_opt_in()
    assert V("3.13.0rc1").needs_file_store_opt_in()  # a pre-release of a version has its features
    assert not V("3.13.99").can_upgrade_empty_db() and V("3.14.0").can_upgrade_empty_db()


def test_run_names_arrived_in_1_30() -> None:
    """create_run(run_name=) and update_run(name=): not in the 1.20.2 to 1.29.0 wheels, in 1.30.1's."""
    assert V("1.29.0").lacks(("run_name_api",)) == "MLflow 1.29.0 has no run_name_api (since 1.30.0)"
    assert V("1.20.2").lacks(("run_name_api",)) and not V("1.30.0").lacks(("run_name_api",))
    assert V("3.17.2").supports("run_name_api")


def test_unknown_capability_is_an_error() -> None:
    with pytest.raises(KeyError, match="known"):
        V("2.0.1").supports("time_travel")
    assert "serve_artifacts" in capability_names()


def test_recipes() -> None:
    drivers = ["psycopg2-binary", "PyMySQL[rsa]"]
    old = ["sqlalchemy<1.4", "protobuf<4", "numpy<1.24"]
    assert V("1.22.0").install_requirements() == ["setuptools<70", "sqlalchemy<2.1", *old, *drivers]
    assert V("1.30.1").install_requirements() == ["setuptools<70", "sqlalchemy<2.1", *drivers]
    assert V("2.0.1").install_requirements() == ["setuptools<70", "sqlalchemy<2.1", *drivers]
    # 1.x through 2.15 import pkg_resources (seen failing without it: 2.10.2 ... 2.15.1; 2.16.2 imports)
    assert V("2.13.2").install_requirements() == ["setuptools<70", "sqlalchemy<2.1", *drivers]
    otel = "opentelemetry-sdk<1.45"
    assert V("2.15.1").install_requirements() == ["setuptools<70", "sqlalchemy<2.1", otel, *drivers]
    assert V("2.16.2").install_requirements() == ["sqlalchemy<2.1", otel, *drivers]
    # 2.x tracing breaks on opentelemetry-sdk 1.45 (its span processor skips SimpleSpanProcessor.__init__)
    assert V("2.22.5").install_requirements() == ["sqlalchemy<2.1", "opentelemetry-sdk<1.45", *drivers]
    assert V("3.8.1").install_requirements() == ["sqlalchemy<2.1", *drivers]
    assert V("3.9.0").install_requirements() == drivers


def test_python_caps_and_broken_releases() -> None:
    assert V("1.30.1").python_max() == Version("3.11")
    assert V("3.17.2").python_max() is None
    assert "yanked" in (V("2.0.0").broken_reason() or "")
    assert V("2.0.1").broken_reason() is None
