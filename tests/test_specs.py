from pathlib import Path

import pytest

from harness.specs import SpecError, SpecKind, parse_path, parse_spec
from tests.conftest import make_wheel


def test_release_spec() -> None:
    spec = parse_spec("2.22.5")
    assert spec.kind is SpecKind.RELEASE
    assert spec.label == "2.22.5"
    assert spec.requirements() == ["mlflow==2.22.5"]


def test_latest_must_be_resolved_before_install() -> None:
    spec = parse_spec("latest")
    assert spec.kind is SpecKind.LATEST and spec.version is None
    with pytest.raises(SpecError):
        spec.requirements()


@pytest.mark.parametrize("text", ["", "two", "2.x", "2.22.5;rm", "v2.0", "2.22.5.1.9"])
def test_bad_specs(text: str) -> None:
    with pytest.raises(SpecError):
        parse_spec(text)


def test_wheel_and_wheel_dir(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "mlflow", "3.17.2", [])
    make_wheel(tmp_path, "mlflow-skinny", "3.17.2", [])
    make_wheel(tmp_path, "mlflow-tracing", "3.17.2", [])
    one = parse_spec(str(wheel))
    assert one.kind is SpecKind.WHEEL and str(one.version) == "3.17.2" and one.label == "3.17.2@wheel"
    many = parse_spec(str(tmp_path))
    assert many.kind is SpecKind.WHEEL_DIR
    assert sorted(w.name.split("-")[0] for w in many.wheels) == ["mlflow", "mlflow_skinny", "mlflow_tracing"]
    assert many.identity() != one.identity()


def test_wheel_dir_without_mlflow(tmp_path: Path) -> None:
    make_wheel(tmp_path, "mlflow-skinny", "3.17.2", [])
    with pytest.raises(SpecError, match="exactly one mlflow wheel"):
        parse_spec(str(tmp_path))


def test_missing_path() -> None:
    with pytest.raises(SpecError, match="no such wheel"):
        parse_spec("./no/such/dir")


def test_paths() -> None:
    assert [s.label for s in parse_path("1.30.1:2.22.5:3.17.2")] == ["1.30.1", "2.22.5", "3.17.2"]
    for bad in ("1.30.1", "1.30.1:", ":2.22.5", "3.17.2:2.22.5"):
        with pytest.raises(SpecError):
            parse_path(bad)
