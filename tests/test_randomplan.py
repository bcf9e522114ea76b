"""Seeded random upgrade plans (harness/randomplan.py, `--random-plan SEED`): the draw as a pure unit (same
seed, same plans; 2-4 ascending hops; clients from the path; a scenario order that survives the plan file),
the real command line (the seed printed first, the drawn cells listed, bad input refused with one line), the
report's section, and one real drawn cell on SQLite whose result records its seed and ran its scenarios in
the drawn order."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import randomplan, scenarios
from harness.options import BadInput
from harness.plan import CellPlan
from harness.report import render_html, render_markdown
from harness.results import CellResult, RunResult, Status
from harness.specs import parse_spec
from tests.conftest import REPO, run_cli
from tests.test_options import parsed

POOL = [parse_spec(v) for v in ("1.30.1", "2.0.1", "2.9.2", "2.22.5", "3.0.0", "3.0.1", "3.10.0", "3.17.2")]
NAMES = scenarios.fitting(scenarios.default_names(), frozenset())  # a plain cell's: no auth, no S3
THREE = "1.30.1:2.22.5:3.17.2"  # the smallest pool a 2-hop path needs; the envs of these are warm


def labels(plan: CellPlan) -> tuple[list[str], list[str], list[str]]:
    return [s.label for s in plan.path], [s.label for s in plan.clients], list(plan.scenarios)


def test_one_seed_draws_one_plan_and_other_seeds_draw_others() -> None:
    shuffled = random.Random(0).sample(POOL, len(POOL)) + POOL[:3]  # another order, duplicates: same pool
    for seed in (0, 7, 123456):
        a = randomplan.draw(seed, "sqlite", POOL, NAMES)
        b = randomplan.draw(seed, "sqlite", shuffled, NAMES)
        assert labels(a) == labels(b) and a.id == b.id and a.id.endswith(f"[seed={seed}]") and a.seed == seed
    drawn = {tuple(map(tuple, labels(randomplan.draw(s, "sqlite", POOL, NAMES)))) for s in range(20)}
    assert len(drawn) == 20, "20 seeds, 20 different plans"
    by_backend = {b: labels(randomplan.draw(7, b, POOL, NAMES)) for b in ("sqlite", "postgres", "mysql")}
    assert len({repr(v) for v in by_backend.values()}) == 3, "each backend gets a draw of its own"


def test_paths_ascend_through_2_to_4_hops_and_clients_come_from_the_path() -> None:
    hops, sizes = set(), set()
    for seed in range(300):
        plan = randomplan.draw(seed, "postgres", POOL, NAMES, runtime="docker")
        versions = [s.version for s in plan.path]
        assert 2 <= len(plan.path) - 1 <= 4 and versions == sorted(set(versions)), plan.id
        assert set(plan.path) <= set(POOL)
        assert set(plan.clients) <= set(plan.path) and 1 <= len(plan.clients) <= 3, plan.id
        assert [s.version for s in plan.clients] == sorted({s.version for s in plan.clients})
        assert sorted(plan.scenarios) == sorted(NAMES) and plan.runtime == "docker"
        assert not (plan.auth or plan.scale or plan.rolling) and plan.artifact_store == "local"
        hops.add(len(plan.path) - 1)
        sizes.add(len(plan.clients))
    assert hops == {2, 3, 4} and sizes == {1, 2, 3}, "the draw covers every length it allows"
    orders = {randomplan.draw(s, "sqlite", POOL, NAMES).scenarios for s in range(20)}
    assert len(orders) > 1, "the scenario order is drawn"


def test_the_drawn_scenario_order_survives_the_plan_file_and_is_the_order_a_cell_runs() -> None:
    plan = next(p for s in range(50) if (p := randomplan.draw(s, "sqlite", POOL, NAMES)).scenarios != NAMES)
    again = CellPlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan and again.scenarios == plan.scenarios and again.id == plan.id
    # harness.cell builds its client steps from this list, and clientsteps runs it in this order
    assert [s.name for s in scenarios.resolve(again.scenarios)] == list(plan.scenarios)
    path, clients, order = labels(plan)
    replay = f"--random-plan {plan.seed}"
    expected = {"seed": plan.seed, "path": path, "clients": clients, "scenarios": order, "replay": replay}
    assert randomplan.record(plan) == expected


def test_a_pool_too_small_for_two_hops_and_a_backend_with_no_schema() -> None:
    with pytest.raises(
        randomplan.PlanError, match=r"at least 3 MLflow versions .* \(it has 2: 2.22.5, 3.17.2\)"
    ):
        randomplan.draw(
            1, "sqlite", [parse_spec("2.22.5"), parse_spec("3.17.2"), parse_spec("3.17.2")], NAMES
        )
    assert [randomplan.drawn_for(b) for b in ("file", "file_to_sqlite", "sqlite", "postgres", "mysql")] == [
        False, False, True, True, True]  # fmt: skip
    pool = randomplan.pool_of([(POOL[0], POOL[3]), (POOL[3], POOL[7])])
    cells = randomplan.draw_run(5, ["file", "sqlite", "mysql", "file_to_sqlite"], pool, NAMES)
    assert [c.backend for c in cells] == ["sqlite", "mysql"] and {c.seed for c in cells} == {5}


def test_the_option_takes_a_seed_new_or_the_profile_and_refuses_the_rest(tmp_path: Path) -> None:
    assert parsed(tmp_path).describe()["random_plan"] == {"value": "off", "source": "default"}
    assert parsed(tmp_path, "--random-plan", "42").describe()["random_plan"] == {
        "value": 42, "source": "command line"}  # fmt: skip
    env = parsed(tmp_path, environ={"MLFLOW_COMPAT_RANDOM_PLAN": "9"})["random_plan"]
    assert env.value == 9 and env.source == "environment MLFLOW_COMPAT_RANDOM_PLAN"
    new = parsed(tmp_path, "--random-plan", "new")["random_plan"]
    assert isinstance(new.value, int) and new.source == "command line (a new seed)"
    nightly = parsed(tmp_path, "--profile", "nightly")["random_plan"]
    assert isinstance(nightly.value, int) and nightly.source == "profile nightly (a new seed)"
    assert parsed(tmp_path, "--profile", "nightly", "--random-plan", "3").value("random_plan") == 3
    assert parsed(tmp_path, "--profile", "nightly", "--backend", "file").value("random_plan") is None
    refusals = {
        ("--random-plan", "x"): "--random-plan x: expected a seed (a whole number, 0 or more) or `new`",
        ("--random-plan=-1",): "--random-plan -1: expected a seed",
        (
            "--random-plan",
            "4",
            "--backend",
            "file",
        ): "--random-plan 4: random plans are drawn per SQL backend",
        (
            "--profile",
            "nightly",
            "--shard",
            "2/4",
        ): "--shard 2/4 with a new random-plan seed: pass --random-plan N",
    }
    for argv, message in refusals.items():
        with pytest.raises(BadInput, match=re.escape(message)):
            parsed(tmp_path, *argv)
    with pytest.raises(BadInput, match=r"^MLFLOW_COMPAT_RANDOM_PLAN=abc: expected a seed"):
        parsed(tmp_path, environ={"MLFLOW_COMPAT_RANDOM_PLAN": "abc"})


def run_merged(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`run_cli`, with stderr joined to stdout unbuffered: lines in the order the run printed them."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=REPO, env=env,
                          check=False)  # fmt: skip


def test_the_cli_prints_the_seed_first_lists_the_drawn_cells_and_replays_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = ["run", "--list", "--runtime", "local", "--results-dir", str(results), "--path", THREE,
            "--path", "2.22.5:3.17.2", "--scenarios", "quickstart,metric_history,search"]  # fmt: skip
    proc = run_merged(*argv, "--random-plan", "7")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == "random plan seed: 7 (replay with --random-plan 7)", lines
    pool = [parse_spec(v) for v in THREE.split(":")]
    names = ("quickstart", "metric_history", "search")
    expected = [
        randomplan.draw(7, b, pool, names, runtime="local").id for b in ("sqlite", "postgres", "mysql")
    ]
    assert [line for line in lines if "[seed=" in line] == expected
    assert "sqlite:2.22.5->3.17.2" in lines and "file:2.22.5->3.17.2" in lines  # the planned cells stay
    assert "# random plan pool: 1.30.1, 2.22.5, 3.17.2" in lines
    assert run_merged(*argv, "--random-plan", "7").stdout == proc.stdout, "a replay lists the same cells"
    new = run_merged(*argv, "--random-plan", "new")
    seed = int(new.stdout.splitlines()[0].split()[3])
    assert new.stdout == run_merged(*argv, "--random-plan", str(seed)).stdout, "a new seed replays too"
    assert not results.exists(), "listing starts nothing and writes nothing"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--random-plan", "x"], "--random-plan x: expected a seed (a whole number, 0 or more) or `new`"),
        (["--random-plan", "3", "--path", "2.22.5:3.17.2"],
         "--random-plan needs at least 3 MLflow versions among the run's paths for a 2-hop path "
         "(it has 2: 2.22.5, 3.17.2); add a --path"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli(
        "run", "--runtime", "local", "--results-dir", str(tmp_path / "results"), *args, timeout=300
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"mlflow-compat: error: {message}"]
    assert proc.stdout == "" and not (tmp_path / "results").exists()


def drawn_result(seed: int, status: Status = Status.PASS) -> CellResult:
    plan = randomplan.draw(seed, "sqlite", POOL, ("quickstart", "search"))
    return CellResult(plan.id, "sqlite", "local", labels(plan)[0], labels(plan)[1], status=status, seed=seed,
                      dir=plan.slug, components={"random_plan": randomplan.record(plan)})  # fmt: skip


def test_the_report_names_the_seed_and_each_drawn_plan_and_says_nothing_without_one() -> None:
    plain = CellResult("sqlite:2.22.5->3.17.2", "sqlite", "local", ["2.22.5", "3.17.2"], ["2.22.5", "3.17.2"])
    drawn = drawn_result(31, Status.FAIL)
    options = {"random_plan": {"value": 31, "source": "command line (a new seed)"},
               "resolved": {"random plan pool": "1.30.1, 2.22.5"}}  # fmt: skip
    run = RunResult("r1", "s", "e", "t", options, [plain, drawn])
    md, html = render_markdown(run), render_html(run)
    order = ", ".join(drawn.components["random_plan"]["scenarios"])
    assert "## Random plans" in md and "Seed **31** · from command line (a new seed) · replay" in md
    assert "replay with `--random-plan 31`" in md and "drawn from 1.30.1, 2.22.5" in md
    row = f"| `{drawn.id}` | 31 | {' → '.join(drawn.path)} | {', '.join(drawn.clients)} | {order} | ❌ fail |"
    assert row in md, md
    assert '<strong class="seed">31</strong>' in html and f'<a href="#cell-{drawn.dir}">' in html
    assert f"<td>{order}</td>" in html and '<td class="status fail">fail</td></tr>' in html
    # Another seed in a merged run is named too; a run without any says nothing about random plans.
    merged = RunResult("r2", "s", "e", "t", options, [plain, drawn, drawn_result(5)])
    assert "Seeds **31**, **5**" in render_markdown(merged)
    none = RunResult("r3", "s", "e", "t", {"random_plan": {"value": "off", "source": "default"}}, [plain])
    assert "Random plans" not in render_markdown(none) and "Random plans" not in render_html(none)


@pytest.mark.cell
def test_a_real_drawn_cell_on_sqlite_records_its_seed_and_runs_the_drawn_order(tmp_path: Path) -> None:
    """One drawn cell through the real CLI (`-k seed` leaves the planned cell of the same path out): a seed
    whose scenario order is not the default one, so the order the checks ran in shows it was followed."""
    pool = [parse_spec(v) for v in THREE.split(":")]
    names = ("quickstart", "experiment_lifecycle")
    plan = next(p for s in range(100) if (p := randomplan.draw(s, "sqlite", pool, names)).scenarios != names
                and len(p.clients) < 3)  # fmt: skip
    seed = plan.seed
    assert seed is not None
    results = tmp_path / "results"
    proc = run_merged("run", "--results-dir", str(results), "--runtime", "local", "--backend", "sqlite",
                      "--path", THREE, "--scenarios", ",".join(names), "--random-plan", str(seed),
                      "-k", "seed", "-n", "1", timeout=1500)  # fmt: skip
    assert proc.stdout.splitlines()[0] == f"random plan seed: {seed} (replay with --random-plan {seed})"
    assert proc.returncode == 0, proc.stdout[-3000:]
    data = json.loads(((results / "latest").resolve() / "results.json").read_text())
    (cell,) = data["cells"]
    assert cell["id"] == plan.id and cell["seed"] == seed and cell["status"] == "pass", cell["summary"]
    assert cell["path"] == ["1.30.1", "2.22.5", "3.17.2"] and cell["clients"] == labels(plan)[1]
    assert cell["components"]["random_plan"] == randomplan.record(plan)
    assert data["options"]["random_plan"] == {"value": seed, "source": "command line"}
    for client in cell["clients"]:
        ran = [c["scenario"] for c in cell["checks"]
               if (c["phase"], c["name"], c["client"]) == ("before", "write", client)]  # fmt: skip
        assert ran == list(plan.scenarios) == list(reversed(names)), (client, ran)
    report = ((results / "latest") / "report.md").read_text()
    assert f"Seed **{seed}** · from command line · replay" in report and f"| `{plan.id}` | {seed} |" in report
