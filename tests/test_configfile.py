"""A team's config file (harness.configfile) and what harness.options makes of it: where it is found, what
its keys take, the precedence command line > environment > file > default with each value's source, the
team's scenario directories and expectation files. Pure units: nothing is started (the same settings are
honoured by an installed wheel for real in tests/test_packaging.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli, configfile, expectations, options, scenarios
from harness.config import RunConfig
from harness.configfile import ConfigError, Key, find
from harness.results import CellResult, Check, Status

KEYS = {"backends": Key("list"), "jobs": Key("int"), "keep_stores": Key("bool"), "runtime": Key("str"),
        "scenarios": Key("csv"), "results_dir": Key("str", paths=True),
        "scenario_dirs": Key("list", paths=True)}  # fmt: skip

TEAM_SCENARIO = '''"""A team's own scenario: one param."""
import mlflow

REQUIRES = ()


def write(ctx):
    with mlflow.start_run() as run:
        mlflow.log_param("team", "yes")
    return {"run_id": run.info.run_id, "params": {"team": "yes"}}


def read(ctx, record):
    return {"run_id": record["run_id"], "params": dict(mlflow.get_run(record["run_id"]).data.params)}
'''


@pytest.fixture(autouse=True)
def no_team_scenarios() -> Iterator[None]:
    """A test that adds a team's scenario directory leaves the built-in scenarios as they were."""
    yield
    scenarios.use_dirs(())


def repo(tmp_path: Path, pyproject: str | None = None, own: str | None = None) -> Path:
    """A team's repository (a .git directory ends the search there) with the files given."""
    root = tmp_path / "team"
    (root / ".git").mkdir(parents=True)
    if pyproject is not None:
        (root / "pyproject.toml").write_text(pyproject)
    if own is not None:
        (root / "mlflow-compat.toml").write_text(own)
    return root


def parsed(
    cwd: Path, *argv: str, environ: dict[str, str] | None = None, command: str = "run"
) -> options.Options:
    parser = options.Parser(prog="t")
    options.add_options(parser, command)
    return options.parse(parser.parse_args(list(argv)), environ or {}, cwd=cwd)


# -- finding the file --------------------------------------------------------------------------------------
def test_the_file_is_found_upwards_and_the_search_ends_at_a_project_or_a_repository(tmp_path: Path) -> None:
    root = repo(tmp_path, pyproject='[tool.mlflow-compat]\nbackends = ["sqlite"]\n')
    deep = root / "src" / "pkg"
    deep.mkdir(parents=True)
    found = find(deep, KEYS, {})
    assert found is not None and found.path == root / "pyproject.toml" and found.in_pyproject
    assert found.values == {"backends": ["sqlite"]}
    assert found.source == f"file {root / 'pyproject.toml'} [tool.mlflow-compat]"
    # mlflow-compat.toml wins over pyproject in the same directory; its keys are at the top level
    (root / "mlflow-compat.toml").write_text('backends = ["postgres"]\n')
    own = find(deep, KEYS, {})
    assert own is not None and own.values == {"backends": ["postgres"]} and own.source == f"file {own.path}"
    # a nearer project without the table has no settings: its parent's are not borrowed
    (deep / "pyproject.toml").write_text('[project]\nname = "inner"\n')
    assert find(deep, KEYS, {}) is None
    # a repository's top ends the search: a file above it is not the team's
    outer = tmp_path / "mlflow-compat.toml"
    outer.write_text('backends = ["mysql"]\n')
    (root / "mlflow-compat.toml").unlink()
    (root / "pyproject.toml").unlink()
    assert find(root / "src", KEYS, {}) is None
    (root / ".git").rmdir()
    above = find(root / "src", KEYS, {})
    assert above is not None and above.path == outer


def test_MLFLOW_COMPAT_CONFIG_names_the_file_outright(tmp_path: Path) -> None:
    root = repo(tmp_path, pyproject='[tool.mlflow-compat]\nbackends = ["sqlite"]\n')
    named = tmp_path / "ci.toml"
    named.write_text('[tool.mlflow-compat]\nbackends = ["postgres"]\n')
    found = find(root, KEYS, {configfile.CONFIG_ENV: str(named)})
    assert found is not None and found.values == {"backends": ["postgres"]} and found.in_pyproject
    top = tmp_path / "flat.toml"
    top.write_text("jobs = 3\n")
    found = find(root, KEYS, {configfile.CONFIG_ENV: "../flat.toml"})  # relative to where it runs
    assert found is not None and found.values == {"jobs": 3} and found.source == f"file {top}"
    with pytest.raises(ConfigError, match=r"^MLFLOW_COMPAT_CONFIG=nope.toml: no such file$"):
        find(root, KEYS, {configfile.CONFIG_ENV: "nope.toml"})
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml: no \[tool.mlflow-compat\] table$"):
        find(root, KEYS, {configfile.CONFIG_ENV: str(root / "pyproject.toml")})


# -- what a key takes --------------------------------------------------------------------------------------
def test_keys_in_kebab_or_snake_case_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    root = repo(tmp_path, own='results-dir = "out"\nscenario_dirs = ["compat/scen", "/abs"]\n'
                'keep-stores = true\nscenarios = ["quickstart", "search"]\n')  # fmt: skip
    found = find(root, KEYS, {})
    assert found is not None
    assert found.values == {"results_dir": str(root / "out"),
                            "scenario_dirs": [str(root / "compat/scen"), "/abs"],
                            "keep_stores": True, "scenarios": "quickstart,search"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('backend = ["sqlite"]', r"mlflow-compat.toml: unknown key 'backend' \(known: backends, jobs, "),
        (
            'backends = "sqlite"',
            r"mlflow-compat.toml: backends: expected a list of strings, got a string \('sqlite'\)$",
        ),
        ("backends = [1.5]", r"mlflow-compat.toml: backends: expected a string, got a number \(1.5\)$"),
        ('jobs = "two"', r"mlflow-compat.toml: jobs: expected a whole number, got a string \('two'\)$"),
        ("jobs = true", r"mlflow-compat.toml: jobs: expected a whole number, got a bool \(True\)$"),
        ('keep-stores = "yes"', r"mlflow-compat.toml: keep-stores: expected true or false, got a string"),
        ('runtime = ["local"]', r"mlflow-compat.toml: runtime: expected a string, got a list"),
        ("runtime = { a = 1 }", r"mlflow-compat.toml: runtime: expected a string, got a table"),
        ("jobs = 1\njobs = 2", r"mlflow-compat.toml: not valid TOML \("),
        ("jobs = 1\n'jobs' = 2\n", r"mlflow-compat.toml: not valid TOML"),
        ("jobs = 1\nresults-dir = 'a'\nresults_dir = 'b'", r"key 'results_dir' is given twice"),
    ],
)
def test_an_unknown_key_or_a_wrong_type_is_one_line_naming_file_and_key(
    tmp_path: Path, body: str, message: str
) -> None:
    root = repo(tmp_path, own=body)
    with pytest.raises(ConfigError, match=message) as caught:
        find(root, KEYS, {})
    assert "\n" not in str(caught.value)


def test_a_pyproject_key_is_named_with_its_table(tmp_path: Path) -> None:
    root = repo(tmp_path, pyproject="[tool.mlflow-compat]\njobs = 'x'\n")
    with pytest.raises(
        ConfigError, match=r"pyproject.toml \[tool.mlflow-compat\]: jobs: expected a whole number"
    ):
        find(root, KEYS, {})
    (root / "pyproject.toml").write_text("[tool]\nmlflow-compat = 3\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: tool.mlflow-compat must be a table$"):
        find(root, KEYS, {})


# -- the options: precedence and sources -------------------------------------------------------------------
def test_command_line_over_environment_over_file_over_default_each_with_its_source(tmp_path: Path) -> None:
    root = repo(tmp_path, pyproject='[tool.mlflow-compat]\nbackends = ["sqlite"]\njobs = 3\n'
                'runtime = "local"\nresults-dir = "compat-results"\nprofile = "smoke"\n'
                'scenarios = ["quickstart", "search"]\n')  # fmt: skip
    source = f"file {root / 'pyproject.toml'} [tool.mlflow-compat]"
    table = parsed(root).describe()
    assert table["backends"] == {"value": ["sqlite"], "source": source}
    assert table["jobs"] == {"value": 3, "source": source}
    assert table["runtime"] == {"value": "local", "source": source}
    assert table["results_dir"] == {"value": str(root / "compat-results"), "source": source}
    assert table["scenarios"] == {"value": ("quickstart", "search"), "source": source}
    assert table["client_launch"] == {"value": "fork", "source": "default"}
    env = {"MLFLOW_COMPAT_JOBS": "2", "MLFLOW_COMPAT_RESULTS_DIR": str(tmp_path / "from-env")}
    table = parsed(root, environ=env).describe()
    assert table["jobs"] == {"value": 2, "source": "environment MLFLOW_COMPAT_JOBS"}
    assert table["results_dir"]["source"] == "environment MLFLOW_COMPAT_RESULTS_DIR"
    assert table["backends"]["source"] == source
    table = parsed(root, "--jobs", "1", "--backend", "file", environ=env).describe()
    assert table["jobs"] == {"value": 1, "source": "command line"}
    assert table["backends"] == {"value": ["file"], "source": "command line"}
    # no file: the defaults, as ever
    (root / "pyproject.toml").unlink()
    table = parsed(root).describe()
    assert table["jobs"]["source"] == "default" and table["backends"]["source"] == "default"


def test_paths_from_the_file_are_the_files_and_from_to_on_the_command_line_override_them(
    tmp_path: Path,
) -> None:
    root = repo(tmp_path, own='paths = ["2.22.5:3.17.2", "1.30.1:2.22.5:3.17.2"]\n')
    row = parsed(root).describe()["paths"]
    assert row == {
        "value": ["2.22.5:3.17.2", "1.30.1:2.22.5:3.17.2"],
        "source": f"file {root / 'mlflow-compat.toml'}",
    }
    row = parsed(root, "--from", "1.30.1", "--to", "2.22.5").describe()["paths"]
    assert row == {"value": ["1.30.1:2.22.5"], "source": "command line"}
    row = parsed(root, "--path", "1.30.1:3.17.2").describe()["paths"]
    assert row == {"value": ["1.30.1:3.17.2"], "source": "command line"}


def test_a_value_the_file_gives_and_its_check_refuses_names_the_file_and_key(tmp_path: Path) -> None:
    root = repo(tmp_path, own='backends = ["oracle"]\n')
    with pytest.raises(options.BadInput, match=r"mlflow-compat.toml: backends: unknown backend 'oracle'"):
        parsed(root)
    # the command line's value is never blamed on the file
    with pytest.raises(options.BadInput, match=r"^unknown backend 'db2'"):
        parsed(root, "--backend", "db2")
    (root / "mlflow-compat.toml").write_text('runtime = "k8s"\n')
    with pytest.raises(options.BadInput, match=r"mlflow-compat.toml: runtime: unknown runtime 'k8s'"):
        parsed(root)


def test_every_option_is_settable_from_the_file_unless_it_says_it_is_not() -> None:
    keys = {o.file_key for o in options.OPTIONS.values() if o.file_key}
    assert {"backends", "profile", "baseline", "oldest", "scenario_dirs", "expectations", "results_dir",
            "runtime", "jobs", "paths", "scenarios"} <= keys  # fmt: skip
    # what means something for one invocation only has no key
    assert not keys & {"candidate", "from_", "to", "shard", "shards", "list", "compare", "differential"}
    assert options.OPTIONS["backends"].file_type == Key("list")
    assert options.OPTIONS["jobs"].file_type == Key("int")
    assert options.OPTIONS["keep_stores"].file_type == Key("bool")
    assert options.OPTIONS["expectations"].file_type == Key("list", paths=True)


def test_bad_file_content_is_one_line_and_exit_2_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = repo(tmp_path, pyproject='[tool.mlflow-compat]\nbackends = "sqlite"\nresults-dir = "out"\n')
    monkeypatch.chdir(root)
    monkeypatch.delenv(configfile.CONFIG_ENV, raising=False)
    for argv in (["run", "--list"], ["gate", "--candidate", "3.17.2"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"mlflow-compat: error: {root / 'pyproject.toml'} [tool.mlflow-compat]: backends: "
                       "expected a list of strings, got a string ('sqlite')"]  # fmt: skip
    assert not (root / "out").exists()


def test_the_gate_takes_baseline_and_oldest_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.run import gate_options

    root = repo(
        tmp_path, own='baseline = "2.22.5"\noldest = "1.30.1"\nbackends = ["sqlite"]\nruntime = "local"\n'
    )
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_COMPAT_BASELINE", raising=False)
    monkeypatch.delenv("MLFLOW_COMPAT_OLDEST", raising=False)
    parser = options.Parser(prog="t")
    options.add_options(parser, "gate")
    opts, gate = gate_options(
        parser.parse_args(["--candidate", "3.17.2", "--results-dir", str(tmp_path / "r")])
    )
    assert (gate.baseline, gate.oldest) == ("2.22.5", "1.30.1")
    row = opts.describe()["paths"]
    assert row["value"] == ["2.22.5:3.17.2", "1.30.1:3.17.2"]
    source = f"file {root / 'mlflow-compat.toml'}"
    assert row["source"] == f"gate: from baseline 2.22.5 ({source}) and oldest 1.30.1 ({source})"
    opts, gate = gate_options(parser.parse_args(["--candidate", "3.17.2", "--oldest", "2.22.5",
                                                 "--results-dir", str(tmp_path / "r")]))  # fmt: skip
    assert gate.oldest == "2.22.5" and opts.value("paths")[0][0].label == "2.22.5"
    assert "oldest 2.22.5 (command line)" in opts["paths"].source
    (root / "mlflow-compat.toml").write_text('oldest = "one.two"\n')
    with pytest.raises(options.BadInput, match=r"mlflow-compat.toml: oldest one.two: "):
        gate_options(parser.parse_args(["--candidate", "3.17.2"]))


# -- a team's scenarios ------------------------------------------------------------------------------------
def test_a_teams_scenario_directory_joins_the_built_in_scenarios(tmp_path: Path) -> None:
    root = repo(tmp_path, own='scenario-dirs = ["compat"]\nscenarios = ["quickstart", "team_probe"]\n')
    (root / "compat").mkdir()
    (root / "compat" / "team_probe.py").write_text(TEAM_SCENARIO)
    (root / "compat" / "_helpers.py").write_text("X = 1\n")  # a helper module is no scenario
    opts = parsed(root)
    assert opts.value("scenarios") == ("quickstart", "team_probe")
    assert opts.describe()["scenario_dirs"]["value"] == [str(root / "compat")]
    found = scenarios.builtin()["team_probe"]
    assert (
        found.path == root / "compat" / "team_probe.py" and found.doc == "A team's own scenario: one param."
    )
    assert "_helpers" not in scenarios.all_names()
    # the workers get the directories through run.json
    assert opts.config("r").scenario_dirs == (str(root / "compat"),)
    # with no directory any more, the team's scenario is gone again
    (root / "mlflow-compat.toml").write_text("")
    assert "team_probe" not in parsed(root).value("scenarios")
    with pytest.raises(options.BadInput, match="unknown scenario team_probe"):
        parsed(root, "--scenarios", "team_probe")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("quickstart.py", "the name 'quickstart' is taken by "),
        ("nowrite.py", r"defines no write\(ctx, ...\)"),
        ("broken.py", "was never closed"),
        ("unknowncap.py", r"unknown capabilities \['teleport'\]"),
    ],
)
def test_a_scenario_directory_that_cannot_be_used_is_bad_input(
    tmp_path: Path, module: str, message: str
) -> None:
    bodies = {"quickstart.py": TEAM_SCENARIO, "nowrite.py": "def read(ctx, record):\n    return record\n",
              "broken.py": "def write(ctx:\n",
              "unknowncap.py": TEAM_SCENARIO.replace("()", "('teleport',)", 1)}  # fmt: skip
    root = repo(tmp_path, own='scenario-dirs = ["compat"]\n')
    (root / "compat").mkdir()
    (root / "compat" / module).write_text(bodies[module])
    with pytest.raises(options.BadInput, match=message) as caught:
        parsed(root)
    assert "\n" not in str(caught.value)
    assert "quickstart" in scenarios.all_names() and not set(scenarios.extra_dirs())  # left as it was
    (root / "mlflow-compat.toml").write_text('scenario-dirs = ["nowhere"]\n')
    missing = r"mlflow-compat.toml: scenario_dirs: scenario directory .*nowhere: no such directory"
    with pytest.raises(options.BadInput, match=missing):
        parsed(root)


def test_a_worker_finds_the_teams_scenarios_through_run_json(tmp_path: Path) -> None:
    from harness import plugin

    team = tmp_path / "compat"
    team.mkdir()
    (team / "team_probe.py").write_text(TEAM_SCENARIO)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunConfig(run_id="r", scenario_dirs=(str(team),)).write(run_dir / "run.json", tmp_path)
    assert "team_probe" not in scenarios.all_names()

    class Config:
        def getoption(self, name: str, default: object = None) -> str:
            return str(run_dir)

    plugin.pytest_configure(Config())  # type: ignore[arg-type]
    assert scenarios.builtin()["team_probe"].path == team / "team_probe.py"
    assert json.loads((run_dir / "run.json").read_text())["scenario_dirs"] == [str(team)]


# -- a team's expectations ---------------------------------------------------------------------------------
SHIPPED_ID = "logged-models-need-a-3.0-server"


def logged_models_404() -> CellResult:
    result = CellResult(id="x", backend="sqlite", runtime="local", path=["2.22.5", "3.17.2"],
                        clients=["2.22.5", "3.17.2"])  # fmt: skip
    result.add(Check("write", "before", Status.FAIL, "the server answered HTTP 404 to POST "
                     "/api/2.0/mlflow/logged-models: Not Found", client="3.17.2", server="2.22.5",
                     scenario="logged_models"))  # fmt: skip
    return result


def test_a_teams_expectation_overrides_a_shipped_one_by_id_and_changes_the_verdict(tmp_path: Path) -> None:
    shipped = expectations.load_all(())
    assert shipped == expectations.default() and SHIPPED_ID in [e.id for e in shipped]
    result = logged_models_404()
    expectations.apply(result, shipped)
    assert result.checks[0].status is Status.XFAIL and result.status is Status.XFAIL
    # the team declares the same id with another error: the shipped entry is gone, the check fails
    team = tmp_path / "team.toml"
    team.write_text(f'[[expect]]\nid = "{SHIPPED_ID}"\ncheck = "write"\nscenario = "logged_models"\n'
                    'error = "the server answered HTTP 418"\nreason = "ours"\n[[expect]]\nid = "ours-only"\n'
                    'check = "read"\nerror = "x"\nreason = "ours"\n')  # fmt: skip
    merged = expectations.load_all((team,))
    assert [e.id for e in merged] == [*(e.id for e in shipped), "ours-only"]  # replaced in its place
    assert next(e for e in merged if e.id == SHIPPED_ID).error == "the server answered HTTP 418"
    result = logged_models_404()
    expectations.apply(result, merged)
    assert result.checks[0].status is Status.FAIL and result.status is Status.FAIL
    assert f"declared ({SHIPPED_ID}) with a different error" in result.checks[0].detail
    # a later file overrides an earlier one alike
    later = tmp_path / "later.toml"
    later.write_text(
        f'[[expect]]\nid = "{SHIPPED_ID}"\ncheck = "write"\nerror = "HTTP 404"\nreason = "later"\n'
    )
    assert next(e for e in expectations.load_all((team, later)) if e.id == SHIPPED_ID).reason == "later"


def test_expectation_files_come_from_flag_environment_or_file_and_reach_run_json(tmp_path: Path) -> None:
    root = repo(tmp_path, own='expectations = ["compat/expect.toml"]\n')
    (root / "compat").mkdir()
    ours = root / "compat" / "expect.toml"
    ours.write_text('[[expect]]\nid = "ours"\ncheck = "read"\nerror = "x"\nreason = "ours"\n')
    opts = parsed(root)
    assert opts.describe()["expectations"] == {
        "value": [str(ours)],
        "source": f"file {root / 'mlflow-compat.toml'}",
    }
    config = opts.config("r")
    assert config.expectations == (str(ours),)
    config.write(tmp_path / "run.json", tmp_path)
    assert RunConfig.read(tmp_path / "run.json").expectations == (str(ours),)
    other = tmp_path / "other.toml"
    other.write_text('[[expect]]\nid = "other"\ncheck = "read"\nerror = "x"\nreason = "x"\n')
    env = {"MLFLOW_COMPAT_EXPECTATIONS": f"{ours}:{other}"}
    assert parsed(root, environ=env).value("expectations") == (ours, other)
    assert parsed(root, "--expectations", str(other), "--expectations", str(ours)).value("expectations") == (
        other,
        ours,
    )
    ours.write_text('[[expect]]\nid = "ours"\n')
    with pytest.raises(
        options.BadInput, match=r"mlflow-compat.toml: expectations: .*expect.toml: declaration 1 lacks"
    ):
        parsed(root)


def test_run_json_written_before_these_fields_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run_id": "r", "expectations": None}))
    config = RunConfig.read(path)
    assert config.expectations == () and config.scenario_dirs == ()
