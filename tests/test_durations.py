from __future__ import annotations

from pathlib import Path

from harness import durations
from harness.plan import CellPlan, plan_cells
from harness.results import CellResult, Status
from harness.specs import parse_path

PATHS = ("1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2")


def cells(scenarios: tuple[str, ...] = ("quickstart",), runtime: str = "local") -> list[CellPlan]:
    return plan_cells(["sqlite", "postgres"], [parse_path(p) for p in PATHS], None, runtime, scenarios, ())


def result(cell_id: str, seconds: float, status: Status = Status.PASS) -> CellResult:
    return CellResult(id=cell_id, backend=cell_id.split(":")[0], runtime="local", path=[], clients=[],
                      status=status, seconds=seconds)  # fmt: skip


def ids(plans: list[CellPlan]) -> list[str]:
    return [c.id for c in plans]


def test_longest_first_by_the_last_run_and_unknown_cells_first(tmp_path: Path) -> None:
    plan = cells()
    assert ids(durations.longest_first(plan, durations.load(tmp_path))) == ids(plan), "nothing known yet"
    durations.remember(
        plan,
        [
            result("sqlite:1.30.1->2.22.5", 84),
            result("postgres:1.30.1->2.22.5", 80),
            result("sqlite:2.22.5->3.17.2", 117),
            result("postgres:2.22.5->3.17.2", 116),
            result("sqlite:1.30.1->3.17.2", 92, Status.XFAIL),
            result("postgres:1.30.1->3.17.2", 3, Status.ERROR),  # stopped early: not its duration
        ],
        tmp_path,
    )
    known = durations.load(tmp_path)
    assert ids(durations.longest_first(plan, known)) == [
        "postgres:1.30.1->3.17.2",  # never reached a verdict: unknown, so first
        "sqlite:2.22.5->3.17.2",
        "postgres:2.22.5->3.17.2",
        "sqlite:1.30.1->3.17.2",
        "sqlite:1.30.1->2.22.5",
        "postgres:1.30.1->2.22.5",
    ]
    # Other scenarios: the same cells, so the times seen with other scenarios order them.
    more = cells(("quickstart", "search"))
    assert ids(durations.longest_first(more, known))[1:3] == [
        "sqlite:2.22.5->3.17.2",
        "postgres:2.22.5->3.17.2",
    ]
    durations.remember(more, [result("sqlite:1.30.1->2.22.5", 300)], tmp_path)
    known = durations.load(tmp_path)
    assert durations.longest_first(more, known)[1].id == "sqlite:1.30.1->2.22.5"
    assert durations.longest_first(plan, known)[1].id == "sqlite:2.22.5->3.17.2", "quickstart-only times kept"
    # Another runtime knows nothing of these.
    docker = cells(runtime="docker")
    assert ids(durations.longest_first(docker, known)) == ids(docker)


def test_an_unreadable_record_orders_nothing(tmp_path: Path) -> None:
    (tmp_path / durations.FILE).write_text("{not json")
    assert durations.load(tmp_path) == {}
