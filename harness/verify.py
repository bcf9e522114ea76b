"""Comparing what a client saw with what was written. Pure functions: every difference is named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WrittenRun:
    """A write that a client saw acknowledged: the run id it got and what it put there."""

    run_id: str
    writer: str  # e.g. "client 2.22.5 -> server 1.30.1 (before)"
    phase: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, dict[str, Any]]  # path -> {"sha256", "size"}


def _diff_map(kind: str, expected: dict[str, Any], seen: dict[str, Any], *, extra_ok: bool) -> list[str]:
    out = []
    for key, value in expected.items():
        if key not in seen:
            out.append(f"{kind} {key!r} missing (expected {value!r})")
        elif seen[key] != value:
            out.append(f"{kind} {key!r} is {seen[key]!r}, expected {value!r}")
    if not extra_ok:
        out += [f"{kind} {key!r} unexpected (value {seen[key]!r})" for key in seen.keys() - expected.keys()]
    return out


def compare_run(expected: WrittenRun, seen: dict[str, Any]) -> list[str]:
    """Differences between a written run and one client's view of it; empty when they agree exactly."""
    if not seen.get("found"):
        return [f"run unreadable: {seen.get('error', 'not returned by the client')}"]
    diffs = _diff_map("param", expected.params, seen.get("params", {}), extra_ok=False)
    diffs += _diff_map("metric", expected.metrics, seen.get("metrics", {}), extra_ok=False)
    # Servers add system tags (mlflow.*, filtered by the reader); any other tag must be ours.
    diffs += _diff_map("tag", expected.tags, seen.get("tags", {}), extra_ok=False)
    artifacts = seen.get("artifacts", {})
    for path, meta in expected.artifacts.items():
        got = artifacts.get(path)
        if got is None:
            diffs.append(f"artifact {path!r} missing")
        elif got["sha256"] != meta["sha256"]:
            diffs.append(
                f"artifact {path!r} bytes differ ({got['size']} bytes, sha256 {got['sha256'][:12]}…, "
                f"expected {meta['size']} bytes, sha256 {meta['sha256'][:12]}…)"
            )
    diffs += [f"artifact {p!r} unexpected" for p in artifacts.keys() - expected.artifacts.keys()]
    return diffs


def compare_all(expected: list[WrittenRun], seen_runs: dict[str, dict[str, Any]]) -> list[str]:
    """Every difference across runs, each prefixed with the run and who wrote it."""
    out = []
    for run in expected:
        for diff in compare_run(run, seen_runs.get(run.run_id, {"found": False})):
            out.append(f"run {run.run_id[:8]} ({run.writer}): {diff}")
    return out
