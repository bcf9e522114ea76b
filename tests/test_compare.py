import json
from pathlib import Path

import pytest

from harness.compare import compare, merge
from harness.results import CellResult, Check, ExitCode, RunResult, Status
from tests.conftest import run_cli


def run(run_id: str, **cells: list[tuple[str, Status]]) -> RunResult:
    results = []
    for cid, checks in cells.items():
        cell = CellResult(id=cid.replace("_", ":"), backend=cid.split("_")[0], runtime="local",
                          path=["1.30.1", "2.22.5"], clients=["1.30.1", "2.22.5"])  # fmt: skip
        for name, status in checks:
            cell.add(Check(name, "after", status, client="1.30.1", server="2.22.5", scenario="quickstart"))
        cell.finish()
        results.append(cell)
    return RunResult(run_id, "2026-11-25T00:00:00+00:00", "2026-11-25T01:00:00+00:00", "0", {}, results)


def test_changes_list_new_failures_first() -> None:
    ok, bad = Status.PASS, Status.FAIL
    before = run("night-1", sqlite_a=[("read", ok), ("write", bad)], file_a=[("read", ok)])
    after = run("night-2", sqlite_a=[("read", bad), ("write", ok)], mysql_a=[("read", ok)])
    changes = compare(before, after)
    assert changes.previous == "night-1"
    listed = [(c.what, c.was, c.now) for c in changes.items]
    assert listed[0] == ("sqlite:a after/read quickstart (client 1.30.1 -> server 2.22.5)", "pass", "fail")
    assert set(listed[1:]) == {
        ("cell file:a", "pass", "absent"),
        ("cell mysql:a", "absent", "pass"),
        ("sqlite:a after/write quickstart (client 1.30.1 -> server 2.22.5)", "fail", "pass"),
    }
    assert compare(after, after).items == []


def test_merge_joins_shards_and_refuses_overlap() -> None:
    one, two = run("s1", sqlite_a=[("read", Status.PASS)]), run("s2", file_a=[("read", Status.FAIL)])
    merged = merge([one, two], "merged")
    assert [c.id for c in merged.cells] == ["file:a", "sqlite:a"] and merged.exit_code() == 1
    try:
        merge([one, one], "m")
    except ValueError as exc:
        assert "sqlite:a is in more than one" in str(exc)
    else:
        raise AssertionError("overlapping shards must be refused")


def sharded(run_id: str, label: str, **cells: list[tuple[str, Status]]) -> RunResult:
    result = run(run_id, **cells)
    result.options = {"shard": {"value": label, "source": "command line"}}
    return result


def test_a_shard_that_produced_nothing_is_not_run_and_fails_the_merge() -> None:
    ok = [("read", Status.PASS)]
    one, two, three = sharded("s1", "1/3", sqlite_a=ok), sharded("s2", "2/3", file_a=ok), sharded("s3", "3/3")
    whole = merge([one, two, three], "m")
    assert whole.not_run == [] and whole.exit_code() == ExitCode.OK
    assert whole.options["shard"]["value"] == "1/3, 2/3, 3/3"
    # Shard 2's directory was named but held nothing: listed by its directory, and by its place in 1..N.
    gone = merge(
        [one, three], "m", missing=["shards/shard-2: no results.json (the shard produced no results)"]
    )
    assert gone.not_run == [
        "shards/shard-2: no results.json (the shard produced no results)",
        "shard 2/3: no results among the runs merged",
    ]
    assert [c.id for c in gone.cells] == ["sqlite:a"] and gone.exit_code() == ExitCode.INFRA_ONLY
    # Not even named (a glob that found only what exists): the shards present still tell what is missing.
    assert merge([two], "m").not_run == [
        "shard 1/3: no results among the runs merged",
        "shard 3/3: no results among the runs merged",
    ]
    # A failure in a shard that ran still outranks the missing one.
    failed = sharded("s1", "1/3", sqlite_a=[("read", Status.FAIL)])
    assert merge([failed, two], "m").exit_code() == ExitCode.FAILED
    # No shard produced anything: an empty merge that still fails, with its time given.
    nothing = merge([], "m", missing=["a: no such directory", "b: empty directory"], when="2026-11-28T00:00Z")
    assert nothing.cells == [] and nothing.not_run == ["a: no such directory", "b: empty directory"]
    assert nothing.started == nothing.ended == "2026-11-28T00:00Z"
    assert nothing.exit_code() == ExitCode.INFRA_ONLY


def test_merge_refuses_shards_of_different_splits_and_a_shard_twice() -> None:
    with pytest.raises(ValueError, match=r"sharded differently \(--shard I/N with N in \[2, 3\]\)"):
        merge([sharded("s1", "1/2"), sharded("s2", "2/3")], "m")
    with pytest.raises(ValueError, match="shard 1/2 is merged twice"):
        merge([sharded("s1", "1/2"), sharded("again", "1/2")], "m")


def write_run(directory: Path, result: RunResult) -> Path:
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(result.to_json()))
    return directory


def test_report_merge_names_every_shard_that_produced_nothing(tmp_path: Path) -> None:
    """The command the nightly workflow runs: each expected shard named, whatever it holds."""
    shards = tmp_path / "shards"
    one = write_run(shards / "shard-1" / "run-1", sharded("s1", "1/4", sqlite_a=[("read", Status.PASS)]))
    (shards / "shard-1" / "latest").symlink_to(one.name)  # a results directory, as --results-dir writes it
    write_run(shards / "shard-2" / "run-2", sharded("s2", "2/4", file_a=[("read", Status.PASS)]))  # no link
    (shards / "shard-3").mkdir()  # uploaded, but empty
    write_run(shards / "shard-5", sharded("s5", "1/1"))  # a run directory itself, of another split
    out = tmp_path / "nightly"
    names = [str(shards / f"shard-{i}") for i in (1, 2, 3, 4)]  # shard-4: its artifact never arrived
    proc = run_cli("report", "--merge", *names, str(shards / "shard-5"), "--out", str(out), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # shards of 4 and of 1 do not make one run
    assert "sharded differently (--shard I/N with N in [1, 4])" in proc.stderr and not out.exists()
    proc = run_cli("report", "--merge", *names, "--out", str(out), timeout=120)
    assert proc.returncode == ExitCode.INFRA_ONLY, proc.stdout + proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert {c["id"] for c in data["cells"]} == {"sqlite:a", "file:a"}
    assert data["not_run"] == [
        f"{names[2]}: empty directory (the shard produced no results)",
        f"{names[3]}: no such directory (the shard produced no results)",
        "shard 3/4: no results among the runs merged",
        "shard 4/4: no results among the runs merged",
    ]
    assert data["exit_code"] == ExitCode.INFRA_ONLY
    report = (out / "report.md").read_text()
    for entry in data["not_run"]:
        assert f"| `{entry}` | not run |" in report
        assert f"mlflow-compat: not run: {entry}" in proc.stderr
    # Nothing arrived at all: still a report, still a failing verdict.
    proc = run_cli("report", "--merge", names[3], "--out", str(tmp_path / "none"), timeout=120)
    assert proc.returncode == ExitCode.INFRA_ONLY, proc.stdout + proc.stderr
    assert "| `" + names[3] + ": no such directory" in (tmp_path / "none" / "report.md").read_text()
