"""Migrations at scale (harness/scale.py): the seeding plan and its SQL, the checksums and what they catch,
the sample comparison, the lock sampler's arithmetic; and real scale cells on PostgreSQL and MariaDB
(`--scale 20k`) where a value changed and rows deleted after the upgrade are named by the checksum check.

The units run the seeding SQL for real on SQLite, on tables shaped like MLflow's (the columns the seeder
fills, plus one it must refuse to guess), so the Python formulas the sample is judged by are held to the SQL.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness import scale
from harness.backends import Store
from harness.cell import CellContext, run_cell
from harness.envs import EnvCache
from harness.plan import CellPlan
from harness.report import render_html, render_markdown
from harness.results import CellResult, Check, RunResult, Status
from harness.runtime import get_runtime
from harness.specs import parse_path, parse_spec


# -- the plan ------------------------------------------------------------------------------------------------
def test_plan_sizes() -> None:
    plan = scale.Plan.for_points(1_000_000)
    assert (plan.runs, plan.experiments, plan.models, plan.points) == (1000, 20, 10, 1_000_000)
    assert scale.Plan.for_points(20_000) == scale.Plan(20, 1, 1)
    assert scale.Plan.for_points(1_500).points == 2_000  # rounded up to whole runs
    with pytest.raises(ValueError, match="at least 1000"):
        scale.Plan.for_points(999)
    assert scale.Plan.for_points(1_000_000).rows()["metrics"] == 1_000_000


def test_series_covers_exactly_its_range() -> None:
    engine = sa.create_engine("sqlite://")
    d = scale.Dialect(engine)
    with engine.connect() as con:
        for n in (1, 7, 10, 1000, 1234):
            got = [r[0] for r in con.execute(sa.text(f"SELECT x.n FROM {d.series(n, 'x')} WHERE x.n < {n}"))]
            assert sorted(got) == list(range(n))


# -- seeding, for real on SQLite -----------------------------------------------------------------------------
def mlflow_like(path: Path, *, extra: str = "") -> str:
    """A SQLite store with tables and columns of 2.x's that the seeder fills (a subset is enough: the
    seeder reflects and fills what exists); ``extra`` adds a column definition to runs."""
    url = f"sqlite:///{path}"
    ddl = [
        "CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256) NOT NULL UNIQUE, "
        "artifact_location VARCHAR(256), lifecycle_stage VARCHAR(32), creation_time BIGINT, "
        "last_update_time BIGINT)",
        "CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, name VARCHAR(250), status VARCHAR(9), "
        "start_time BIGINT, end_time BIGINT, lifecycle_stage VARCHAR(20), artifact_uri VARCHAR(200), "
        f"experiment_id INTEGER, user_id VARCHAR(256){extra})",
        "CREATE TABLE params (key VARCHAR(250) NOT NULL, value VARCHAR(8000) NOT NULL, run_uuid VARCHAR(32) "
        "NOT NULL, PRIMARY KEY (key, run_uuid))",
        "CREATE TABLE metrics (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT NOT NULL, "
        "run_uuid VARCHAR(32) NOT NULL, step BIGINT DEFAULT '0' NOT NULL, "
        "is_nan BOOLEAN DEFAULT '0' NOT NULL, "
        "PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan))",
        "CREATE TABLE latest_metrics (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT, "
        "step BIGINT NOT NULL, is_nan BOOLEAN NOT NULL, run_uuid VARCHAR(32) NOT NULL, "
        "PRIMARY KEY (key, run_uuid))",
    ]
    engine = sa.create_engine(url)
    with engine.begin() as con:
        for stmt in ddl:
            con.execute(sa.text(stmt))
    engine.dispose()
    return url


def test_seed_matches_the_formulas_and_mlflows_latest_rule(tmp_path: Path) -> None:
    url = mlflow_like(tmp_path / "s.db")
    seeded = scale.seed(url, 3_000)
    assert seeded.rows == {"experiments": 1, "runs": 3, "params": 30, "metrics": 3_000, "latest_metrics": 30}
    engine = sa.create_engine(url)
    with engine.connect() as con:
        history: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
        for key, value, ts, run, step in con.execute(
            sa.text("SELECT key, value, timestamp, run_uuid, step FROM metrics")
        ):
            history.setdefault((run, key), []).append((step, ts, value))
        latest = {(r[0], r[1]): (r[2], r[3], r[4]) for r in con.execute(
            sa.text("SELECT run_uuid, key, step, timestamp, value FROM latest_metrics"))}  # fmt: skip
        runs = {
            r[0]: r
            for r in con.execute(sa.text("SELECT run_uuid, name, experiment_id, start_time FROM runs"))
        }
        params = {(r[0], r[1]): r[2] for r in con.execute(sa.text("SELECT run_uuid, key, value FROM params"))}
    engine.dispose()
    # MLflow's rule: the max step, then the max timestamp, then the max value, per run and key.
    assert latest == {k: max(points) for k, points in history.items()}
    want = scale.expected_sample(seeded.plan)
    for rid, run in want["runs"].items():
        assert runs[rid][1:] == (run["name"], int(run["experiment_id"]), run["start_time"])
        assert {k: params[(rid, k)] for k in run["params"]} == run["params"]
        got = sorted([s, t, repr(v)] for s, t, v in history[(rid, run["history_key"])])
        assert got == run["history"]
        assert {f"m{k}": repr(latest[(rid, f"m{k}")][2]) for k in range(scale.KEYS)} == run["metrics"]


def test_seed_refuses_a_required_column_it_cannot_fill(tmp_path: Path) -> None:
    url = mlflow_like(tmp_path / "s.db", extra=", workspace VARCHAR(32) NOT NULL")
    with pytest.raises(scale.SeedError, match=r"runs: no seed value for required column\(s\) workspace"):
        scale.seed(url, 1_000)


# -- checksums -----------------------------------------------------------------------------------------------
def seeded_store(tmp_path: Path) -> str:
    url = mlflow_like(tmp_path / "s.db")
    scale.seed(url, 2_000)
    return url


def run_sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as con:
        for stmt in statements:
            con.execute(sa.text(stmt))
    engine.dispose()


def test_checksums_unchanged_store_passes(tmp_path: Path) -> None:
    url = seeded_store(tmp_path)
    before = scale.checksums(url)
    report = scale.compare(before, scale.checksums(url, like=before))
    assert report.differences == []
    assert "all 2,043 rows kept" in report.summary()


def test_checksums_name_a_changed_value_and_lost_rows(tmp_path: Path) -> None:
    url = seeded_store(tmp_path)
    before = scale.checksums(url)
    rid = scale.run_id(1)
    run_sql(url, f"UPDATE metrics SET value = value + 0.5 WHERE run_uuid = '{rid}' AND key = 'm3' "
                 "AND step = 7",
            f"DELETE FROM params WHERE run_uuid = '{rid}' AND key IN ('p1', 'p2')")  # fmt: skip
    report = scale.compare(before, scale.checksums(url, like=before))
    assert report.differences == ["params: 2 of 20 rows lost", "metrics.value changed (checksum)"]


def test_checksums_see_values_swapped_between_rows(tmp_path: Path) -> None:
    url = seeded_store(tmp_path)
    before = scale.checksums(url)
    a, b = scale.run_id(0), scale.run_id(1)
    run_sql(url, f"UPDATE params SET value = CASE run_uuid WHEN '{a}' THEN '1.0' ELSE '0.0' END "
                 f"WHERE key = 'p0' AND run_uuid IN ('{a}', '{b}')")  # fmt: skip
    assert scale.compare(before, scale.checksums(url, like=before)).differences == [
        "params: values moved between rows (checksum of whole rows)"
    ]


def test_checksums_allow_a_documented_type_conversion(tmp_path: Path) -> None:
    """is_nan BOOLEAN -> INTEGER and a FLOAT holding integers -> BIGINT: the same values, the same sums; a
    new column and a new table are not differences."""
    url = seeded_store(tmp_path)
    before = scale.checksums(url)
    run_sql(url,
            "CREATE TABLE m2 (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT NOT NULL, "
            "run_uuid VARCHAR(32) NOT NULL, step FLOAT NOT NULL, is_nan INTEGER NOT NULL, extra TEXT, "
            "PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan))",
            "INSERT INTO m2 SELECT key, value, timestamp, run_uuid, step, is_nan, 'x' FROM metrics",
            "DROP TABLE metrics", "ALTER TABLE m2 RENAME TO metrics",
            "CREATE TABLE logged_models (id TEXT)")  # fmt: skip
    assert scale.compare(before, scale.checksums(url, like=before)).differences == []


def test_checksums_report_a_grown_table_and_a_dropped_column(tmp_path: Path) -> None:
    url = seeded_store(tmp_path)
    before = scale.checksums(url)
    run_sql(url, "INSERT INTO params VALUES ('new', 'v', 'r')", "ALTER TABLE runs DROP COLUMN user_id")
    diffs = scale.compare(before, scale.checksums(url, like=before)).differences
    assert diffs == [
        "runs.user_id: column dropped",
        "params: 1 rows more after the upgrade (20 before): the checksums cannot tell whether the old rows "
        "are intact",
    ]


# -- the sample, the locks -----------------------------------------------------------------------------------
def test_compare_sample_names_each_wrong_value() -> None:
    plan = scale.Plan.for_points(20_000)
    want = scale.expected_sample(plan)
    got = {"search_count": 20, "runs": {k: dict(v) for k, v in want["runs"].items()},
           "model_versions": {k: dict(v) for k, v in want["model_versions"].items()}}  # fmt: skip
    assert scale.compare_sample(plan, got) == []
    rid = scale.run_id(plan.sample_runs()[1])
    got["runs"][rid]["params"] = {**got["runs"][rid]["params"], "p3": "wrong"}
    got["runs"][rid]["tags"] = {**got["runs"][rid]["tags"], "mlflow.user": "extra tags are fine"}
    got["search_count"] = 19
    diffs = scale.compare_sample(plan, got)
    assert diffs[0] == "search_runs found 19 seeded runs, expected 20"
    assert diffs[1].startswith(f"run {rid}.params: ") and '"p3": "wrong"' in diffs[1]
    assert len(diffs) == 2


def test_judge_tells_a_wrong_answer_from_no_answer() -> None:
    """What the server answered wrongly is `fail` (a wrong value, an HTTP error); no answer or no probe output
    is `error`."""
    plan = scale.Plan.for_points(20_000)
    want = scale.expected_sample(plan)
    good = {
        "search_count": 20,
        "search_seconds": 0.2,
        "runs": want["runs"],
        "model_versions": want["model_versions"],
    }

    def judged(probe: scale.Probe) -> tuple[bool, Status, str]:
        check = Check("seed", "before", Status.PASS)
        return scale.judge(check, plan, probe), check.status, check.detail

    assert judged(scale.Probe(good, 1.0)) == (True, Status.PASS, "")
    rid = scale.run_id(0)
    wrong = {**good, "runs": {**want["runs"], rid: {**want["runs"][rid], "end_time": 1}}}
    ok, status, detail = judged(scale.Probe(wrong, 1.0))
    assert (ok, status) == (False, Status.FAIL) and f"run {rid}.end_time: 1, expected 1700000000500" in detail
    answered = {"error": {"call": "get_run x", "error": "RESOURCE_DOES_NOT_EXIST", "answered": True}}
    assert judged(scale.Probe(answered, 1.0))[1:] == (
        Status.FAIL, "the server answered get_run x: RESOURCE_DOES_NOT_EXIST")  # fmt: skip
    silent = {"error": {"call": "search_runs", "error": "Max retries exceeded", "answered": False}}
    assert judged(scale.Probe(silent, 1.0))[1] is Status.ERROR
    assert judged(scale.Probe(None, 1.0, "the probe timed out after 900s"))[1:] == (
        Status.ERROR, "the probe timed out after 900s")  # fmt: skip


def test_lock_sampler_keeps_the_longest_stretch_per_table() -> None:
    sampler = scale.LockSampler("sqlite://")
    sampler._record({"metrics"}, 0.0)
    sampler._record({"metrics", "runs"}, 1.0)
    sampler._record({"runs"}, 2.5)  # metrics held 0.0 -> 2.5
    sampler._record(set(), 3.0)  # runs 1.0 -> 3.0
    sampler._record({"metrics"}, 4.0)
    sampler._record(set(), 4.5)
    assert sampler.result() == {"metrics": 2.5, "runs": 2.0}
    sampler.tables = {"runs"}  # only the tables the store had before the upgrade count
    assert sampler.result() == {"runs": 2.0}
    sampler.engine.dispose()


def test_the_report_has_a_migrations_section_per_scale_and_sql_cell() -> None:
    revisions = [
        {"from": "0584bdc529eb", "to": "400f98739977", "seconds": 0.31, "description": "add logged models"},
        {"from": "400f98739977", "to": "dc11669786a5", "seconds": 3.9, "description": "a | slow one"},
    ]
    migration = {"upgrade": {"seconds": 4.21, "revisions": revisions, "revisions_source": "alembic log"}}
    record = {
        "points": 1_000_000,
        "label": "1m",
        "seed_seconds": 8.6,
        "rows": {"runs": 1000, "metrics": 1_000_000},
        "sizes": {"upgrade": {"before": 234_790_247, "after": 304_807_271}},
        "locks": {"upgrade": {"runs": 3.9, "metrics": 3.36}},
        "first_start_seconds": 11.61,
        "first_search_seconds": 4.105,
    }
    path = ["2.22.5", "3.17.2"]
    scaled = CellResult("postgres:2.22.5->3.17.2[scale=1m]", "postgres", "local", path, path, scale="1m",
                        dir="pg-scale", components={"migration": migration, "scale": record})  # fmt: skip
    sql = CellResult("mysql:2.22.5->3.17.2", "mysql", "local", path, path, dir="my",
                     components={"migration": {"upgrade": {"seconds": 17.2, "revisions": revisions}},
                                 "scale": {"locks": {"upgrade": "no lock table"}}})  # fmt: skip
    plain = CellResult("file:2.22.5->3.17.2", "file", "local", path, path)
    run = RunResult("r1", "s", "e", "t", {}, [scaled, sql, plain])
    md, html = render_markdown(run), render_html(run)
    section = md.split("## Migrations")[1].split("\n## ")[0]
    assert "`postgres:2.22.5->3.17.2[scale=1m]`" in section and "file:2.22.5" not in section
    assert "Seeded 1,000,000 metric points in 8.6 s (runs 1,000, metrics 1,000,000)" in section
    assert "first start on the upgraded store: 11.6 s; its first `search_runs` over the seeded" in section
    assert "| upgrade | 4.2 s | 2 | 234.8 MB | 304.8 MB | runs 3.9 s, metrics 3.4 s |" in section
    assert "| 400f98739977 → dc11669786a5 | 3.90 | a \\| slow one |" in section
    assert "| upgrade | 17.2 s | 2 | — | — | no lock table |" in section
    assert '<h2 id="migrations">Migrations</h2>' in html and "<td>234.8 MB</td><td>304.8 MB</td>" in html
    none = RunResult("r2", "s", "e", "t", {}, [plain])
    assert "Migrations" not in render_markdown(none) and "Migrations" not in render_html(none)


# -- real scale cells ----------------------------------------------------------------------------------------
def scale_cell(tmp_path: Path, backend: str, databases, tamper) -> CellResult:
    specs = parse_path("2.22.5:3.17.2")
    plan = CellPlan(backend, specs, (parse_spec("3.17.2"),), scenarios=("quickstart",), scale=20_000)
    ctx = CellContext(cell_dir=tmp_path / plan.slug, runtime=get_runtime("local"), envs=EnvCache(),
                      work_root=tmp_path, tamper=tamper, databases={backend: databases.get_server(backend)},
                      run_id=tmp_path.name)  # fmt: skip
    return run_cell(plan, ctx)


def plant_faults(point: str, store: Store) -> None:
    """After the upgrade, before the integrity check: one metric value changed, two params deleted."""
    if point != "before-integrity":
        return
    rid = scale.run_id(3)
    run_sql(store.sqlalchemy_url,
            f"UPDATE metrics SET value = value + 0.5 WHERE run_uuid = '{rid}' AND {key(store)} = 'm3' "
            "AND step = 7",
            f"DELETE FROM params WHERE run_uuid = '{rid}' AND {key(store)} IN ('p1', 'p2')")  # fmt: skip


def key(store: Store) -> str:
    return "`key`" if store.backend == "mysql" else '"key"'


@pytest.mark.cell
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_scale_cell_seeds_measures_and_names_planted_faults(tmp_path: Path, databases, backend: str) -> None:
    result = scale_cell(tmp_path, backend, databases, plant_faults)
    by_name = {(c.name, c.phase): c for c in result.checks}
    seed = by_name[("seed", "before")]
    assert seed.status is Status.PASS, seed.detail
    assert seed.detail.startswith("seeded 20,000 metric points (20 runs x 10 keys x 100 steps")
    assert "sample of 5 runs read back intact through MLflow 2.22.5" in seed.detail
    assert by_name[("db-upgrade", "upgrade")].status is Status.PASS, by_name[("db-upgrade", "upgrade")].detail
    integrity = by_name[("integrity", "upgrade")]
    assert integrity.status is Status.FAIL
    problems = [p.text for p in integrity.problems]  # the scenario's own params count too
    assert re.fullmatch(r"params: 2 of 20\d rows lost", problems[0]), problems
    assert problems[1:] == ["metrics.value changed (checksum)"]
    search = by_name[("first-search", "after")]
    assert search.status is Status.PASS, search.detail  # read after the faults: the sampled runs are others
    record = result.components["scale"]
    assert record["points"] == 20_000 and record["rows"]["metrics"] == 20_000
    assert math.isfinite(record["seed_seconds"]) and record["first_search_seconds"] > 0
    assert record["first_start_seconds"] == by_name[("server-start", "after")].seconds
    sizes = record["sizes"]["upgrade"]
    assert sizes["before"] > 1_000_000 and sizes["after"] > 0
    locks = record["locks"]["upgrade"]
    assert isinstance(locks, dict), locks  # PostgreSQL pg_locks; MariaDB: metadata_lock_info (local recipe)
