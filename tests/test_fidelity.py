"""Fidelity of `--server-launch fork` against `cli`: the comparison (harness/fidelity.py) on synthetic runs,
what it normalizes and what it must not, and real runs of the same cells both ways through the real command
line, which must not differ at all; a planted difference between two real runs must show."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from harness import fidelity
from harness.cli import fidelity_side
from harness.integrity import Snapshot, Table
from harness.results import CellResult, Check, Problem, RunResult, Status
from harness.rundir import RunDir
from tests.conftest import run_cli

START, END = "2026-11-29T06:00:00+00:00", "2026-11-29T06:10:00+00:00"
NOW_MS = int(datetime.fromisoformat(START).timestamp() * 1000) + 60_000  # a clock time inside the run
RUN = "0123456789abcdef0123456789abcdef"


# -- synthetic runs ------------------------------------------------------------------------------------
def cell(port: int, run_id: str, pid: int, tmp: str, seconds: str, token: str) -> CellResult:
    """One cell as a run writes it; what may differ between runs is given."""
    versions = ["2.22.5", "3.17.2"]
    result = CellResult(id="postgres:2.22.5->3.17.2", backend="postgres", runtime="local", path=versions,
                        clients=versions, dir="postgres_2.22.5_to_3.17.2", started=START, ended=END,
                        seconds=float(port % 97))  # fmt: skip
    result.components = {
        "envs": {"3.17.2": {"mlflow": "3.17.2", "schema_head": "dc11669786a5"}},
        "backend": {"product": "PostgreSQL", "server": f"postgresql://postgres@127.0.0.1:{port + 1}/x"},
        "migration": {"upgrade": {"seconds": float(seconds),
                                  "revisions": [{"from": "a", "to": "b", "seconds": 0.1}]}},
    }  # fmt: skip
    result.timings = {"server-start": float(seconds)}
    checks = [
        Check("server-start", "before", Status.PASS, f"http://127.0.0.1:{port} (artifacts: proxied)",
              server="2.22.5", seconds=float(seconds), logs=["logs/before-server-2.22.5.log"]),
        Check("write", "before", Status.PASS, f"acknowledged in {seconds}s: run_id={run_id}",
              client="2.22.5", server="2.22.5", scenario="quickstart"),
        Check("write", "before", Status.PASS, f"acknowledged in {seconds}s: name=compat-model-{token}",
              client="2.22.5", server="2.22.5", scenario="registry"),
        Check("backup", "upgrade", Status.PASS, f"copied to {tmp}/mlflow-compat-cell-{token}/before-upgrade"),
        Check("db-upgrade", "upgrade", Status.PASS,
              f"revision a -> b in {seconds}s; slowest revision b (add x): {seconds}s", server="3.17.2"),
        Check("backup", "rollback", Status.PASS, "copied to before-rollback-server"),
        Check("rollback-start", "rollback", Status.PASS,
              f"refused the upgraded store as expected: server 2.22.5 (pid {pid}) exited with code 1: "
              "Can't locate revision identified by 'dc11669786a5'", server="2.22.5"),
        Check("read", "after", Status.XFAIL, "expected (x): 1 difference", client="2.22.5", server="3.17.2",
              scenario="metric_values", expected="x",
              problems=[Problem(f"run {run_id}: metric_history.pos_inf: '1.79e308', expected 'inf'",
                                Status.XFAIL, record=f"before/2.22.5/metric_values/{run_id}", expected="x")]),
    ]  # fmt: skip
    for check in checks:
        result.add(check)
    result.finish()
    return result


def snapshot(run_id: str, start_ms: int, rows: int = 3, name: str = "brave-owl-123") -> Snapshot:
    runs = Table(
        ["run_uuid", "name", "start_time", "status"],
        ["run_uuid"],
        {(run_id,): {"run_uuid": run_id, "name": name, "start_time": start_ms, "status": 3}},
    )
    params = Table(
        ["run_uuid", "key", "value"],
        ["run_uuid", "key"],
        {(run_id, f"p{i}"): {"run_uuid": run_id, "key": f"p{i}", "value": f"v{i}"} for i in range(rows)},
    )
    metrics = Table(
        ["run_uuid", "key", "timestamp", "value"],
        ["run_uuid", "key", "timestamp"],
        {
            (run_id, "loss", 1_700_000_000_000): {
                "run_uuid": run_id,
                "key": "loss",
                "timestamp": 1_700_000_000_000,
                "value": 0.5,
            }
        },
    )
    return Snapshot("dc11669786a5", {"runs": runs, "params": params, "metrics": metrics})  # fmt: skip


def side(root: Path, label: str, result: CellResult, before: Snapshot, after: Snapshot) -> fidelity.Side:
    """A run directory on disk, as the CLI writes it, with the cell's integrity snapshots."""
    run_id = f"20261129T060000Z-{label}"
    run_dir = root / label / run_id
    run = RunResult(run_id, START, END, "0", {"server_launch": {"value": label, "source": "command line"}},
                    [result])  # fmt: skip
    (run_dir / "cells" / result.dir).mkdir(parents=True)
    RunDir(run_dir).results.write_text(json.dumps(run.to_json()))
    fidelity.keep_snapshots(run_dir / "cells" / result.dir / "integrity" / "upgrade.json", before, after)
    return fidelity_side(root / label)


def pair(tmp_path: Path, **change: object) -> tuple[fidelity.Side, fidelity.Side]:
    """Two runs that differ only in what necessarily differs, and in ``change`` (applied to the second)."""
    a_run, b_run = RUN, "fedcba9876543210fedcba9876543210"
    a = cell(45001, a_run, 4242, "/tmp/a", "0.6", "2e7d784750")
    b = cell(51234, b_run, 977, "/var/tmp/b", "12.3", "10761ac005")
    a_snaps = (snapshot(a_run, NOW_MS), snapshot(a_run, NOW_MS + 5))
    b_snaps = (snapshot(b_run, NOW_MS + 99_000, name="calm-fox-7"), snapshot(b_run, NOW_MS + 99_000))
    if "check" in change:
        index, fields = change["check"]  # type: ignore[misc]
        b.checks[index] = replace(b.checks[index], **fields)
    if "drop_check" in change:
        del b.checks[change["drop_check"]]  # type: ignore[arg-type]
    if "after" in change:
        b_snaps = (b_snaps[0], change["after"](b_run))  # type: ignore[operator]
    b.finish()
    return side(tmp_path, "fork", a, *a_snaps), side(tmp_path, "cli", b, *b_snaps)


def test_identical_runs_have_no_difference_though_ports_ids_paths_pids_times_and_tokens_differ(
    tmp_path: Path,
) -> None:
    fork, cli = pair(tmp_path)
    assert fidelity.differences(fork, cli) == []
    assert fidelity.differences(cli, fork) == []


def test_a_changed_detail_is_named_with_its_cell_check_and_both_sides(tmp_path: Path) -> None:
    refusal = "refused the upgraded store as expected: server 2.22.5 exited with code 1: Detected out-of-date"
    fork, cli = pair(tmp_path, check=(6, {"detail": refusal}))
    (line,) = fidelity.differences(fork, cli)
    assert line.startswith(
        "postgres:2.22.5->3.17.2 check rollback/rollback-start server 2.22.5: detail differs: "
    )
    assert 'fork "refused the upgraded store as expected: server 2.22.5 (pid <pid>) exited' in line
    assert "cli 'refused the upgraded store as expected: server 2.22.5 exited with code 1: Detected" in line


def test_a_changed_status_is_named_and_so_is_the_cells(tmp_path: Path) -> None:
    fork, cli = pair(tmp_path, check=(1, {"status": Status.FAIL}))
    lines = fidelity.differences(fork, cli)
    assert "postgres:2.22.5->3.17.2 cell.status differs: fork 'xfail' vs cli 'fail'" in lines
    assert ("postgres:2.22.5->3.17.2 check before/write quickstart client 2.22.5 server 2.22.5: status "
            "differs: fork 'pass' vs cli 'fail'") in lines  # fmt: skip


def test_a_changed_problem_a_missing_check_and_a_repeated_checks_place_are_named(tmp_path: Path) -> None:
    fork, cli = pair(tmp_path, drop_check=3)  # upgrade/backup
    (line,) = fidelity.differences(fork, cli)
    assert line == (
        "postgres:2.22.5->3.17.2 check upgrade/backup: only in fork (pass: 'copied to <tmp>/before-upgrade')"
    )
    fork, cli = pair(tmp_path / "p", check=(7, {"problems": [Problem("other", Status.XFAIL, expected="x")]}))
    (line,) = fidelity.differences(fork, cli)
    assert "check after/read metric_values client 2.22.5 server 3.17.2: problems differs" in line


def test_a_dropped_or_changed_integrity_row_is_named(tmp_path: Path) -> None:
    fork, cli = pair(tmp_path, after=lambda run_id: snapshot(run_id, NOW_MS, rows=2))
    lines = fidelity.differences(fork, cli)
    assert lines == [
        "postgres:2.22.5->3.17.2 integrity snapshot upgrade after: table params: 3 rows in fork, 2 in cli",
        "postgres:2.22.5->3.17.2 integrity snapshot upgrade after: table params: row only in fork: "
        '\'{"key": "p2", "run_uuid": "<id>", "value": "v2"}\'',
    ]

    def changed(run_id: str) -> Snapshot:
        snap = snapshot(run_id, NOW_MS)
        snap.tables["params"].rows[(run_id, "p1")]["value"] = "v1-changed"
        snap.revision = "bda7b8c39065"
        return snap

    lines = fidelity.differences(*pair(tmp_path / "changed", after=changed))
    assert any("revision differs: fork 'dc11669786a5' vs cli 'bda7b8c39065'" in line for line in lines)
    assert any("row only in cli" in line and "v1-changed" in line for line in lines)


def test_a_port_like_number_elsewhere_than_a_url_or_a_clock_time_stays_compared(tmp_path: Path) -> None:
    """Normalizing ports, times and pids must not hide a value that merely looks like one."""
    detail = "1 difference: run.params.batch_size: '{n}', expected '45001'; listening on port {n}"
    fork, cli = pair(tmp_path, check=(1, {"detail": detail.format(n=45002)}))
    fork.run.cells[0].checks[1].detail = detail.format(n=45001)
    (line,) = fidelity.differences(fork, cli)
    assert "'45001'" in line and "'45002'" in line

    def explicit_time(run_id: str) -> Snapshot:  # an explicit timestamp a client sent, outside the run
        snap = snapshot(run_id, NOW_MS)
        (row,) = snap.tables["metrics"].rows.values()
        row["timestamp"] = 1_700_000_000_001
        return snap

    lines = fidelity.differences(*pair(tmp_path / "ts", after=explicit_time))
    assert any("1700000000001" in line for line in lines) and any("1700000000000" in line for line in lines)
    # Same for a URL's port vs a number after a colon that is not a host's.
    a, b = fork, replace(fork, label="other")
    assert fidelity.normalize("http://127.0.0.1:45001/api and step:45001", a) == (
        "http://127.0.0.1:<port>/api and step:45001"
    )
    assert fidelity.normalize("took 3 s, 3 records, pages=3", b) == "took <seconds>, 3 records, pages=3"
    made = "same as a fresh 3.17.2 install on SQLite 3.40.1 (65 tables, 84 indexes)"
    assert fidelity.normalize(f"{made}; reference made in 4.2s", b) == fidelity.normalize(made, a) == made
    kept = "params.timeout: '30s', expected '60s'; step 1795932060000; compat-model-v2; 0.30000000000000004"
    assert fidelity.normalize(kept, b) == kept.replace("1795932060000", "<time>")  # a clock time of the run


def test_cells_present_in_one_run_only_are_named(tmp_path: Path) -> None:
    fork, cli = pair(tmp_path)
    cli.run.cells.append(replace(cli.run.cells[0], id="sqlite:2.22.5->3.17.2", dir="x"))
    fork.run.not_run.append("mysql:2.22.5->3.17.2")
    lines = fidelity.differences(fork, cli)
    assert lines == [
        "run not run differs: fork ['mysql:2.22.5->3.17.2'] vs cli []",
        "sqlite:2.22.5->3.17.2: cell only in cli (xfail)",
    ]


def test_report_fidelity_on_the_command_line(tmp_path: Path) -> None:
    pair(tmp_path)
    same = run_cli("report", "--fidelity", str(tmp_path / "fork"), str(tmp_path / "cli"), timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.splitlines()[-1].startswith("fidelity: identical between fork (")
    pair(tmp_path / "d", check=(1, {"status": Status.FAIL}))
    other = run_cli("report", "--fidelity", str(tmp_path / "fork"), str(tmp_path / "d" / "cli"), timeout=120)
    assert other.returncode == 1, other.stdout + other.stderr
    assert "status differs: fork 'pass' vs cli 'fail'" in other.stdout
    assert "fidelity: 3 difference(s)" in other.stdout  # the cell's status and summary, the check
    missing = run_cli("report", "--fidelity", str(tmp_path / "fork"), str(tmp_path / "nowhere"), timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert f"--fidelity {tmp_path / 'nowhere'}: no such directory" in missing.stderr


# -- real runs, both ways --------------------------------------------------------------------------------
# A representative subset of the default matrix (smoke: file, sqlite, postgres, mysql x 1.30.1:2.22.5,
# 2.22.5:3.17.2, 1.30.1:3.17.2): every server version and every backend at least once, and schema refusals by
# old servers on upgraded stores (the rollback probe) on SQLite and PostgreSQL (1.30.1: "out-of-date database
# schema") and MySQL (2.22.5: "Can't locate revision"), besides a new server migrating an old store itself on
# start (unupgraded-start) and `mlflow db upgrade` with its integrity snapshots on all three SQL products.
SUBSET = ("--backend", "file", "--backend", "sqlite", "--backend", "postgres", "--backend", "mysql",
          "--path", "1.30.1:3.17.2", "--path", "2.22.5:3.17.2",
          "-k", "sqlite:1.30.1 or postgres:1.30.1 or file:2.22.5 or mysql:2.22.5")  # fmt: skip
SUBSET_CELLS = {
    "sqlite:1.30.1->3.17.2",
    "postgres:1.30.1->3.17.2",
    "file:2.22.5->3.17.2",
    "mysql:2.22.5->3.17.2",
}


def real_run(
    tmp_path: Path, request: pytest.FixtureRequest, launch: str, *args: str, env: dict[str, str] | None = None
) -> tuple[fidelity.Side, float]:
    """`mlflow-compat run --server-launch LAUNCH` as a user runs it, its stores and database servers in a
    private short temp dir (MariaDB's socket path must stay under 108 bytes); its side and wall seconds."""
    private = Path(tempfile.mkdtemp(prefix=f"mc-fid-{launch}-"))
    private.chmod(0o755)  # PostgreSQL runs as `postgres` under root, and initdb's directory is made in here
    request.addfinalizer(lambda: shutil.rmtree(private, ignore_errors=True))
    results = tmp_path / f"results-{launch}"
    results.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = run_cli("run", "--runtime", "local", "--server-launch", launch, "--results-dir", str(results),
                   "-n", "2", *args, env={"TMPDIR": str(private), **(env or {})}, timeout=3600)  # fmt: skip
    seconds = time.monotonic() - started
    print(f"{launch} run: {seconds:.0f} s, exit code {proc.returncode}")
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # verdicts, not bad input
    side = fidelity_side(results, launch)
    assert side.run.options["server_launch"]["value"] == launch
    errors = [f"{c.id}: {c.summary}" for c in side.run.cells if c.status is Status.ERROR]
    assert not errors, f"{launch}: cells without a verdict compare nothing: {errors}"
    assert mlflow_processes(private) == []
    return side, seconds


def mlflow_processes(under: Path) -> list[str]:
    """Processes still running whose command line names ``under`` (a run's private temp dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(under) in line]


FORKED = "forked from the MLflow"  # how the fork server's start opens a server log (harness/serverfork.py)


def first_lines(side: fidelity.Side) -> dict[str, str]:
    """The first line of every server log of the run: a server start records there how it was launched
    (what makes the comparison one of fork against cli, not of the CLI against itself)."""
    out = {}
    for log in sorted(side.dir.glob("cells/*/logs/*-server-*.log")):
        with log.open(errors="replace") as f:
            out[str(log.relative_to(side.dir))] = f.readline().strip()
    return out


def assert_no_difference(fork: fidelity.Side, cli: fidelity.Side) -> None:
    lines = fidelity.differences(fork, cli)
    assert not lines, f"{len(lines)} difference(s) between fork and cli:\n" + "\n".join(lines)


@pytest.mark.cell
def test_fork_and_cli_agree_on_a_representative_subset_and_a_planted_difference_shows(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The subset run both ways through the real command line: not one difference in any cell's status,
    any check's status, detail or problems (refusal messages included), or any integrity snapshot. Then the
    same file-store cell once more with the CLI, its 2.22.5 (gunicorn) servers given GUNICORN_CMD_ARGS
    "--limit-request-line 300" (the environment a server process runs with is exactly what a fork server
    must carry over from the CLI's exec to the web server): they answer HTTP 400 to the long_values
    scenario's get-history of a 250-character metric key, and the comparison names those checks."""
    fork, fork_s = real_run(tmp_path, request, "fork", *SUBSET)
    cli, cli_s = real_run(tmp_path, request, "cli", *SUBSET)
    assert {c.id for c in fork.run.cells} == SUBSET_CELLS
    forked, real = first_lines(fork), first_lines(cli)
    assert forked and all(FORKED in line for line in forked.values()), forked
    assert real and not any(FORKED in line for line in real.values()), real
    for cid in ("sqlite:1.30.1->3.17.2", "postgres:1.30.1->3.17.2", "mysql:2.22.5->3.17.2"):
        cell = next(c for c in fork.run.cells if c.id == cid)
        refusal = next(c for c in cell.checks if c.name == "rollback-start")
        assert refusal.status is Status.PASS and "refused the upgraded store" in refusal.detail, refusal
        for side in (fork, cli):
            assert (side.dir / "cells" / cell.dir / "integrity" / "upgrade.json").is_file()
    assert_no_difference(fork, cli)

    plant = {"GUNICORN_CMD_ARGS": "--limit-request-line 300"}
    planted, planted_s = real_run(tmp_path / "planted", request, "cli", "--backend", "file", "--path",
                                  "2.22.5:3.17.2", env=plant)  # fmt: skip
    print(f"walls: fork {fork_s:.0f} s, cli {cli_s:.0f} s, planted cell {planted_s:.0f} s")
    same_cell = [c for c in fork.run.cells if c.id == "file:2.22.5->3.17.2"]
    lines = fidelity.differences(replace(fork, run=replace(fork.run, cells=same_cell)), planted)
    print("\n".join(lines))
    prefix = "file:2.22.5->3.17.2 check before/write long_values client {} server 2.22.5: status differs: "
    for client in ("2.22.5", "3.17.2"):
        assert f"{prefix.format(client)}fork 'pass' vs cli 'fail'" in lines, lines
    assert not [line for line in lines if " quickstart " in line], "the untouched scenario must not differ"


@pytest.mark.cell
@pytest.mark.slow
def test_fork_and_cli_agree_on_the_whole_default_matrix(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The default matrix (12 cells) both ways: not one difference."""
    fork, fork_s = real_run(tmp_path, request, "fork")
    cli, cli_s = real_run(tmp_path, request, "cli")
    print(f"walls: fork {fork_s:.0f} s, cli {cli_s:.0f} s; {len(fork.run.cells)} cells")
    assert len(fork.run.cells) == 12
    forked, real = first_lines(fork), first_lines(cli)
    assert forked and all(FORKED in line for line in forked.values()), forked
    assert real and not any(FORKED in line for line in real.values()), real
    assert_no_difference(fork, cli)
