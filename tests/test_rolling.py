"""Rolling upgrades (harness/rolling.py, scenarios/workload.py): the bookkeeping of acknowledged writes and
of each server's failures as pure units, and real rolling cells on PostgreSQL (and MariaDB): the FROM server
and a workload of each client version run through `mlflow db upgrade` and the TO server's start; every
acknowledged write is read back; planted faults (a lost acknowledged write, an old server that fails once the
schema moved) are named by the checks that exist to catch them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from harness import rolling
from harness.backends import DatabaseStore, Store
from harness.cell import CellContext, run_cell
from harness.envs import EnvCache
from harness.integrity import Snapshot, Table, compare
from harness.plan import CellPlan, default_clients
from harness.results import CellResult, Check, Status
from harness.runtime import get_runtime
from harness.specs import parse_path


# -- pure units -------------------------------------------------------------------------------------------
def ack(seq: int, t: float, server: str, op: str, ok: bool = True, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "t": t, "server": server, "op": op, "ok": ok, "workload": "2.22.5",
            "client": "2.22.5", "run_id": "a" * 32, "values": {}, **extra}  # fmt: skip


def test_read_acks_orders_by_time_and_drops_a_line_cut_short(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(ack(1, 5.0, "2.22.5", "create-run")) + "\n" + '{"seq": 2, "t": 6')
    b.write_text(json.dumps(ack(1, 1.0, "3.17.2", "create-run")) + "\n")
    got = rolling.read_acks([a, b, tmp_path / "absent.jsonl"])
    assert [(x["server"], x["t"]) for x in got] == [("3.17.2", 1.0), ("2.22.5", 5.0)]


def test_server_failures_are_grouped_with_status_message_and_times() -> None:
    failed = {"ok": False, "answered": True, "status": 500}
    acks = [
        ack(1, 99.0, "2.22.5", "log-metric"),
        ack(
            2,
            102.0,
            "2.22.5",
            "log-metric",
            message=f"INTERNAL_ERROR: run {'b' * 32} at 1764300000000",
            **failed,
        ),
        ack(
            3,
            107.5,
            "2.22.5",
            "log-metric",
            message=f"INTERNAL_ERROR: run {'c' * 32} at 1764300000999",
            **failed,
        ),
        ack(
            4, 104.0, "2.22.5", "create-run", ok=False, answered=False, status=None, message="ConnectionError"
        ),
        ack(5, 105.0, "3.17.2", "log-metric", message="other server", **failed),
    ]
    problems = rolling.server_failures(acks, "2.22.5", zero=100.0)
    texts = sorted(p.text for p in problems)
    assert len(problems) == 2
    assert texts[1] == (
        "log-metric x2 (client 2.22.5; first +2.0s, last +7.5s from the start of `mlflow db upgrade`): "
        "the server answered HTTP 500: INTERNAL_ERROR: run <id> at <id>"
    )
    assert texts[0].startswith("create-run x1") and "no answer from the server: ConnectionError" in texts[0]
    by_status = {p.text.split(" ")[0]: p.status for p in problems}
    assert by_status == {"log-metric": Status.FAIL, "create-run": Status.ERROR}


def test_judge_server_passes_only_when_every_request_was_answered_correctly() -> None:
    acks = [ack(1, 1.0, "2.22.5", "create-run"), ack(2, 12.0, "2.22.5", "end-run")]
    check = Check("rolling-old-server", "upgrade", Status.PASS)
    rolling.judge_server(check, acks, "2.22.5", "old", zero=10.0, moved=10.0)
    assert check.status is Status.PASS
    assert (
        check.detail
        == "the old server 2.22.5 answered all 2 requests correctly (1 after `mlflow db upgrade` started)"
    )
    acks.append(ack(3, 13.0, "2.22.5", "log-params", ok=False, answered=True, status=400, message="BAD"))
    check = Check("rolling-old-server", "upgrade", Status.PASS)
    rolling.judge_server(check, acks, "2.22.5", "old", zero=10.0, moved=10.0)
    assert check.status is Status.FAIL and check.detail.startswith(
        "the old server 2.22.5 failed 1 of 3 requests"
    )
    assert "log-params x1" in check.detail and "HTTP 400: BAD" in check.detail
    check = Check("rolling-new-server", "upgrade", Status.PASS)
    rolling.judge_server(check, acks, "3.17.2", "new", zero=10.0, moved=10.0)
    assert check.status is Status.ERROR  # it was never asked anything: no verdict


def test_judge_acked_names_each_lost_write_and_passes_a_complete_read_back() -> None:
    acks = [ack(1, 1.0, "2.22.5", "create-run"), ack(2, 12.0, "3.17.2", "log-metric"),
            ack(3, 13.0, "3.17.2", "log-params", ok=False, answered=True, status=500),
            ack(4, 13.5, "3.17.2", "search-runs")]  # a read: not a write to read back  # fmt: skip
    check = Check("rolling-acked", "upgrade", Status.PASS)
    rolling.judge_acked(check, acks, {"checked": 2, "problems": []}, "3.17.2", "upgrade", zero=10.0)
    assert check.status is Status.PASS
    assert check.detail == "2 writes acknowledged by 2.22.5 and 3.17.2 servers, all read back through 3.17.2"
    lost = {
        "seq": 2,
        "workload": "2.22.5",
        "op": "log-metric",
        "server": "3.17.2",
        "run_id": "a" * 32,
        "answered": None,
        "problem": "metric loss (value, timestamp, step) (1.1, 5, 1) missing",
    }
    check = Check("rolling-acked", "upgrade", Status.PASS)
    rolling.judge_acked(check, acks, {"checked": 2, "problems": [lost]}, "3.17.2", "upgrade", zero=10.0)
    assert check.status is Status.FAIL
    assert check.problems[0].text == (
        f"lost or changed: log-metric (run {'a' * 32}) by client 2.22.5, acknowledged by server 3.17.2 at "
        "+2.0s: metric loss (value, timestamp, step) (1.1, 5, 1) missing"
    )
    unread = {**lost, "answered": False, "problem": "read failed: ConnectionError"}
    check = Check("rolling-acked", "upgrade", Status.PASS)
    rolling.judge_acked(check, acks, {"checked": 2, "problems": [unread]}, "3.17.2", "upgrade", zero=10.0)
    assert check.status is Status.ERROR  # a read that got no answer says nothing about the write
    check = Check("rolling-acked", "upgrade", Status.PASS)
    rolling.judge_acked(check, acks, {"checked": 1, "problems": []}, "3.17.2", "upgrade", zero=10.0)
    assert check.status is Status.ERROR and "checked 1 writes, 2 were acknowledged" in check.detail


def test_summary_counts_requests_per_server_and_outcome() -> None:
    acks = [ack(1, 1.0, "2.22.5", "create-run"),
            ack(2, 12.0, "2.22.5", "log-metric", ok=False, answered=True),
            ack(3, 13.0, "3.17.2", "log-metric", ok=False, answered=False)]  # fmt: skip
    got = rolling.summary(acks, {"`mlflow db upgrade` started": 10.0, "TO server up": 11.5}, zero=10.0)
    assert got["requests"]["2.22.5"]["acknowledged"] == 1 and got["requests"]["2.22.5"]["failed"] == 1
    assert got["requests"]["3.17.2"]["no answer"] == 1
    assert got["requests"]["2.22.5"]["ops"]["log-metric"] == {"acknowledged": 0, "failed": 1, "no answer": 0}
    assert got["timeline"] == {"`mlflow db upgrade` started": 0.0, "TO server up": 1.5}


def _snapshot(exp_name: str, param_value: str, workload_value: str) -> Snapshot:
    experiments = Table(["experiment_id", "name"], ["experiment_id"],
                        {(1,): {"experiment_id": 1, "name": "mine"},
                         (2,): {"experiment_id": 2, "name": exp_name}})  # fmt: skip
    runs = Table(["run_uuid", "experiment_id"], ["run_uuid"],
                 {("r1",): {"run_uuid": "r1", "experiment_id": 1},
                  ("w1",): {"run_uuid": "w1", "experiment_id": 2}})  # fmt: skip
    params = Table(["key", "value", "run_uuid"], ["key", "run_uuid"],
                   {("p", "r1"): {"key": "p", "value": param_value, "run_uuid": "r1"},
                    ("p", "w1"): {"key": "p", "value": workload_value, "run_uuid": "w1"}})  # fmt: skip
    return Snapshot("rev", {"experiments": experiments, "runs": runs, "params": params})


def test_without_workload_leaves_out_exactly_the_workloads_rows() -> None:
    name = rolling.EXPERIMENT_PREFIX + "2.22.5-abc"
    before, after = _snapshot(name, "1", "x"), _snapshot(name, "1", "changed by the workload")
    assert not compare(before, after).ok  # the workload's own row changed
    assert compare(rolling.without_workload(before), rolling.without_workload(after)).ok
    # A changed row of anyone else is still caught, and nothing but the workload's rows is left out.
    report = compare(rolling.without_workload(before), rolling.without_workload(_snapshot(name, "2", "y")))
    assert report.differences == ["params row (key='p', run_uuid='r1'): value '1' -> '2'"]
    kept = rolling.without_workload(before)
    assert sum(len(t.rows) for t in kept.tables.values()) == 3
    # An experiment merely containing the prefix elsewhere in its name is not the workload's.
    other = _snapshot("x-" + name, "1", "x")
    assert rolling.without_workload(other).row_count() == other.row_count()


# -- real rolling cells ----------------------------------------------------------------------------------
def run_rolling(tmp_path: Path, backend: str, databases, tamper=None) -> CellResult:
    specs = parse_path("2.22.5:3.17.2")
    plan = CellPlan(backend, specs, default_clients(specs), scenarios=("quickstart",), rolling=True)
    ctx = CellContext(cell_dir=tmp_path / plan.slug, runtime=get_runtime("local"), envs=EnvCache(),
                      work_root=tmp_path, tamper=tamper, databases={backend: databases.get_server(backend)},
                      run_id=tmp_path.name)  # fmt: skip
    result = run_cell(plan, ctx)
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    left = [line for line in out.splitlines() if str(tmp_path) in line or "workload.py" in line]
    assert not left, left  # nothing of the stretch (servers, workloads, read-back) is left running
    return result


def one(result: CellResult, name: str) -> Check:
    found = [c for c in result.checks if c.name == name]
    assert len(found) == 1, [c.label() for c in result.checks]
    return found[0]


@pytest.mark.cell
@pytest.mark.parametrize("backend", ["postgres", pytest.param("mysql", marks=pytest.mark.slow)])
def test_rolling_cell_reads_back_every_acknowledged_write(tmp_path: Path, databases, backend: str) -> None:
    result = run_rolling(tmp_path, backend, databases)
    summary = result.components["rolling"]
    requests = summary["requests"]
    assert set(requests) == {"2.22.5", "3.17.2"}, [
        f"{c.label()}: {c.status}: {c.detail}" for c in result.checks
    ]
    assert all(r["acknowledged"] > 0 for r in requests.values()), summary
    acked = one(result, "rolling-acked")
    assert acked.status is Status.PASS, acked.detail
    assert acked.detail.endswith(
        "writes acknowledged by 2.22.5 and 3.17.2 servers, all read back through 3.17.2"
    )
    assert one(result, "integrity").status is Status.PASS, one(result, "integrity").detail
    assert one(result, "rolling-new-server").status is Status.PASS
    old = one(result, "rolling-old-server")
    assert old.status in (Status.PASS, Status.FAIL), old.detail  # what 2.22.5 does on the moved schema
    timeline = summary["timeline"]
    assert timeline["`mlflow db upgrade` started"] == 0.0
    assert timeline["FROM server up"] < 0 < timeline["TO server up"] < timeline["FROM server stopped"]
    # The rest of the cell is untouched by the stretch: every client check passed.
    bad = [c.label() for c in result.checks if c.name in ("write", "read") and c.status is not Status.PASS]
    assert not bad, bad


def _workload_rows(con: sa.Connection) -> list[tuple[str, int]]:
    return [tuple(r) for r in con.execute(sa.text(
        "SELECT m.run_uuid, m.step FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
        "JOIN experiments e ON e.experiment_id = r.experiment_id "
        f"WHERE e.name LIKE '{rolling.EXPERIMENT_PREFIX}%' AND m.step = 1 ORDER BY m.run_uuid"))]  # fmt: skip


def _plant(point: str, store: Store, lost: list[tuple[str, int]]) -> None:
    """After the upgrade: a constraint that refuses the old server's params (the workload names the server it
    writes through in its params), so the old server fails for real where the new one does not. Before the
    read-back: one acknowledged metric point deleted, as if the store had lost it, and one acknowledged param
    of another run changed."""
    assert isinstance(store, DatabaseStore)
    engine = sa.create_engine(store.sqlalchemy_url)
    with engine.begin() as con:
        if point == "rolling-upgraded":
            con.execute(sa.text("ALTER TABLE params ADD CONSTRAINT compat_planted CHECK "
                                "(NOT (key = 'server' AND value = '2.22.5')) NOT VALID"))  # fmt: skip
        elif point == "before-rolling-verify":
            con.execute(sa.text("ALTER TABLE params DROP CONSTRAINT compat_planted"))
            rows = _workload_rows(con)
            assert rows, "no workload metric to delete"
            lost.append(rows[0])
            con.execute(sa.text("DELETE FROM metrics WHERE run_uuid = :r AND step = 1"), {"r": rows[0][0]})
            other = con.execute(sa.text(
                "SELECT MAX(run_uuid) FROM params WHERE key = 'token' AND run_uuid <> :r AND run_uuid IN "
                "(SELECT run_uuid FROM runs WHERE experiment_id IN (SELECT experiment_id FROM experiments "
                f"WHERE name LIKE '{rolling.EXPERIMENT_PREFIX}%'))"), {"r": rows[0][0]}).scalar()  # fmt: skip
            assert other, "no workload param to change"
            lost.append((other, -1))
            con.execute(sa.text("UPDATE params SET value = 'tampered' WHERE key = 'token' AND run_uuid = :r"),
                        {"r": other})  # fmt: skip
    engine.dispose()


@pytest.mark.cell
def test_rolling_cell_names_a_lost_write_and_the_old_servers_failures(tmp_path: Path, databases) -> None:
    lost: list[tuple[str, int]] = []
    result = run_rolling(tmp_path, "postgres", databases, tamper=lambda p, s: _plant(p, s, lost))
    acked = one(result, "rolling-acked")
    assert acked.status is Status.FAIL, acked.detail
    run_uuid = lost[0][0]
    named = [p.text for p in acked.problems if run_uuid in p.text]
    assert named and all(t.startswith("lost or changed: log-metric") for t in named), acked.problems
    assert all(p.status is Status.FAIL for p in acked.problems)
    assert "(value, timestamp, step)" in named[0] and "missing from its history" in named[0]
    changed = [p.text for p in acked.problems if lost[1][0] in p.text]
    assert len(changed) == 1 and changed[0].startswith("lost or changed: log-params"), acked.problems
    assert "param token 'tampered', expected '" in changed[0]
    assert len(acked.problems) == 2, [p.text for p in acked.problems]  # nothing else is blamed
    old = one(result, "rolling-old-server")
    assert old.status is Status.FAIL, old.detail
    planted = [p for p in old.problems if p.text.startswith("log-params x")]
    assert planted and "compat_planted" in planted[0].text, [p.text for p in old.problems]
    # MLflow answers a violated constraint with 400 BAD_REQUEST; grouped as one kind of failure, timed from
    # the start of `mlflow db upgrade` (the constraint was planted after it).
    assert "the server answered HTTP 400: RestException: BAD_REQUEST" in planted[0].text, planted[0].text
    assert re.search(
        r"first \+\d+\.\ds, last \+\d+\.\ds from the start of `mlflow db upgrade`", planted[0].text
    )
    assert one(result, "rolling-new-server").status is Status.PASS  # the new server's params are allowed
    assert result.components["rolling"]["requests"]["2.22.5"]["ops"]["log-params"]["failed"] >= 1


def test_report_shows_requests_per_server_timeline_and_verdicts() -> None:
    from harness.report import render_html, render_markdown
    from harness.results import RunResult

    cell = CellResult(id="postgres:2.22.5->3.17.2[rolling]", backend="postgres", runtime="local",
                      path=["2.22.5", "3.17.2"], clients=["2.22.5"], dir="c", rolling=True)  # fmt: skip
    cell.components["rolling"] = rolling.summary(
        [
            ack(1, 9.0, "2.22.5", "create-run"),
            ack(2, 12.0, "2.22.5", "log-metric", ok=False, answered=True),
            ack(3, 13.0, "3.17.2", "create-run"),
        ],
        {"`mlflow db upgrade` started": 10.0, "TO server up": 11.5},
        zero=10.0,
    ) | {"from": "2.22.5", "to": "3.17.2"}
    cell.add(
        Check("rolling-old-server", "upgrade", Status.FAIL, "the old server 2.22.5 failed 1 of 2 requests")
    )
    cell.finish()
    run = RunResult("r", "2026-11-29T03:00:00+00:00", "2026-11-29T03:01:00+00:00", "0", {}, [cell])
    md = render_markdown(run)
    assert (
        "## Rolling upgrades" in md
        and "| 2.22.5 (old) | 1 | 1 | 0 |" in md
        and "| 3.17.2 (new) | 1 | 0 | 0 |" in md
    )
    assert "TO server up +1.5 s" in md and "**rolling-old-server** ❌ fail the old server 2.22.5 failed" in md
    html = render_html(run)
    assert '<h2 id="rolling">' in html and "<td>2.22.5 (old)</td><td>1</td><td>1</td><td>0</td>" in html


def test_the_declared_deadlock_on_mysql_is_xfail_a_lucky_run_is_not_stale_a_lost_write_never_declared() -> (
    None
):
    from harness import expectations

    message = (
        "MlflowException: API request to http://127.0.0.1:1/api/2.0/mlflow/model-versions/create failed with "
        "exception HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
        "/api/2.0/mlflow/model-versions/create (Caused by ResponseError('too many 503 error responses'))"
    )

    def judged(backend: str, acks: list[dict[str, Any]], name: str = "rolling-old-server") -> Check:
        cell = CellResult(id="c", backend=backend, runtime="local", path=["2.22.5", "3.17.2"],
                          clients=["2.22.5"], dir="c", rolling=True)  # fmt: skip
        check = cell.add(Check(name, "upgrade", Status.PASS, server="2.22.5"))
        rolling.judge_server(check, acks, "2.22.5", "old", zero=10.0, moved=10.0, phase="upgrade")
        expectations.apply(cell, expectations.default())
        return check

    ok = ack(1, 9.0, "2.22.5", "create-run")
    deadlock = ack(
        2, 16.0, "2.22.5", "create-model-version", ok=False, answered=True, status=503, message=message
    )
    refused = ack(
        3, 17.0, "2.22.5", "log-params", ok=False, answered=True, status=400, message="BAD_REQUEST: x"
    )
    assert judged("mysql", [ok, deadlock]).status is Status.XFAIL
    assert (
        judged("mysql", [ok]).status is Status.PASS
    )  # the collision did not happen: not a stale declaration
    assert judged("mysql", [ok, deadlock, refused]).status is Status.FAIL  # only the deadlock is declared
    assert judged("postgres", [ok, deadlock]).status is Status.FAIL  # not seen there, not declared there
    assert not [e for e in expectations.default() if e.check == "rolling-acked"]
