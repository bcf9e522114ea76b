"""The models scenario in real cells: models logged by one MLflow version, loaded and used by another.

Real wheels, real servers, real scikit-learn in each version's env (scenarios/models.py declares it in
PACKAGES). What fails across versions fails only as declared in harness/data/expectations.toml, and a model
whose predictions changed in the store fails every read that loads it, naming the record.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import expectations, fields
from harness.backends import Store
from harness.cell import CellContext, run_cell
from harness.envs import EnvCache
from harness.plan import CellPlan
from harness.results import CellResult, Status
from harness.runtime import get_runtime
from harness.specs import parse_path, parse_spec
from harness.verify import diff
from harness.versions import MlflowVersion
from tests.test_cells import run_one

SKLEARN = ("scikit-learn",)


def _models(result: CellResult, phase: str, name: str) -> dict[str, Status]:
    """{client: status} of the models checks ``name`` in ``phase``."""
    return {
        str(c.client): c.status
        for c in result.checks
        if c.scenario == "models" and c.phase == phase and c.name == name
    }


def _declared(result: CellResult) -> set[str]:
    """The declarations that covered the models checks (a check covered by several lists them all)."""
    xfail = [c for c in result.checks if c.status is Status.XFAIL and c.scenario == "models"]
    return {name for c in xfail for name in str(c.expected).split(", ")}


@pytest.mark.cell
def test_models_across_the_3_0_line(tmp_path: Path) -> None:
    """2.22.5 -> 3.17.2 on SQLite: a 2.x model loads in both clients before and after the upgrade and after
    the restore, with the writer's predictions and MLmodel; a 3.x client cannot log a model to a 2.x server,
    and a 2.x client cannot load 3.x models (runs:/ finds no files; scikit-learn saved with skops): both
    declared."""
    result = run_one(tmp_path, "sqlite", "2.22.5:3.17.2", scenarios=("quickstart", "models"), declared=True)
    assert result.status is Status.XFAIL, result.summary
    assert _declared(result) == {"3.x-log-model-needs-a-3.0-server", "2.x-client-cannot-load-3.x-models"}
    assert _models(result, "before", "write") == {"2.22.5": Status.PASS, "3.17.2": Status.XFAIL}
    assert _models(result, "before", "read") == {"2.22.5": Status.PASS, "3.17.2": Status.PASS}
    assert _models(result, "after", "write") == {"2.22.5": Status.PASS, "3.17.2": Status.PASS}
    assert _models(result, "after", "read") == {"2.22.5": Status.XFAIL, "3.17.2": Status.PASS}
    assert _models(result, "rollback", "restore-read") == {"2.22.5": Status.PASS}
    (new_reads_all,) = [
        c
        for c in result.checks
        if (c.phase, c.name, c.scenario, c.client) == ("after", "read", "models", "3.17.2")
    ]
    assert new_reads_all.detail.startswith("3 records read back exactly as written"), new_reads_all.detail
    # The 2.x reader's failure names each load that failed, by model and URI, with the loader's traceback.
    (old_reads_new,) = [
        c
        for c in result.checks
        if (c.phase, c.name, c.scenario, c.client) == ("after", "read", "models", "2.22.5")
    ]
    (problem,) = [p for p in old_reads_new.problems if p.status is not Status.PASS]
    assert problem.written_by == {"client": "3.17.2", "server": "3.17.2", "phase": "after"}
    assert "Unrecognized serialization format: skops" in problem.text
    assert "Traceback" in (old_reads_new.excerpt or "")
    for label in ("2.22.5", "3.17.2"):
        assert result.components["envs"][label]["scikit-learn"], "the env has scikit-learn, and says which"


@pytest.mark.cell
@pytest.mark.slow
def test_models_across_1_x_2_x_and_3_x(tmp_path: Path) -> None:
    """1.30.1 -> 2.22.5 -> 3.17.2 on SQLite with all three clients: newer clients load older models with their
    predictions (3.17.2 loads 1.30.1's and 2.22.5's, 2.22.5 loads 1.30.1's), and every failure across the
    2.0 and 3.0 lines is declared: 1.x registers and resolves models:/ under the removed /preview/ API and
    cannot parse a 2.x signature nor find a 3.x model's files; 2.x cannot set aliases on a 1.x server nor
    load 3.x models; 3.x cannot log a model to a pre-3.0 server."""
    specs = parse_path("1.30.1:2.22.5:3.17.2")
    plan = CellPlan("sqlite", specs, specs, scenarios=("quickstart", "models"))
    ctx = CellContext(cell_dir=tmp_path / plan.slug, runtime=get_runtime("local"), envs=EnvCache(),
                      work_root=tmp_path, run_id=tmp_path.name,
                      expectations=expectations.load(None))  # fmt: skip
    result = run_cell(plan, ctx)
    assert result.status is Status.XFAIL, result.summary
    assert _declared(result) == {
        "3.x-log-model-needs-a-3.0-server", "model-aliases-need-a-2.3-server",
        "1.x-client-registers-models-on-2.x-server", "1.x-client-resolves-models-uris-on-2.x-server",
        "1.x-client-cannot-parse-2.x-model-signatures", "1.x-client-cannot-load-3.x-models",
        "2.x-client-cannot-load-3.x-models",
    }  # fmt: skip
    assert _models(result, "before", "read") == dict.fromkeys(("1.30.1", "2.22.5", "3.17.2"), Status.PASS)
    assert _models(result, "after-2", "read") == {
        "1.30.1": Status.XFAIL, "2.22.5": Status.XFAIL, "3.17.2": Status.PASS}  # fmt: skip


_FLIP = """
import sys, cloudpickle
for path in sys.argv[1:]:
    with open(path, "rb") as fh:
        model = cloudpickle.load(fh)
    model.coef_, model.intercept_ = -model.coef_, -model.intercept_  # every predicted class flips
    with open(path, "wb") as fh:
        cloudpickle.dump(model, fh)
print(len(sys.argv) - 1)
"""


@pytest.mark.cell
def test_a_model_that_predicts_otherwise_fails_the_read(tmp_path: Path) -> None:
    """Before the upgrade, the scikit-learn model 2.22.5 logged is rewritten in the store's artifacts (same
    file, same format, negated coefficients): every read after it loads a model whose predictions differ."""
    env = EnvCache().ensure(parse_spec("2.22.5"), tmp_path / "env.log", packages=SKLEARN)

    def flip(point: str, store: Store) -> None:
        if point != "before-upgrade":
            return
        found = sorted(store.artifacts_dir.rglob("sklearn_model/model.pkl"))
        assert found, "no scikit-learn model in the store to change"
        out = subprocess.run([str(env.interpreter), "-c", _FLIP, *map(str, found)], capture_output=True,
                             text=True, check=True, env=env.environ())  # fmt: skip
        assert out.stdout.strip() == str(len(found))

    result = run_one(tmp_path, "sqlite", "2.22.5:3.17.2", tamper=flip, scenarios=("models",), declared=True)
    assert result.status is Status.FAIL
    assert _models(result, "before", "read") == {"2.22.5": Status.PASS, "3.17.2": Status.PASS}
    (new_reads_old,) = [
        c
        for c in result.checks
        if (c.phase, c.name, c.scenario, c.client) == ("after", "read", "models", "3.17.2")
    ]
    assert new_reads_old.status is Status.FAIL
    changed = [p.text for p in new_reads_old.problems if p.status is Status.FAIL]
    writer = "client 2.22.5 -> server 2.22.5 (before): "
    for route in ("runs", "version", "alias"):
        assert f"{writer}models.sklearn.routes.{route}.predictions[0]: 1, expected 0" in changed, changed
    assert all(t.startswith(writer) for t in changed), "only the changed record, named by its writer"
    assert not any("pyfunc" in t for t in changed), "the custom model was not touched"


def test_routes_a_reader_cannot_take_are_not_compared_and_say_so() -> None:
    """A reader without aliases (before 2.3) or logged models (before 3.0) does not try those URIs; the rules
    in fields.toml remove exactly those routes from both sides, with a note; every other route still
    counts."""
    view = {"predictions": [0, 1], "signature": None, "mlmodel": {"mlflow_version": "3.17.2"}}
    model = {"_kind": "model_load", "name": "m", "version": "1", "uris": {}, "routes": {}}
    model["routes"] = {"runs": view, "version": view, "alias": view, "logged": view}
    written = {"models": {"sklearn": model}}
    seen = {
        "models": {"sklearn": {**model, "routes": {"runs": view, "version": {**view, "predictions": [1, 1]}}}}
    }
    old = MlflowVersion.parse("2.2.1")
    expected, observed, notes = fields.normalise(
        written,
        seen,
        writer_client=MlflowVersion.parse("3.17.2"),
        writer_server=MlflowVersion.parse("3.17.2"),
        reader_client=old,
        reader_server=MlflowVersion.parse("3.17.2"),
        backend="sqlite",
    )
    assert sorted(expected["models"]["sklearn"]["routes"]) == ["runs", "version"]
    assert sorted(n.split(" not compared")[0] for n in notes) == [
        "model_load.routes[alias]", "model_load.routes[logged]"]  # fmt: skip
    assert diff(expected, observed) == ["models.sklearn.routes.version.predictions[0]: 1, expected 0"]
    _, kept, notes = fields.normalise(
        written,
        written,
        writer_client=MlflowVersion.parse("3.17.2"),
        writer_server=MlflowVersion.parse("3.17.2"),
        reader_client=MlflowVersion.parse("3.17.2"),
        reader_server=MlflowVersion.parse("3.17.2"),
        backend="sqlite",
    )
    assert notes == [] and sorted(kept["models"]["sklearn"]["routes"]) == [
        "alias",
        "logged",
        "runs",
        "version",
    ]
