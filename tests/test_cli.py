"""Bad input: one clear line on stderr, exit code 2, and nothing started or written."""

from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "oracle"], "unknown backend 'oracle'"),
        (["--backend", "postgres"], "not implemented yet"),
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
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    results = tmp_path / "results"
    proc = run_cli("run", "--results-dir", str(results), *args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not results.exists(), "bad input must not create a run"


def test_unwritable_results_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("run", "--results-dir", str(blocker / "results"), "--path", "1.30.1:2.22.5", timeout=120)
    assert proc.returncode == 2
    assert "is not writable" in proc.stderr


def test_selection_that_matches_no_cell(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli(
        "run", "--results-dir", str(results), "--path", "1.30.1:2.22.5", "-k", "postgres", timeout=300
    )
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "no cell matches -k 'postgres'" in proc.stderr
    assert not any(p.name != "latest" for p in results.iterdir())
