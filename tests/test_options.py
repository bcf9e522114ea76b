"""Options declared once (harness.options), the run's steps (harness.run) and what a worker builds from
run.json (harness.plugin): pure units, nothing started."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness import options
from harness.backends import BACKENDS, Backend
from harness.config import RunConfig
from harness.plan import CellPlan
from harness.plugin import CellInfrastructureError, of_run
from harness.run import Run, execute
from harness.rundir import RunDir
from harness.specs import parse_path

# The report's options table, row by row, as it has always been (a change here changes every report).
TABLE = ["backends", "paths", "auth", "artifact_stores", "scale", "rolling", "random_plan", "clients",
         "results_dir",
         "select", "jobs",
         "runtime", "keep_stores", "profile", "scenarios", "scripts", "scenario_dirs", "expectations",
         "allow_xpass",
         "compare", "shard", "client_launch", "server_launch", "resolution", "resolution_grace",
         "postgres_url", "mysql_url", "base_image", "docker_network", "postgres_image", "mysql_image",
         "differential", "resolved"]  # fmt: skip


def parsed(tmp_path: Path, *argv: str, environ: dict[str, str] | None = None) -> options.Options:
    parser = options.Parser(prog="t")
    options.add_options(parser, "run")
    args = parser.parse_args(["--results-dir", str(tmp_path / "r"), *argv])
    return options.parse(args, environ or {})


def test_the_options_table_keeps_its_rows_values_and_sources(tmp_path: Path) -> None:
    opts = parsed(tmp_path, "--path", "2.22.5:3.17.2", "--postgres-url", "postgresql://u:s3cret@h:5/x",
                  "--shard", "1/2", environ={"MLFLOW_COMPAT_JOBS": "3"})  # fmt: skip
    table = opts.describe()
    assert list(table) == TABLE
    assert table["paths"] == {"value": ["2.22.5:3.17.2"], "source": "command line"}
    assert table["jobs"] == {"value": 3, "source": "environment MLFLOW_COMPAT_JOBS"}
    assert table["backends"]["source"] == "default"
    assert table["clients"] == {"value": None, "source": "default (each path's ends)"}
    assert table["shard"] == {"value": "1/2", "source": "command line"}
    assert table["postgres_url"] == {"value": "postgresql://u:***@h:5/x", "source": "command line"}
    assert table["mysql_url"] == {"value": "a local server started by the run", "source": "default"}
    assert table["docker_network"] == {"value": "auto", "source": "default"}
    assert table["results_dir"]["value"] == str((tmp_path / "r").resolve())


def test_scale_and_rolling_are_sizes_and_flags_refused_where_they_mean_nothing(tmp_path: Path) -> None:
    assert [options.parse_size(t) for t in ("1m", "250k", "20000", "1.5m", "off", "0")] == [
        1_000_000, 250_000, 20_000, 1_500_000, 0, 0]  # fmt: skip
    table = parsed(tmp_path).describe()
    assert table["scale"] == {"value": "off", "source": "default"}
    assert table["rolling"] == {"value": False, "source": "default"}
    opts = parsed(tmp_path, "--backend", "postgres", "--scale", "1m", "--rolling")
    assert opts.value("scale") == 1_000_000 and opts.value("rolling") is True
    assert opts.describe()["scale"] == {"value": "1m", "source": "command line"}
    assert parsed(tmp_path, environ={"MLFLOW_COMPAT_SCALE": "20k"}).value("scale") == 20_000
    for argv, refusal in (
        (("--scale", "12x"), r"^--scale 12x: expected a size such as 1m, 250k or 20000$"),
        (("--scale", "500"), r"^--scale 500: at least 1000 metric points \(1k\), or 0 for none$"),
        (("--backend", "file", "--scale", "1m"), r"^--scale seeds SQL stores: add --backend sqlite"),
        (("--backend", "sqlite", "--rolling"), r"^--rolling needs a database server backend"),
    ):
        with pytest.raises(options.BadInput, match=refusal):
            parsed(tmp_path, *argv)


def test_cell_features_come_from_flags_environment_or_profile(tmp_path: Path) -> None:
    table = parsed(tmp_path).describe()
    assert table["auth"] == {"value": ["off"], "source": "profile smoke"}
    assert table["artifact_stores"] == {"value": ["local"], "source": "profile smoke"}
    opts = parsed(tmp_path, "--artifact-store", "s3", "--artifact-store", "local",
                  environ={"MLFLOW_COMPAT_AUTH": "1"})  # fmt: skip
    assert opts.value("auth") == (True,) and opts["auth"].source == "environment MLFLOW_COMPAT_AUTH"
    assert opts.value("artifact_stores") == ("s3", "local")
    with pytest.raises(options.BadInput, match=r"^unknown artifact store 'gcs' \(choose from local, s3\)$"):
        parsed(tmp_path, environ={"MLFLOW_COMPAT_ARTIFACT_STORE": "gcs"})
    with pytest.raises(options.BadInput, match=r"^MLFLOW_COMPAT_AUTH='maybe': expected 1/true"):
        parsed(tmp_path, environ={"MLFLOW_COMPAT_AUTH": "maybe"})


def test_a_profile_default_says_so(tmp_path: Path) -> None:
    table = parsed(tmp_path, environ={"MLFLOW_COMPAT_PROFILE": "smoke"}).describe()
    assert table["profile"]["source"] == "environment MLFLOW_COMPAT_PROFILE"
    assert table["paths"]["source"] == "profile smoke"


def test_a_refusing_backend_is_refused_with_its_own_line(tmp_path: Path) -> None:
    assert BACKENDS["mssql"].unavailable() == "mssql: no server available on this machine"
    with pytest.raises(options.BadInput) as exc:
        parsed(tmp_path, "--backend", "sqlite", "--backend", "mssql")
    assert str(exc.value) == "mssql: no server available on this machine"


def test_per_backend_options_come_from_the_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new SQL backend gets --X-url and --X-image with no option code; a refusing one gets neither."""
    pg = BACKENDS["postgres"]
    extra = {
        "pg2": Backend("pg2", 99, pg.store, pg.product),
        "nope": Backend("nope", 98, pg.store, pg.product, refusal="nope: not here"),
    }
    monkeypatch.setattr(options, "BACKENDS", {**BACKENDS, **extra})
    urls = {o.flags[0]: o for o in options._url_options()}
    images = {o.flags[0] for o in options._image_options()}
    assert "--pg2-url" in urls and "--pg2-image" in images
    assert "--nope-url" not in urls and "--nope-image" not in images
    assert "--mssql-url" not in urls, "mssql refuses: it adds no option and no row to the report"
    assert urls["--pg2-url"].env == "MLFLOW_COMPAT_PG2_URL"


def test_a_bad_value_from_the_environment_is_named_by_its_variable(tmp_path: Path) -> None:
    with pytest.raises(
        options.BadInput, match=r"^unknown runtime 'k8s' \(choose from local, docker, auto\)$"
    ):
        parsed(tmp_path, environ={"MLFLOW_COMPAT_RUNTIME": "k8s"})
    with pytest.raises(options.BadInput, match=r"^--jobs must be a whole number, not 'many'$"):
        parsed(tmp_path, environ={"MLFLOW_COMPAT_JOBS": "many"})


def test_the_run_configuration_carries_the_workers_settings(tmp_path: Path) -> None:
    opts = parsed(tmp_path, "--client-launch", "spawn", "--keep-stores", "--runtime", "local",
                  "--mysql-url", "mysql://root@db:3306/")  # fmt: skip
    config = opts.config("rid")
    assert (config.run_id, config.runtime, config.client_launch, config.keep_stores) == (
        "rid",
        "local",
        "spawn",
        True,
    )
    assert config.database_urls == {"mysql": "mysql://root@db:3306/"}
    assert config.docker_network == "host"  # `auto` on a local run: no bridge


def test_a_step_that_returns_a_code_ends_the_run_and_the_services_close_anyway() -> None:
    class Scope:
        closed = 0

        def close(self) -> None:
            Scope.closed += 1

    done: list[str] = []
    run = Run(options.Options({}))

    def opens(r: Run) -> None:
        r.scope = Scope()  # type: ignore[assignment]
        done.append("opens")

    def stops(r: Run) -> int:
        done.append("stops")
        return 7

    def never(r: Run) -> None:
        done.append("never")

    assert execute([opens, stops, never], run) == 7
    assert done == ["opens", "stops"] and Scope.closed == 1 and run.scope is None

    def crashes(r: Run) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        execute([opens, crashes, never], Run(options.Options({})))
    assert Scope.closed == 2, "an exception in a step still closes what was opened"


def test_a_worker_builds_each_cell_from_run_json_alone(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run-1")
    run_dir.path.mkdir()
    why = "the local server did not start: initdb failed"
    services = {"databases": {"postgres": {"unavailable": why}}}
    config = RunConfig(
        run_id="run-1", runtime="local", client_launch="spawn", keep_stores=True, services=services
    )
    config.write(run_dir.config, tmp_path)
    plan = CellPlan("postgres", parse_path("2.22.5:3.17.2"), parse_path("2.22.5:3.17.2"))
    worker = of_run(run_dir)
    try:
        ctx = worker.context(plan)
    finally:
        worker.close()
    assert ctx.client_launch == "spawn" and ctx.keep_store is True and ctx.run_id == "run-1"
    assert ctx.databases == {}
    assert ctx.unavailable["postgres"] == why
    assert ctx.unavailable["mysql"] == "none was configured"
    assert ctx.cell_dir == run_dir.cell(plan.slug).path
    assert ctx.runtime.name == "local"


def test_an_unknown_option_name_is_a_bug_not_a_silent_none() -> None:
    with pytest.raises(KeyError):
        options.Options({}).value("no_such_option")
    assert isinstance(options.OPTIONS["jobs"].given(argparse.Namespace(jobs=None), {}).value, int)


def test_run_json_holds_no_password_and_the_workers_still_get_it(tmp_path: Path) -> None:
    """A user's database URL and a published one, each with a password: run.json (in the results) masks
    both, the private file (outside the results) keeps them, and reading run.json gives them back whole."""
    secret = "s3cret-Pw-42"
    mine = f"mysql+pymysql://compat:{secret}@127.0.0.1:3306/"
    theirs = f"postgresql+psycopg2://postgres:{secret}@127.0.0.1:5432/postgres"
    services = {"databases": {"postgres": {"url": theirs}, "mysql": {"unavailable": "no"}}}
    config = RunConfig(run_id="run-2", database_urls={"mysql": mine}, services=services)
    results, private = tmp_path / "results", tmp_path / "private"
    results.mkdir()
    private.mkdir()
    config.write(results / "run.json", private)
    assert secret not in (results / "run.json").read_text()
    assert "***" in (results / "run.json").read_text()
    assert [p.name for p in results.iterdir()] == ["run.json"]
    assert secret in (private / "secrets.json").read_text()
    assert oct((private / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert RunConfig.read(results / "run.json") == config


def test_a_config_without_passwords_needs_no_private_file(tmp_path: Path) -> None:
    config = RunConfig(
        run_id="run-3", services={"databases": {"postgres": {"url": "postgresql://postgres@h:1/p"}}}
    )
    config.write(tmp_path / "run.json", tmp_path / "nowhere")  # not made: nothing to put there
    assert "secrets" not in json.loads((tmp_path / "run.json").read_text())
    assert RunConfig.read(tmp_path / "run.json") == config


def test_a_run_directory_without_run_json_is_an_error_not_a_run_on_defaults(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run-4")
    run_dir.path.mkdir()
    with pytest.raises(CellInfrastructureError, match=r"run\.json: no run configuration"):
        of_run(run_dir)
