"""The benchmark runs and writes its record. Its figures are read by people, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.cell


def test_bench_runs_and_writes_its_record(tmp_path: Path) -> None:
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("mlflow-compat-bench-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.bench", "--backend", "sqlite", "--path", "1.30.1:2.22.5",
         "--scenarios", "quickstart", "--no-naive", "-n", "1", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("bench: wall=")
    assert all(f" {key}=" in last for key in ("floor", "ratio", "naive_speedup", "peak_rss"))
    (record,) = [p for p in (tmp_path / "bench").glob("*.json") if not p.name.endswith("-matrix.json")]
    data = json.loads(record.read_text())
    matrix = json.loads(record.with_name(f"{record.stem}-matrix.json").read_text())
    assert [c["id"] for c in matrix["cells"]] == ["sqlite:1.30.1->2.22.5"]
    assert set(data["work"]) == {"client-calls", "db-upgrade", "floor_plus_work", "overhead"}
    assert data["work"]["client-calls"] > 0 and data["work"]["db-upgrade"] > 0
    assert set(temp.glob("mlflow-compat-bench-*")) <= before, "its scratch directory is removed"
    assert set(data["floor"]["server_start"]) == {"1.30.1", "2.22.5"}
    assert set(data["new_env_seconds"]) == {"1.30.1", "2.22.5"}, "each version's env built anew"
    assert data["matrix"]["statuses"] == {"sqlite:1.30.1->2.22.5": "pass"}
    assert data["matrix"]["peak_rss_mib"] > 0 and "client" in data["matrix"]["phases"]
