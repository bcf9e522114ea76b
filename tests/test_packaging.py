"""mlflow-compat as other teams get it: a built wheel, installed into a fresh venv, run from an empty
directory with no checkout, configured by the team's pyproject.toml; and the two runner examples
(examples/noxfile.py, examples/tox.ini) gating a real candidate against that wheel.

The wheel is built once per module (`uv build`: the sdist, then the wheel from the sdist, so a stale
build/ directory in the checkout cannot leak files into it, and the sdist is proven complete too). Every
command runs with the machine's environment less any MLFLOW_COMPAT_* setting (the env cache's location
excepted), so that only the team's file configures it. Real cells: real MLflow envs and servers (sqlite).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from uv import find_uv_bin

pytestmark = pytest.mark.cell

REPO = Path(__file__).resolve().parents[1]
UV = find_uv_bin()
SHIPPED_ID = "logged-models-need-a-3.0-server"  # harness/data/expectations.toml

TEAM_SCENARIO = '''"""A team's own scenario: one run with one param, read back by every client."""
import mlflow

REQUIRES = ()


def write(ctx):
    mlflow.set_experiment("team_probe")
    with mlflow.start_run() as run:
        mlflow.log_param("team", "yes")
    return {"run_id": run.info.run_id, "params": {"team": "yes"}}


def read(ctx, record):
    return {"run_id": record["run_id"], "params": dict(mlflow.get_run(record["run_id"]).data.params)}
'''

# The team's own declaration of a shipped id, with an error MLflow never gives: it replaces the shipped one,
# so the 404 the shipped entry declares is no longer covered.
TEAM_EXPECTATIONS = f"""
[[expect]]
id = "{SHIPPED_ID}"
check = "write"
scenario = "logged_models"
client = ">=3.0"
server = "<3.0"
error = "the server answered HTTP 418"
reason = "a team's override of the shipped declaration"
"""

TEAM_PYPROJECT = """
[project]
name = "team-service"
version = "0.0.0"

[tool.mlflow-compat]
backends = ["sqlite", "file"]
paths = ["2.22.5:3.17.2"]
scenarios = ["quickstart", "logged_models", "team_probe"]
scenario-dirs = ["compat/scenarios"]
expectations = ["compat/expectations.toml"]
results-dir = "compat-results"
runtime = "local"
jobs = 2
"""


def environ(**extra: str) -> dict[str, str]:
    """The machine's environment, less settings that would configure the harness behind the file's back."""
    keep = {"MLFLOW_COMPAT_CACHE"}
    dropped = ("VIRTUAL_ENV", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("MLFLOW_COMPAT_") or k in keep) and k not in dropped}  # fmt: skip
    return {**env, **extra}


def run(
    cmd: list[str | Path], cwd: Path, timeout: float = 900, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=environ(**extra), capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def expected_files() -> set[str]:
    """What the wheel must carry: every file of the package (code, data, templates) and every scenario script,
    the latter as harness/_scenarios/."""
    files = {p.relative_to(REPO).as_posix() for p in (REPO / "harness").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}  # fmt: skip
    return files | {f"harness/_scenarios/{p.name}" for p in (REPO / "scenarios").glob("*.py")}


def missing(wheel: Path) -> list[str]:
    return sorted(expected_files() - set(zipfile.ZipFile(wheel).namelist()))


def build(source: Path, out: Path) -> Path:
    proc = run([UV, "build", "--out-dir", out, source], cwd=out.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(REPO, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (and its dependencies from the index) installed: its bin directory."""
    return venv_with(str(wheel), tmp_path_factory.mktemp("venv") / "venv")


def team_repo(root: Path) -> Path:
    """An empty directory, then what a team adds: pyproject.toml, a scenario, a declarations file."""
    root.mkdir(parents=True)
    assert not any(root.iterdir())
    (root / "pyproject.toml").write_text(TEAM_PYPROJECT)
    (root / "compat" / "scenarios").mkdir(parents=True)
    (root / "compat" / "scenarios" / "team_probe.py").write_text(TEAM_SCENARIO)
    (root / "compat" / "expectations.toml").write_text(TEAM_EXPECTATIONS)
    return root


def test_the_wheel_carries_every_file_a_run_reads(wheel: Path, tmp_path: Path) -> None:
    assert missing(wheel) == []
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/_scenarios/driver.py" in names and "harness/data/expectations.toml" in names
    assert {"harness/templates/report.html.j2", "harness/templates/docker/server.Dockerfile.j2"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "scenarios/"))]
    # The fault this check exists for: a build without the scenarios' mapping (as before issue 18) ships none.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("harness", "scenarios"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "README.md", source)
    text = (REPO / "pyproject.toml").read_text()
    mapping = '[tool.setuptools.package-dir]\n"harness._scenarios" = "scenarios"\n'
    assert mapping in text and ', "harness._scenarios"]' in text
    (source / "pyproject.toml").write_text(text.replace(mapping, "").replace(', "harness._scenarios"]', "]"))
    broken = build(source, tmp_path / "dist")
    assert "harness/_scenarios/driver.py" in missing(broken)
    assert [m for m in missing(broken) if not m.startswith("harness/_scenarios/")] == []


def test_an_installed_wheel_finds_its_scenarios_not_a_checkout(venv: Path, tmp_path: Path) -> None:
    probe = ("import harness, harness.paths as p\n"
             "print(harness.__file__, p.SCENARIOS_DIR, harness.__version__)")  # fmt: skip
    proc = run([venv / "python", "-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    package, scenarios_dir, version = proc.stdout.split()
    site = venv.parent / "lib"
    assert Path(package).is_relative_to(site) and Path(scenarios_dir).is_relative_to(site), proc.stdout
    assert (Path(scenarios_dir) / "driver.py").is_file() and version != "0+unknown"


def test_uvx_runs_the_wheel_from_an_empty_directory_with_a_teams_file(wheel: Path, tmp_path: Path) -> None:
    team = 'backends = ["file", "sqlite"]\npaths = ["2.22.5:3.17.2"]\nruntime = "local"\n'
    (tmp_path / "mlflow-compat.toml").write_text(team)
    proc = run(
        [UV, "tool", "run", "--from", wheel, "mlflow-compat", "run", "--list"], cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(proc.stdout.split()) == ["file:2.22.5->3.17.2", "sqlite:2.22.5->3.17.2"]


def test_a_teams_pyproject_configures_a_real_run_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """From an empty directory: `run --list` lists the cells the team's file asks for; the run itself uses its
    backends, jobs, results directory, the team's scenario (found by the pytest workers too) and the team's
    declaration, which replaces the shipped one by id and so turns a declared 404 into a failure."""
    team = team_repo(tmp_path / "team")
    listed = run([venv / "mlflow-compat", "run", "--list"], cwd=team)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == ["file:2.22.5->3.17.2", "sqlite:2.22.5->3.17.2"]
    assert not (team / "compat-results").exists(), "--list starts nothing"

    proc = run([venv / "mlflow-compat", "run"], cwd=team)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = (team / "compat-results" / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    source = f"file {team / 'pyproject.toml'} [tool.mlflow-compat]"
    opts = results["options"]
    for name, value in (("backends", ["sqlite", "file"]), ("jobs", 2), ("runtime", "local"),
                        ("results_dir", str(team / "compat-results")),
                        ("scenario_dirs", [str(team / "compat" / "scenarios")]),
                        ("expectations", [str(team / "compat" / "expectations.toml")])):  # fmt: skip
        assert opts[name] == {"value": value, "source": source}, (name, opts[name])
    assert opts["scenarios"]["source"] == source and "team_probe" in opts["scenarios"]["value"]
    assert opts["client_launch"]["source"] == "default"
    assert source in (run_dir / "report.md").read_text()  # the options table says where each value came from
    cells = {c["id"]: c for c in results["cells"]}
    assert sorted(cells) == ["file:2.22.5->3.17.2", "sqlite:2.22.5->3.17.2"]
    for cell in cells.values():
        team_checks = [c for c in cell["checks"] if c["scenario"] == "team_probe"]
        assert team_checks and {c["status"] for c in team_checks} == {"pass"}, cell["id"]
        assert {c["client"] for c in team_checks if c["name"] == "write"} == {"2.22.5", "3.17.2"}
        failed = [c for c in cell["checks"] if c["status"] in ("fail", "error", "xpass")]
        # the only failure: the 3.17.2 client's logged model on the 2.22.5 server, which the team's entry no
        # longer covers (the shipped one would have: it declares exactly this 404)
        assert [(c["phase"], c["name"], c["scenario"], c["client"], c["server"]) for c in failed] == [
            ("before", "write", "logged_models", "3.17.2", "2.22.5")], (cell["id"], failed)  # fmt: skip
        detail = failed[0]["detail"]
        assert f"declared ({SHIPPED_ID}) with a different error ('the server answered HTTP 418')" in detail
        assert "HTTP 404" in detail, detail
        assert cell["status"] == "fail"
    # the scenarios ran from the installed package, the team's from its own directory
    paths = {s["name"]: s["path"] for s in scenarios_run(run_dir)}
    assert Path(paths["quickstart"]).is_relative_to(venv.parent), paths
    assert paths["team_probe"] == str(team / "compat" / "scenarios" / "team_probe.py")


@pytest.mark.parametrize(
    ("body", "name", "message"),
    [
        (
            '[tool.mlflow-compat]\nbackend = ["sqlite"]\n',
            "pyproject.toml",
            "[tool.mlflow-compat]: unknown key 'backend'",
        ),
        ('jobs = "two"\n', "mlflow-compat.toml", "jobs: expected a whole number, got a string ('two')"),
        ('backends = ["sqlite"]\nexpectations = ["nope.toml"]\n', "mlflow-compat.toml", "expectations: "),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["gate", "--candidate", "3.17.2"]])
def test_a_bad_config_file_is_one_line_and_exit_2_before_anything_starts(
    venv: Path, tmp_path: Path, body: str, name: str, message: str, command: list[str]
) -> None:
    (tmp_path / name).write_text(body + 'results-dir = "out"\n' * (name != "pyproject.toml"))
    proc = run([venv / "mlflow-compat", *command], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlflow-compat: error: {tmp_path / name}"), proc.stderr
    assert message in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "bad input must leave nothing behind"


def venv_with(name: str, where: Path) -> Path:
    """``name`` (nox or tox from the index, as a team's CI would have it, or the wheel) in a fresh venv of
    its own: its bin directory."""
    for cmd in (
        [UV, "venv", "-q", "-p", sys.executable, where],
        [UV, "pip", "install", "-q", "-p", where, name],
    ):
        proc = run(cmd, cwd=where.parent, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return where / "bin"


def gate_run_dir(example: Path) -> Path:
    return (example / "compat-results" / "latest").resolve()


def scenarios_run(run_dir: Path) -> list[dict[str, Any]]:
    """Every scenario the client steps of a run loaded (name, path), from the steps' plans."""
    found = []
    for path in run_dir.glob("cells/*/logs/*-plan.json"):
        plan = json.loads(path.read_text())
        found += [*plan.get("scenarios", ()), *(r["scenario"] for r in plan.get("records", ()))]
    assert found, f"no client step plans under {run_dir}"
    return found


@pytest.mark.parametrize("runner", ["nox", "tox"])
def test_the_examples_gate_a_real_candidate_against_the_wheel(
    wheel: Path, tmp_path: Path, runner: str
) -> None:
    """examples/noxfile.py and examples/tox.ini, copied into an empty directory with the pyproject beside
    them: the runner installs the wheel into an env of its own and gates 3.17.2 (baseline and oldest 2.22.5
    from the pyproject, sqlite, quickstart)."""
    bin_dir = venv_with(runner, tmp_path / "runner")
    example = tmp_path / "example"
    example.mkdir()
    for name in ("noxfile.py", "tox.ini", "pyproject.toml"):
        shutil.copy(REPO / "examples" / name, example)
    if runner == "nox":
        cmd = [bin_dir / "nox", "-s", "mlflow_gate", "--", "--candidate", "3.17.2"]
        env_dir = example / ".nox" / "mlflow_gate"
    else:
        cmd = [bin_dir / "tox", "-e", "mlflow-gate"]
        env_dir = example / ".tox" / "mlflow-gate"
    proc = run(cmd, cwd=example, timeout=1500, MLFLOW_COMPAT_WHEEL=str(wheel), MLFLOW_CANDIDATE="3.17.2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "gate: PASS: candidate 3.17.2 (from baseline 2.22.5 and oldest 2.22.5; 1 cells, " in out, out[
        -3000:
    ]
    results = json.loads((gate_run_dir(example) / "results.json").read_text())
    (cell,) = results["cells"]
    assert cell["id"] == "sqlite:2.22.5->3.17.2" and cell["status"] == "pass"
    assert {c["scenario"] for c in cell["checks"] if c["scenario"]} == {"quickstart"}
    assert any(c["phase"] == "differential" and c["status"] == "pass" for c in cell["checks"])
    source = f"file {example / 'pyproject.toml'} [tool.mlflow-compat]"
    opts = results["options"]
    assert opts["backends"] == {"value": ["sqlite"], "source": source}
    assert opts["paths"]["source"] == f"gate: from baseline 2.22.5 ({source}) and oldest 2.22.5 ({source})"
    # the harness that ran is the wheel the runner installed into its env
    used = {s["path"] for s in scenarios_run(gate_run_dir(example))}
    assert used and all(Path(p).is_relative_to(env_dir) for p in used), used
