"""Bad input: one clear line on stderr, exit code 2, and nothing started or written."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness import owner
from harness.plan import oldest_supported
from tests.conftest import REPO, run_cli


def refused(tmp_path: Path, command: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``command`` as a user would; it must exit 2 with one line on stderr, having created no run and
    started no process. Returns that line."""
    results = tmp_path / "results"
    token = f"bad-input-{uuid.uuid4().hex}"  # anything the CLI started would carry it (harness.owner)
    where = ["--results-dir", str(results)] if command in ("run", "gate") else []
    cmd = [sys.executable, "-m", "harness.cli", command, *where, *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {}), owner.ENV: token})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert not results.exists() or not any(results.iterdir()), "bad input must not create a run"
    started = [
        pid.name
        for pid in Path("/proc").iterdir()
        if pid.name.isdigit() and owner.of_process(int(pid.name)) == token
    ]
    assert started == [], "bad input must start no process"
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "oracle"], "unknown backend 'oracle'"),
        (["--path", "1.30.1"], "is not an upgrade path"),
        (["--path", "3.17.2:2.22.5"], "MLflow has no schema downgrade"),
        (["--from", "1.30.1"], "--from and --to go together"),
        (["--path", "1.30.1:9.9.9"], "unknown MLflow version 9.9.9"),
        (["--path", "one:two"], "is not an MLflow version"),
        (["--path", "1.30.1:./no/such/wheels"], "no such wheel or directory"),
        (["--clients", "1.30.1,"], "empty MLflow spec"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--runtime", "k8s"], "invalid choice"),
        (["--path", "1.30.1:2.22.5", "-k", "sqlite and ("], "is not a valid selection expression"),
        (["--no-such-option"], "unrecognized arguments"),
        (["--scenarios", "quickstart,nope"], "unknown scenario nope (choose from quickstart, "),
        (["--scenarios", "none"], "--scenarios none leaves nothing to run"),
        (["--scenario", "no/such/train.py"], "--scenario no/such/train.py: no such file"),
        (["--scenario", "README.md"], "--scenario README.md: not a Python script (.py)"),
        (["--shard", "3/2"], "--shard 3/2: expected I/N with 1 <= I <= N"),
        (["--shard", "two"], "--shard two: expected I/N"),
        (["--expectations", "no/such.toml"], "no/such.toml: [Errno 2] No such file or directory"),
        (["--compare", "no/such/run"], "--compare no/such/run: no results.json there"),
        (
            ["--runtime", "local", "--docker-network", "host"],
            "--docker-network applies to the docker runtime",
        ),
        (
            ["--runtime", "local", "--postgres-image", "pg:17"],
            "--postgres-image applies to the docker runtime",
        ),
        (["--path", "1.30.1:./tests"], "needs exactly one mlflow wheel, found no wheels"),
        (["--client-launch", "thread"], "invalid choice: 'thread'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    assert message in refused(tmp_path, "run", *args)


def test_a_bad_client_launch_from_the_environment_is_bad_input(tmp_path: Path) -> None:
    line = refused(tmp_path, "run", env={"MLFLOW_COMPAT_CLIENT_LAUNCH": "thread"})
    assert line == "mlflow-compat: error: MLFLOW_COMPAT_CLIENT_LAUNCH='thread': choose from fork, spawn"


def test_a_backend_that_cannot_run_here_is_refused_with_its_descriptors_line(tmp_path: Path) -> None:
    line = refused(tmp_path, "run", "--backend", "sqlite", "--backend", "mssql", "--path", "2.22.5:3.17.2")
    assert line == "mlflow-compat: error: mssql: no server available on this machine"


def test_unwritable_results_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("run", "--results-dir", str(blocker / "results"), "--path", "1.30.1:2.22.5", timeout=120)
    assert proc.returncode == 2
    assert "is not writable" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--path", "1.30.1:2.22.5", "-k", "oracle"], "no cell matches -k 'oracle'"),
        (["--path", "1.30.1:2.22.5", "--backend", "sqlite", "--shard", "2/2"],
         "no cell to run: --shard 2/2 is empty (the plan has 1 cell(s))"),
        (["--path", "1.30.1:2.22.5", "--backend", "sqlite", "--shard", "2/2", "--list"],
         "no cell to run: --shard 2/2 is empty"),
        # `latest` pinned at both ends upgrades nothing: the path is dropped, as a discovered profile drops
        # a FROM that is itself the newest release; no path left is no cell.
        (["--path", "latest:latest"], "no cell to run: no upgrade path is left (paths from command line): "),
        (["--path", "1.30.1:2.22.5", "--results-dir", "/proc/nope"],
         "results directory /proc/nope is not writable (/proc: No such file or directory)"),
    ],
)  # fmt: skip
def test_a_run_with_no_cell_or_nowhere_to_write_is_bad_input(
    tmp_path: Path, args: list[str], message: str
) -> None:
    assert message in refused(tmp_path, "run", "--runtime", "local", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--postgres-url", "mysql://root@127.0.0.1/x"], "--postgres-url must be a postgresql:// URL"),
        (["--mysql-url", "not a url"], "--mysql-url is not a database URL"),
        (["--mysql-url", "mysql://root:s3cret@/x"], "--mysql-url has no host"),
    ],
)
def test_bad_database_urls_are_refused_without_showing_passwords(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = run_cli("run", "--results-dir", str(tmp_path / "r"), "--backend", "postgres", *args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "s3cret" not in proc.stderr


def test_list_shows_the_cells_a_discovered_profile_would_run_and_starts_nothing(tmp_path: Path) -> None:
    """--profile nightly, read from the real package index: the newest patch of each minor from 1.30 on,
    the majors' first releases, the patch-release paths; yanked and broken releases named as left out."""
    results = tmp_path / "results"
    proc = run_cli("run", "--profile", "nightly", "--backend", "sqlite", "--runtime", "local", "--list",
                   "--shard", "1/1", "--results-dir", str(results), timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cells = proc.stdout.split()
    latest = next(line for line in proc.stderr.splitlines() if line.startswith("# latest: ")).split()[-1]
    for cell in ("sqlite:1.30.1", "sqlite:2.0.1", "sqlite:2.22.5", "sqlite:3.0.0"):
        assert f"{cell}->{latest}" in cells
    assert "sqlite:3.0.0->3.0.1" in cells and "sqlite:3.1.0->3.1.1" in cells
    assert not any(c.startswith(("sqlite:2.0.0->", "sqlite:1.29")) for c in cells)
    assert "2.0.0: yanked on the index" in proc.stderr
    assert not results.exists(), "listing starts nothing and writes nothing"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidate", "./no/such/wheels"], "no such wheel or directory"),
        (["--candidate", "latest"], "--candidate latest: name a version, a wheel or a directory of wheels"),
        (["--candidate", "0.0.1"], "no release below 0.0.1 to use as the baseline"),
        (["--baseline", "2.22.5"], "the following arguments are required: --candidate"),
        (["--candidate", "3.17.2", "--baseline", "2.22.5", "--results-dir", "/proc/nope"],
         "results directory /proc/nope is not writable"),
    ],
)  # fmt: skip
def test_gate_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    assert message in refused(tmp_path, "gate", "--runtime", "local", *args)


def test_a_gate_selection_that_matches_nothing_names_the_cells(tmp_path: Path) -> None:
    """The cells are listed longest first by the last runs' durations (a shared cache): any order."""
    line = refused(tmp_path, "gate", "--runtime", "local", "--candidate", "3.17.2", "--baseline", "2.22.5",
                   "--backend", "sqlite", "-k", "oracle")  # fmt: skip
    prefix = "mlflow-compat: error: no cell matches -k 'oracle' (cells: "
    assert line.startswith(prefix) and line.endswith(")"), line
    oldest = oldest_supported()
    assert sorted(line[len(prefix) : -1].split(", ")) == [f"sqlite:{oldest}->3.17.2", "sqlite:2.22.5->3.17.2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--merge", "no/such/shard", "--out", "/proc/nope"], "--out /proc/nope is not writable"),
        (["/proc"], "report /proc: no results.json there"),
        ([], "report needs a run directory"),
    ],
)
def test_report_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    assert message in refused(tmp_path, "report", *args)


def test_the_summary_table_shows_ids_and_summaries_with_brackets_as_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cell ids carry their features in brackets ("[scale=1m]", "[auth]"): rich must not read them as markup
    (it did, and `postgres:2.22.5->3.17.2[scale=1m]` was printed as `postgres:2.22.5->3.17.2`)."""
    from harness.cli import print_summary
    from harness.results import CellResult, RunResult, Status
    from harness.rundir import RunDir

    monkeypatch.setenv("COLUMNS", "250")  # one line per row
    summary = "upgrade db-upgrade: [red]x[/red] exited"
    cell = CellResult("postgres:2.22.5->3.17.2[scale=1m][auth]", "postgres", "local", ["2.22.5", "3.17.2"],
                      ["2.22.5"], status=Status.FAIL, summary=summary)  # fmt: skip
    run = RunResult("r", "s", "e", "0", {}, [cell], not_run=["mysql:1.30.1->2.22.5[rolling]"])
    print_summary(run, RunDir(tmp_path / "r"))
    out = capsys.readouterr().out
    assert "postgres:2.22.5->3.17.2[scale=1m][auth]" in out and summary in out
    assert "mysql:1.30.1->2.22.5[rolling]" in out
