"""The benchmark runs and writes its record. Its figures are read by people, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.cell


def test_bench_runs_and_writes_its_record(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.bench", "--backend", "sqlite", "--path", "1.30.1:2.22.5",
         "--scenarios", "quickstart", "--no-naive", "-n", "1", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("bench: wall=")
    assert all(f" {key}=" in last for key in ("floor", "ratio", "naive_speedup", "peak_rss"))
    (record,) = (tmp_path / "bench").glob("*.json")
    data = json.loads(record.read_text())
    assert set(data["floor"]["server_start"]) == {"1.30.1", "2.22.5"}
    assert data["matrix"]["statuses"] == {"sqlite:1.30.1->2.22.5": "pass"}
    assert data["matrix"]["peak_rss_mib"] > 0 and "client" in data["matrix"]["phases"]
