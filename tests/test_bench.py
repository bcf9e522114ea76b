"""The benchmark's arithmetic and its honesty rules, then the bench itself on one small real cell.

Its figures are read by people, never asserted: what is asserted is what it counts and sums (server starts
by kind from a cell's checks x measured medians; every record's seconds), when it withholds a figure (a
naive cell whose verdicts differ, a matrix with fail or error cells) and the shape of its last line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness import bench
from harness.bench import StartKey
from harness.specs import parse_path
from tests.conftest import REPO

LINE = re.compile(
    r"^bench: wall=\d+ cli_wall=\d+ floor=\d+ ratio=(\d+\.\d\d|n/a) "
    r"naive_speedup=(\d+\.\dx|n/a) peak_rss=\d+$"
)


def check(name: str, phase: str, status: str = "pass", detail: str = "", **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "phase": phase,
        "status": status,
        "detail": detail,
        "client": kw.get("client"),
        "server": kw.get("server"),
        "scenario": kw.get("scenario"),
        "seconds": kw.get("seconds", 0.0),
        "logs": kw.get("logs", []),
    }


def a_cell(
    backend: str = "sqlite", versions: tuple[str, str] = ("2.22.5", "3.17.2"), **kw: Any
) -> dict[str, Any]:
    """A cell's results as harness/cell.py writes them (check names and detail wording), FROM -> TO."""
    old, new = versions
    checks = [
        check("env", "env", detail=f"MLflow {old} on Python 3.11.9 (reused): mlflow-{old}-py3.11-x"),
        check(
            "server-start",
            "before",
            server=old,
            detail="http://127.0.0.1:1 (artifacts: proxied); created the schema at 0584bdc529eb",
        ),
        check("write", "before", client=old, server=old, scenario="quickstart", seconds=0.5),
        check(
            "unupgraded-start",
            "upgrade",
            server=new,
            detail="migrated the store itself on start: 0584bdc529eb -> dc11669786a5; 12 rows kept",
        ),
        check("db-upgrade", "upgrade", server=new, seconds=4.0),
        check(
            "schema-drift", "upgrade", server=new, detail="same as a fresh install; reference made in 9.0s"
        ),
        check("server-start", "after", server=new, detail="http://127.0.0.1:2 (artifacts: proxied)"),
        check(
            "rollback-start",
            "rollback",
            server=old,
            detail="refused the upgraded store as expected: server exited: Detected out-of-date",
        ),
        check("server-start", "rollback", server=old, detail="http://127.0.0.1:3 (artifacts: proxied)"),
        check("restore-read", "rollback", "skip", "no acknowledged writes", client=old, server=old),
    ]
    return {
        "id": f"{backend}:{old}->{new}",
        "backend": backend,
        "path": [old, new],
        "status": "pass",
        "dir": f"{backend}_{old}_to_{new}",
        "checks": checks,
        "timings": {},
        **kw,
    }


# -- the floor: starts by kind, counted from the cells' checks, times measured medians ---------------------
def test_each_server_start_of_a_cell_is_counted_by_its_kind_from_its_checks() -> None:
    starts = bench.recorded_starts(a_cell())
    assert starts == [
        (StartKey("sqlite", "2.22.5", None), "fresh"),  # before
        (StartKey("sqlite", "3.17.2", "2.22.5"), "migrated"),  # the TO server on the un-upgraded store
        (StartKey("sqlite", "3.17.2", None), "fresh"),  # the schema reference, made on a cold cache
        (StartKey("sqlite", "3.17.2", "3.17.2"), "existing"),  # after
        (StartKey("sqlite", "2.22.5", "3.17.2"), "refused"),  # rollback probe
        (StartKey("sqlite", "2.22.5", "2.22.5"), "existing"),  # the restored backup
    ]
    # A cached schema reference starts nothing; what the timeline plans is then exactly what was recorded.
    cached = a_cell()
    cached["checks"][5]["detail"] = "same as a fresh install"
    assert [k for k, _ in bench.recorded_starts(cached)] == bench.planned_starts(
        parse_path("2.22.5:3.17.2"), "sqlite"
    )


def test_a_multi_hop_cell_probes_each_hop_on_the_previous_versions_schema() -> None:
    planned = bench.planned_starts(parse_path("1.30.1:2.22.5:3.17.2"), "postgres")
    assert StartKey("postgres", "2.22.5", "1.30.1") in planned
    assert StartKey("postgres", "3.17.2", "2.22.5") in planned
    assert StartKey("postgres", "1.30.1", "3.17.2") in planned  # rollback: on the last version's schema
    cell = a_cell("postgres", ("1.30.1", "3.17.2"))
    cell["path"] = ["1.30.1", "2.22.5", "3.17.2"]
    cell["checks"][3]["phase"] = "upgrade-2"
    assert (StartKey("postgres", "3.17.2", "2.22.5"), "migrated") in bench.recorded_starts(cell)


def test_the_floor_is_counts_times_measured_medians_summed_over_every_cell() -> None:
    data = {"cells": [a_cell(), a_cell(), a_cell("postgres")]}
    counts, seen = bench.start_counts(data)
    assert counts[StartKey("sqlite", "2.22.5", None)] == 2
    assert counts[StartKey("sqlite", "3.17.2", None)] == 2  # the two schema references
    assert counts[StartKey("postgres", "2.22.5", "3.17.2")] == 1
    assert seen[StartKey("sqlite", "2.22.5", "3.17.2")] == {"refused"}
    medians = {
        k: float(len(k.version) + (0.5 if k.on is None else 0.0) + (k.backend == "postgres")) for k in counts
    }
    # Every key is a 6-character version: 6 s a start, +0.5 on an empty store, +1 on postgres.
    expected = 2 * (6 * 6 + 2 * 0.5) + (6 * 7 + 2 * 0.5)
    total, missing = bench.floor_seconds(counts, medians)
    assert total == pytest.approx(expected) and missing == []
    del medians[StartKey("postgres", "2.22.5", "3.17.2")]  # a kind the matrix made but nobody measured
    total, missing = bench.floor_seconds(counts, medians)
    assert total == pytest.approx(expected - 7) and missing == [StartKey("postgres", "2.22.5", "3.17.2")]


def test_floor_arithmetic_weighs_each_kind_by_its_own_median() -> None:
    fresh, refused = StartKey("sqlite", "3.17.2", None), StartKey("sqlite", "2.22.5", "3.17.2")
    samples = {
        fresh: bench.Sample("fresh", [9.0, 12.0, 10.0]),
        refused: bench.Sample("refused", [5.0, 4.0, 7.0]),
    }
    medians = {k: s.median for k, s in samples.items()}
    assert medians == {fresh: 10.0, refused: 5.0}
    assert bench.floor_seconds(Counter({fresh: 3, refused: 2}), medians) == (40.0, [])


# -- the work figure: every record --------------------------------------------------------------------------
def test_work_sums_every_record_of_every_step_failed_ones_included(tmp_path: Path) -> None:
    cell = a_cell()
    logs = tmp_path / "cells" / cell["dir"] / "logs"
    logs.mkdir(parents=True)
    # One read step of two records of one scenario: the second record failed, so the check kept only the
    # first one's seconds; two scenarios' write checks share one step output (counted once).
    (logs / "after-read-2.22.5.json").write_text(
        json.dumps(
            {
                "ok": True,
                "results": {
                    "before/2.22.5/quickstart": {"ok": True, "seconds": 1.25},
                    "after/2.22.5/quickstart": {"ok": False, "seconds": 2.5},
                },
            }
        )
    )
    (logs / "after-write-2.22.5.json").write_text(
        json.dumps(
            {
                "ok": True,
                "results": {
                    "quickstart": {"ok": True, "seconds": 0.5},
                    "search": {"ok": True, "seconds": 0.75},
                },
            }
        )
    )
    read = ["logs/after-read-2.22.5.log", "logs/after-read-2.22.5.json"]
    write = ["logs/after-write-2.22.5.log", "logs/after-write-2.22.5.json"]
    cell["checks"] += [
        check(
            "read",
            "after",
            "fail",
            client="2.22.5",
            server="3.17.2",
            scenario="quickstart",
            seconds=1.25,
            logs=read,
        ),
        check(
            "write", "after", client="2.22.5", server="3.17.2", scenario="quickstart", seconds=0.5, logs=write
        ),
        check(
            "write", "after", client="2.22.5", server="3.17.2", scenario="search", seconds=0.75, logs=write
        ),
        check("db-upgrade", "upgrade-2", server="3.17.2", seconds=6.0),
    ]
    data = {"cells": [cell]}
    # before/write (0.5, its output absent: its check's seconds) + the read's two records + the write step
    assert bench.mlflow_work(data, tmp_path) == {"client-calls": 0.5 + 3.75 + 1.25, "db-upgrade": 10.0}
    # Without the run's directory: every check's own seconds (each check counted, none only the last)
    assert bench.mlflow_work(data) == {"client-calls": 0.5 + 1.25 + 0.5 + 0.75, "db-upgrade": 10.0}


# -- verdicts and what the line withholds -------------------------------------------------------------------
def test_a_naive_cell_whose_verdicts_differ_prints_no_speedup() -> None:
    ours, theirs = a_cell(), a_cell()
    assert bench.verdict_differences(ours, theirs) == []
    theirs["checks"][4]["status"] = "fail"  # planted: the naive run's db-upgrade failed
    diffs = bench.verdict_differences(ours, theirs)
    assert diffs == ["upgrade db-upgrade 3.17.2: ['pass'] vs ['fail']"]
    del theirs["checks"][2]  # and one check is absent from it
    assert any("absent" in d for d in bench.verdict_differences(ours, theirs))
    line, why = bench.decide(100.0, 180.0, 120.0, 900.0, [], 1000.0, [f"verdicts differ ({len(diffs)})"])
    assert LINE.match(line) and "naive_speedup=n/a" in line and "ratio=0.83" in line
    assert why == ["naive_speedup=n/a: verdicts differ (1)"]
    line, why = bench.decide(100.0, 180.0, 120.0, 900.0, [], 1000.0, [])
    assert "naive_speedup=10.0x" in line and why == []


def test_a_matrix_with_a_fail_or_error_cell_prints_no_ratio_and_says_why() -> None:
    data = {"cells": [a_cell(), a_cell("postgres", status="error")]}
    bad = bench.bad_cells(data)
    assert bad == ["postgres:2.22.5->3.17.2 (error)"]
    line, why = bench.decide(100.0, 180.0, 120.0, 900.0, bad, 1000.0, [])
    assert "ratio=n/a" in line and "naive_speedup=n/a" in line and LINE.match(line)
    assert why[0] == "ratio=n/a: the matrix has fail/error cells: postgres:2.22.5->3.17.2 (error)"


def test_the_line_format() -> None:
    line = bench.bench_line(245.4, 490.6, 123.2, 245.4 / 123.2, 8.04, 3021.7)
    assert line == "bench: wall=245 cli_wall=491 floor=123 ratio=1.99 naive_speedup=8.0x peak_rss=3022"
    line, _ = bench.decide(60.0, 120.0, 80.0, 512.0, [], None, [])
    assert line == "bench: wall=60 cli_wall=120 floor=80 ratio=0.75 naive_speedup=n/a peak_rss=512"
    assert LINE.match(line)


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "nope"],
        ["--path", "2.22.5:zzz"],
        ["--path", "2.22.5:3.17.2", "--naive", "sqlite:1.30.1:2.22.5"],
        ["-n", "0"],
        ["--scenarios", "nope"],
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlflow-compat-bench: error:")


# -- the bench itself, on one small real cell ----------------------------------------------------------------
@pytest.mark.cell
def test_bench_runs_and_writes_its_record(tmp_path: Path) -> None:
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("mlflow-compat-bench-*"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.bench",
            "--backend",
            "sqlite",
            "--path",
            "2.22.5:3.17.2",
            "--scenarios",
            "quickstart",
            "--no-naive",
            "--no-new-envs",
            "-n",
            "1",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert LINE.match(lines[-1]), lines[-1]
    assert "naive_speedup=n/a" in lines[-1] and "ratio=n/a" not in lines[-1]
    assert any("floor: measuring server starts" in line and "done in" in line for line in lines)
    (record,) = [p for p in (tmp_path / "bench").glob("*.json") if not p.name.endswith("matrix.json")]
    data = json.loads(record.read_text())
    matrix = json.loads(record.with_name(f"{record.stem}-matrix.json").read_text())
    assert [c["id"] for c in matrix["cells"]] == ["sqlite:2.22.5->3.17.2"]
    assert data["matrix"]["statuses"] == data["matrix"]["cli_statuses"] == {"sqlite:2.22.5->3.17.2": "pass"}
    # Every kind of start the cell made was measured 3 times, and counted as often as the cell made it.
    starts = {(s["version"], s["on"]): s for s in data["floor"]["starts"]}
    assert {k: s["kind"] for k, s in starts.items()} == {
        ("2.22.5", None): "fresh",
        ("2.22.5", "2.22.5"): "existing",
        ("3.17.2", None): "fresh",
        ("3.17.2", "3.17.2"): "existing",
        ("3.17.2", "2.22.5"): "migrated",
        ("2.22.5", "3.17.2"): "refused",
    }
    assert all(len(s["seconds"]) == 3 and s["median"] > 0 for s in starts.values())
    assert starts[("2.22.5", None)]["count"] == 1 and starts[("2.22.5", "2.22.5")]["count"] == 1
    assert data["floor"]["not_measured"] == []
    assert data["work"]["client-calls"] > 0 and data["work"]["db-upgrade"] > 0
    assert data["matrix"]["peak_rss_mib"] > 0 and data["matrix"]["cli_wall"] > 0
    assert set(temp.glob("mlflow-compat-bench-*")) <= before, "its scratch directory is removed"


def test_start_kinds_sort_with_the_empty_store_first() -> None:
    keys = [StartKey("sqlite", "3.17.2", "2.22.5"), StartKey("sqlite", "3.17.2", None),
            StartKey("postgres", "2.22.5", "2.22.5"), StartKey("sqlite", "2.22.5", None)]  # fmt: skip
    assert sorted(keys) == [keys[2], keys[3], keys[1], keys[0]]
