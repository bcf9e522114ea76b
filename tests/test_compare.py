from harness.compare import compare, merge
from harness.results import CellResult, Check, RunResult, Status


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
