from __future__ import annotations

from pathlib import Path

from harness import durations
from harness.plan import plan_cells
from harness.results import CellResult, Status
from harness.specs import parse_path


def cells():
    paths = [parse_path(p) for p in ("1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2")]
    return plan_cells(["sqlite", "postgres"], paths, None, "local", ("quickstart",), ())


def result(cell_id: str, seconds: float, status: Status = Status.PASS, runtime: str = "local") -> CellResult:
    backend = cell_id.split(":")[0]
    return CellResult(id=cell_id, backend=backend, runtime=runtime, path=[], clients=[], status=status,
                      seconds=seconds)  # fmt: skip


def test_longest_first_by_the_last_run_and_unknown_cells_first(tmp_path: Path) -> None:
    plan = cells()
    assert [c.id for c in durations.longest_first(plan, durations.load(tmp_path))] == [c.id for c in plan]
    durations.remember(
        [
            result("sqlite:1.30.1->2.22.5", 84),
            result("postgres:1.30.1->2.22.5", 80),
            result("sqlite:2.22.5->3.17.2", 117),
            result("postgres:2.22.5->3.17.2", 116),
            result("sqlite:1.30.1->3.17.2", 92, Status.XFAIL),
            result("postgres:1.30.1->3.17.2", 3, Status.ERROR),  # stopped early: not its duration
            result("sqlite:2.22.5->3.17.2", 1, runtime="docker"),  # another runtime's record
        ],
        tmp_path,
    )
    ordered = [c.id for c in durations.longest_first(plan, durations.load(tmp_path))]
    assert ordered == [
        "postgres:1.30.1->3.17.2",  # never completed: unknown, so first
        "sqlite:2.22.5->3.17.2",
        "postgres:2.22.5->3.17.2",
        "sqlite:1.30.1->3.17.2",
        "sqlite:1.30.1->2.22.5",
        "postgres:1.30.1->2.22.5",
    ]
    durations.remember([result("sqlite:1.30.1->2.22.5", 200)], tmp_path)
    assert durations.longest_first(plan, durations.load(tmp_path))[1].id == "sqlite:1.30.1->2.22.5"


def test_an_unreadable_record_orders_nothing(tmp_path: Path) -> None:
    (tmp_path / durations.FILE).write_text("{not json")
    assert durations.load(tmp_path) == {}
