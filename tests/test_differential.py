"""The gate's differential pass: the candidate's answers against the baseline's. Pure units on the canonical
form (what two fresh stores generate differently by nature is aligned; nothing else is), then a real cell:
a candidate whose server generates something else for every run, consistently, passes every read-back (it
agrees with itself) and is caught only by the differential pass."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from harness import mutants
from harness.cell import CellContext, run_cell
from harness.differential import canonical, compare
from harness.envs import EnvCache
from harness.expectations import apply, parse
from harness.plan import CellPlan, default_clients
from harness.results import CellResult, Check, Problem, Status
from harness.runtime import get_runtime
from harness.specs import parse_path
from tests.test_cells import checks

RUN_A, RUN_B = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
NESTED_A, NESTED_B = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def run(run_id: str, child: str, root: str, start: int, name: str, **extra: object) -> dict:
    return {
        "run_id": run_id,
        "window": {"start": start - 5, "end": start + 900},
        "run": {
            "info": {
                "run_id": run_id,
                "run_name": name,
                "start_time": start,
                "status": "FINISHED",
                "artifact_uri": f"{root}/artifacts/1/{run_id}/artifacts",
            },
            "tags": {"mlflow.runName": name, "mlflow.parentRunId": child, "team": "a"},
            "metric_history": {"loss": [[0, start + 10, {"float": "0.5"}]]},
            "children": {child: {"params": {"lr": "0.1"}}},
            **extra,
        },
    }


BASE = run(RUN_A, NESTED_A, "/tmp/mlflow-compat-x-base", 1_764_000_000_000, "bold-owl-12")
CAND = run(RUN_B, NESTED_B, "/tmp/mlflow-compat-x-cand", 1_764_000_555_000, "shy-cat-7")
ROOTS = {"baseline_roots": ("/tmp/mlflow-compat-x-base",), "candidate_roots": ("/tmp/mlflow-compat-x-cand",)}


def test_what_fresh_stores_generate_by_nature_is_aligned() -> None:
    """Ids (as values, inside strings, as keys), store roots, clock times and generated run names."""
    assert compare(BASE, CAND, **ROOTS) == []
    shown = canonical(BASE, ("/tmp/mlflow-compat-x-base",))
    assert shown["run"]["info"]["artifact_uri"] == "<store>/artifacts/1/<id:1>/artifacts"
    assert shown["run"]["children"] == {"<by-id>": [["<id:2>", {"params": {"lr": "0.1"}}]]}
    assert shown["run"]["info"]["start_time"] == "<time>" and shown["window"] == "<masked>"
    assert shown["run"]["tags"]["mlflow.runName"] == "<generated-name>"


def _set(where: tuple[str, ...], key: str, value: object):
    def change(record: dict) -> None:
        node = record
        for step in where:
            node = node[step]
        node[key] = value

    return change


THEN = "where the baseline returned"
CHANGES = {
    "a value": (_set(("run", "children", NESTED_B, "params"), "lr", "0.2"), f"returns '0.2' {THEN} '0.1'"),
    "a dropped tag": (lambda r: r["run"]["tags"].pop("team"), "tags.team: the candidate differs from the"),
    "a constant name": (_set(("run", "info"), "run_name", "run"), f"returns 'run' {THEN} '<generated-name>'"),
    "a wrong id": (_set(("run", "tags"), "mlflow.parentRunId", RUN_B), f"returns '<id:1>' {THEN} '<id:2>'"),
    "an extra point": (
        lambda r: r["run"]["metric_history"]["loss"].append([1, 1_764_000_555_020, {"float": "0.4"}]),
        f"returns 2 items {THEN} 1",
    ),
    "a status": (_set(("run", "info"), "status", "FAILED"), f"'FAILED' {THEN} 'FINISHED'"),
}


def test_maps_keyed_by_ids_compare_by_content_whatever_order_the_ids_sort_in() -> None:
    """Results reach the harness as JSON with sorted keys: runs keyed by random ids come in random order."""
    ids_a, ids_b = ("1" * 32, "9" * 32), ("f" * 32, "0" * 32)  # the first baseline run's id sorts first, ...
    base = {"runs": {ids_a[0]: {"status": "RUNNING"}, ids_a[1]: {"status": "FAILED"}}, "first": ids_a[0]}
    cand = {"runs": {ids_b[1]: {"status": "FAILED"}, ids_b[0]: {"status": "RUNNING"}}, "first": ids_b[0]}
    assert compare(base, cand) == []
    cand["first"] = ids_b[1]  # now names the other run
    assert compare(base, cand) == [
        "first: the candidate returns '<id:1>' where the baseline returned '<id:2>'"
    ]


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_anything_else_the_candidate_returns_differently_is_named(what: str) -> None:
    change, named = CHANGES[what]
    candidate = copy.deepcopy(CAND)
    change(candidate)
    differences = compare(BASE, candidate, **ROOTS)
    assert differences and any(named in d for d in differences), differences


def test_a_change_declaration_is_about_the_differential_check_only() -> None:
    declared = parse(
        {
            "change": [
                {
                    "id": "new-tag",
                    "error": "tags.kind: the candidate differs from the baseline: unexpected",
                    "reason": "3.18 tags every run with its kind",
                    "server": ">=3.18",
                }
            ]
        },
        "inline",
    )
    assert [(e.check, e.server) for e in declared] == [("differential", ">=3.18")]
    result = CellResult(id="x", backend="sqlite", runtime="local", path=["3.17.2", "3.18.0"], clients=[])
    check = result.add(Check("differential", "differential", Status.PASS, client="3.17.2", server="3.18.0"))
    check.problems = [
        Problem("run.tags.kind: the candidate differs from the baseline: unexpected ('x')", Status.FAIL),
        Problem("run.params.lr: the candidate returns '0.2' where the baseline returned '0.1'", Status.FAIL),
    ]
    check.settle()
    apply(result, tuple(declared))
    assert check.status is Status.FAIL and check.problems[0].status is Status.XFAIL
    assert "1 of 2 problem(s) not covered" in check.detail
    with pytest.raises(ValueError, match="drop its check key"):
        parse({"change": [{"id": "a", "check": "read", "error": "e", "reason": "r"}]}, "inline")


@pytest.mark.cell
def test_a_candidate_consistent_with_itself_is_caught_only_by_the_differential(tmp_path: Path) -> None:
    """3.17.2's own wheels with one change: runs created without a name all get the name "run" instead of a
    generated one. Every read-back agrees (the writer's own snapshot says "run"); against the baseline
    release's server, the same client calls answer otherwise."""
    kind = mutants.Kind(
        "constant-run-name", "runs created without a name are all named 'run'", mutants.Layer.STORE,
        mutants.Change.CHANGED, ("quickstart",),
        (mutants.Edit(mutants.SQL_STORE, "run_name = run_name or run_name_tag or _generate_random_name()",
                      'run_name = run_name or run_name_tag or "run"', mutants.ALL_WHEELS),),
    )  # fmt: skip
    candidate = mutants.candidate_for(kind, "3.17.2")
    specs = parse_path(f"3.17.2:{candidate}")
    plan = CellPlan("sqlite", specs, default_clients(specs), scenarios=("quickstart",), differential=True)
    ctx = CellContext(cell_dir=tmp_path / plan.slug, runtime=get_runtime("local"), envs=EnvCache(),
                      work_root=tmp_path, run_id=tmp_path.name)  # fmt: skip
    result = run_cell(plan, ctx)
    assert checks(result, Status.ERROR) == []
    failed = [c for c in result.checks if c.status is Status.FAIL]
    assert failed and {c.name for c in failed} == {"differential"}, checks(result, Status.FAIL)
    assert {c.client for c in failed} == {"3.17.2", "3.17.2@wheel-dir"}
    for check in failed:
        assert any("run_name: the candidate returns 'run' where the baseline returned '<generated-name>'"
                   in p.text for p in check.problems), check.detail  # fmt: skip
    assert [c.status for c in result.checks if c.name == "read"] and all(
        c.status is Status.PASS for c in result.checks if c.name == "read"
    )
