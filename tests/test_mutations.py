"""The mutation suite's table against the real wheels it edits, the candidate builder, the runner's verdicts,
and a few mutants gated for real beside the control (the untouched wheels, rebuilt the same way)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import mutants
from harness.mutants import ALL_WHEELS, CONTROL, KINDS, Change, Edit, Layer, MutantError
from tests.conftest import REPO

BASE = "3.17.2"


@pytest.fixture(scope="module")
def release() -> Path:
    """MLflow 3.17.2's own wheels from the index (downloaded once, cached)."""
    return mutants.download_release(BASE)


def test_the_table_has_a_dozen_distinct_kinds_over_every_layer_and_change() -> None:
    ids = [k.id for k in KINDS]
    assert len(ids) == len(set(ids)) and CONTROL.id not in ids
    assert len(KINDS) >= 12
    assert {k.layer for k in KINDS} == set(Layer)
    assert {k.change for k in KINDS} == set(Change)
    assert all(k.edits and k.scenarios and k.breaks for k in KINDS)
    assert len({k.digest() for k in KINDS}) == len(KINDS)


def test_every_edit_finds_its_text_once_in_each_wheel_that_ships_the_file(
    release: Path, request: pytest.FixtureRequest
) -> None:
    wheels = {mutants._dist(w): zipfile.ZipFile(w) for w in release.glob("*.whl")}
    request.addfinalizer(lambda: [zf.close() for zf in wheels.values()])
    assert set(wheels) == set(ALL_WHEELS)
    for kind in KINDS:
        for edit in kind.edits:
            for dist, zf in wheels.items():
                ships = edit.path in zf.namelist()
                assert ships == (dist in edit.wheels), (kind.id, dist, edit.path)
                if ships:
                    text = zf.read(edit.path).decode()
                    assert text.count(edit.find) == 1, (kind.id, dist, edit.path)
                    changed = text.replace(edit.find, edit.replace)
                    assert changed != text
                    compile(changed, edit.path, "exec")  # the mutant still imports: its bug is behaviour


def _record(zf: zipfile.ZipFile) -> dict[str, str]:
    (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    return {line.split(",")[0]: line.split(",")[1] for line in zf.read(name).decode().splitlines()}


def test_a_built_candidate_has_the_edit_in_every_copy_and_a_matching_record(
    release: Path, tmp_path: Path
) -> None:
    kind = mutants.kinds_by_id()["latest-metric-last-logged"]
    (edit,) = kind.edits
    out = mutants.build_candidate(BASE, kind.edits, tmp_path / "cand", wheels=release)
    assert sorted(mutants._dist(w) for w in out.glob("*.whl")) == sorted(ALL_WHEELS)
    for wheel in out.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(edit.path)
            assert edit.replace.encode() in data and edit.find.encode() not in data
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert _record(zf)[edit.path] == f"sha256={digest}"
    # The control is the release byte for byte, entry by entry.
    control = mutants.build_candidate(BASE, (), tmp_path / "control", wheels=release)
    for wheel in release.glob("*.whl"):
        with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(control / wheel.name) as b:
            assert a.namelist() == b.namelist()
            assert all(a.read(n) == b.read(n) for n in a.namelist())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Edit(mutants.HANDLERS, "no such text anywhere in MLflow", "x"), "occurs 0 times"),
        (Edit(mutants.HANDLERS, "import ", "x"), "times, not once"),
        (Edit(mutants.HANDLERS, "def _get_run():", "def _get_run():", ALL_WHEELS), "does not ship"),
        (Edit(mutants.REST_STORE, "    def get_run(self, run_id):", "x"), "ships"),
    ],
)
def test_an_edit_that_does_not_hold_is_refused(
    release: Path, tmp_path: Path, edit: Edit, message: str
) -> None:
    with pytest.raises(MutantError, match=message):
        mutants.build_candidate(BASE, [edit], tmp_path / "cand", wheels=release)


def _results(*statuses: str, problems: tuple[str, ...] = ()) -> dict[str, object]:
    where = {"phase": "after", "name": "read", "scenario": "quickstart", "client": "2.22.5"}
    checks = [{**where, "server": "3.17.2@wheel-dir", "status": s, "detail": f"{s} detail"} for s in statuses]
    for check in checks:
        if check["status"] == "fail" and problems:
            check["problems"] = [{"text": t, "status": "fail", "expected": None} for t in problems]
    return {"cells": [{"id": "sqlite:2.22.5->3.17.2@wheel-dir", "checks": checks}]}


def test_only_a_fail_counts_as_caught_never_an_error() -> None:
    verdict, line = mutants.classify(1, _results("pass", "fail", "error"), control=False)
    assert verdict == "caught"
    assert line.startswith(
        "caught by after/read quickstart (client 2.22.5 server 3.17.2@wheel-dir): fail detail"
    )
    verdict, line = mutants.classify(3, _results("pass", "error"), control=False)
    assert verdict == "error" and line.startswith("ERROR (only infrastructure errors: error after/read")
    assert mutants.classify(0, _results("pass", "xfail"), control=False)[0] == "missed"
    assert mutants.classify(1, _results("pass", "xpass"), control=False)[0] == "missed"
    assert mutants.classify(2, None, control=False)[0] == "error"
    assert mutants.classify(0, _results("pass"), control=True)[0] == "pass"
    verdict, line = mutants.classify(3, _results("pass", "error"), control=True)
    assert verdict == "fail" and line.startswith("FAIL: error after/read")


def test_a_difference_the_control_has_too_is_not_a_catch() -> None:
    noise = (
        "client 3.17.2 -> server 2.22.5 (before): run.inputs: missing (run 0123456789abcdef0123456789abcdef)"
    )
    control = _results("fail", problems=(noise,))
    seen = frozenset(f.finding for f in mutants.found(control))
    other_run = noise.replace("0123456789abcdef", "fedcba9876543210")
    verdict, line = mutants.classify(
        1, _results("fail", problems=(other_run,)), control=False, control_bad=seen
    )
    assert verdict == "missed" and "ones the control has too" in line
    mutant = _results("fail", problems=(other_run, "run.params.optimizer: missing (expected 'adam')"))
    verdict, line = mutants.classify(1, mutant, control=False, control_bad=seen)
    assert verdict == "caught" and line.endswith("run.params.optimizer: missing (expected 'adam')"), line


def test_an_unknown_kind_is_bad_input() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.mutants", "--kinds", "quickstart,nope"],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["mutants: unknown kind(s) quickstart, nope; see --list"]


# --- For real, one cell per gate run: from 1.30.1 (baseline and oldest), every migration up to 3.17.2's head
# runs, the 1.30.1 client meets the mutant server and the mutant client meets the 1.30.1 server.


@pytest.mark.cell
def test_the_runner_catches_a_handler_change_an_http_500_and_a_lossy_migration_and_passes_the_control(
    tmp_path: Path,
) -> None:
    """The runner as `nox -s mutations` runs it: the control (untouched wheels) and three mutants."""
    kinds = ["get-run-param-missing", "metric-history-500", "migration-latest-metrics-lost"]
    proc = subprocess.run(
        [sys.executable, "-m", "harness.mutants", "--kinds", ",".join(kinds), "--baseline", "1.30.1",
         "--oldest", "1.30.1", "-n", "1", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=3600, check=False,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[-1] == "mutations: caught=3/3 control=pass", proc.stdout + proc.stderr
    assert proc.returncode == 0
    by_kind = {line.split(" ")[0]: line for line in lines}
    assert (
        ": caught by " in by_kind["get-run-param-missing"]
        and "run.params" in by_kind["get-run-param-missing"]
    )
    assert (
        ": caught by " in by_kind["metric-history-500"] and "metric_history" in by_kind["metric-history-500"]
    )
    assert ": caught by " in by_kind["migration-latest-metrics-lost"]
    assert "metrics" in by_kind["migration-latest-metrics-lost"]  # the rows the upgrade dropped
