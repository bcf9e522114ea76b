"""Resolution modes (harness.envs, harness.index, harness.versions, harness.pythons): an MLflow release's env
resolved as of its upload on the index, or as of today. Pure units first (the cutoff, the key, which recipes
apply in which mode, the options), then a real env of an old release, checked against the index's upload
times, and the same build with the cutoff removed (the planted fault), which the same check must catch."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from packaging.version import Version

from harness import envs, index, options, pythons, versions
from harness.config import RunConfig
from harness.envs import MANIFEST, EnvCache, EnvError, cutoff_of, iso
from harness.specs import Spec, SpecKind, parse_spec
from harness.versions import MlflowVersion

# The oldest release the measurement found to install and import under `release` (coord/resolution.md).
OLD = "1.20.2"
# Distributions whose installed version must have been on the index by the cutoff (each asked of the index
# once a day, cached): the ones old releases break on, and which publish often enough that the newest is
# always later than a 2021 cutoff.
CHECKED = ("sqlalchemy", "alembic", "numpy", "protobuf", "pandas", "flask")


# -- the cutoff ---------------------------------------------------------------------------------------------
def test_the_cutoff_is_the_upload_plus_the_grace_period_in_utc_to_the_second() -> None:
    uploaded = datetime(2021, 9, 4, 0, 28, 41, 297916, tzinfo=UTC)
    assert cutoff_of(uploaded, 7) == datetime(2021, 9, 11, 0, 28, 41, tzinfo=UTC)
    assert cutoff_of(uploaded, 0) == datetime(2021, 9, 4, 0, 28, 41, tzinfo=UTC)
    assert iso(cutoff_of(uploaded, 7)) == "2021-09-11T00:28:41Z"


def test_the_release_time_is_the_earliest_file_of_the_release() -> None:
    files = [
        {"upload_time_iso_8601": "2021-09-04T00:28:45.731018Z", "requires_python": ">=3.6"},
        {"upload_time_iso_8601": "2021-09-04T00:28:41.297916Z", "requires_python": ">=3.6"},
        {"requires_python": ">=3.6"},  # a file without the field does not count
    ]
    (release,) = index._parse({"releases": {"1.20.2": files}})
    assert release.uploaded == datetime(2021, 9, 4, 0, 28, 41, 297916, tzinfo=UTC)
    (unknown,) = index._parse({"releases": {"1.20.2": [{"requires_python": ">=3.6"}]}})
    assert unknown.uploaded is None


def test_a_release_without_an_upload_time_is_an_error_not_a_silent_latest(
    monkeypatch, tmp_path: Path
) -> None:
    missing = [index.Release(MlflowVersion.parse(OLD), False, index.SpecifierSet(), None)]
    monkeypatch.setattr(index, "releases", lambda package="mlflow", cache=None: missing)
    with pytest.raises(EnvError, match="no upload time"):
        EnvCache(tmp_path, resolution="release").cutoff(parse_spec(OLD))
    monkeypatch.setattr(index, "releases", lambda package="mlflow", cache=None: [])
    with pytest.raises(EnvError, match="not on the index"):
        EnvCache(tmp_path, resolution="release").plan(parse_spec(OLD))


def test_the_cache_uses_the_index_upload_time_of_the_release(tmp_path: Path) -> None:
    spec = parse_spec(OLD)
    uploaded = index.release_time(spec.version)
    assert uploaded.year == 2021  # 1.20.2 came out in September 2021
    assert EnvCache(tmp_path, resolution="release", grace_days=3).cutoff(spec) == cutoff_of(uploaded, 3)
    assert EnvCache(tmp_path, resolution="latest").cutoff(spec) is None


# -- the key, the python, the recipes ------------------------------------------------------------------------
def test_the_key_differs_by_mode_and_grace_and_latest_keeps_its_old_key(tmp_path: Path) -> None:
    spec = parse_spec("2.22.5")
    latest = EnvCache(tmp_path, resolution="latest").plan(spec)
    release = EnvCache(tmp_path, resolution="release").plan(spec)
    other_grace = EnvCache(tmp_path, resolution="release", grace_days=30).plan(spec)
    assert len({latest[0], release[0], other_grace[0]}) == 3
    assert "-rel2026" in release[0] and "-rel" not in latest[0]
    assert EnvCache(tmp_path).plan(spec) == latest  # the default is `latest`
    # The key a `latest` env had before modes existed: the same material hashed the same way.
    key, interp, reqs = latest
    material = {"format": envs.FORMAT, "spec": spec.identity(), "python": str(interp.version),
                "python_path": str(interp.path), "reqs": reqs}  # fmt: skip
    import hashlib

    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]
    assert key.endswith(digest)


def test_wheels_keep_latest_whatever_the_mode(tmp_path: Path) -> None:
    wheel = Spec(raw="x.whl", kind=SpecKind.WHEEL_DIR, version=MlflowVersion.parse("3.17.2"))
    cache = EnvCache(tmp_path, resolution="release")
    assert cache.mode(wheel) == "latest" and cache.cutoff(wheel) is None
    assert cache.mode(parse_spec("3.17.2")) == "release"


def test_a_release_env_gets_the_python_of_its_time(tmp_path: Path) -> None:
    assert pythons.newest_minor_at(datetime(2021, 9, 11, tzinfo=UTC)) == Version("3.9")
    assert pythons.newest_minor_at(datetime(2023, 4, 12, tzinfo=UTC)) == Version("3.10")
    assert pythons.newest_minor_at(datetime(2026, 10, 28, tzinfo=UTC)) == Version("3.14")
    assert pythons.newest_minor_at(datetime(2018, 1, 1, tzinfo=UTC)) is None
    _, interp, _ = EnvCache(tmp_path, resolution="release").plan(parse_spec(OLD))
    assert interp.minor <= Version("3.9")
    _, latest, _ = EnvCache(tmp_path, resolution="latest").plan(parse_spec(OLD))
    assert latest.minor == pythons.PREFERRED


def test_recipes_apply_by_mode(monkeypatch) -> None:
    facts = {
        "recipe": [
            {"versions": "<2", "requirements": ["old-only-latest"], "modes": ["latest"]},
            {"versions": "<2", "requirements": ["old-both"]},
            {"versions": "<2", "requirements": ["old-only-release"], "modes": ["release"]},
            {"versions": ">=0", "requirements": ["drivers"]},
        ]
    }
    monkeypatch.setattr(versions, "_facts", lambda: facts)
    old, new = MlflowVersion.parse("1.20.2"), MlflowVersion.parse("3.17.2")
    assert old.install_requirements() == ["old-only-latest", "old-both", "drivers"]  # latest by default
    assert old.install_requirements("release") == ["old-both", "old-only-release", "drivers"]
    assert new.install_requirements("release") == new.install_requirements("latest") == ["drivers"]
    with pytest.raises(ValueError, match="unknown resolution"):
        old.install_requirements("newest")


def test_every_shipped_recipe_says_why_and_names_known_modes() -> None:
    for recipe in versions._facts()["recipe"]:
        assert recipe.get("reason"), recipe
        assert set(recipe.get("modes", versions.RESOLUTIONS)) <= set(versions.RESOLUTIONS), recipe
        assert recipe.get("modes", ["x"]), f"a recipe for no mode at all is dead: {recipe}"


def test_release_requirements_leave_out_latest_only_recipes(tmp_path: Path) -> None:
    spec = parse_spec("2.22.5")
    _, _, latest = EnvCache(tmp_path, resolution="latest").plan(spec)
    _, _, release = EnvCache(tmp_path, resolution="release").plan(spec)
    recipes = [rec for rec in versions._facts()["recipe"] if rec.get("modes") == ["latest"]]
    only_latest = [
        r
        for rec in recipes
        if versions._matches(rec["versions"], str(spec.version))
        for r in rec["requirements"]
    ]
    assert only_latest == ["opentelemetry-sdk<1.45"], "measured unnecessary under release (versions.toml)"
    assert all(r in latest and r not in release for r in only_latest)
    assert "PyMySQL[rsa]" in release and "psycopg2-binary" in release  # the drivers, in every mode


# -- the options ---------------------------------------------------------------------------------------------
def _parsed(tmp_path: Path, *argv: str, environ: dict[str, str] | None = None) -> options.Options:
    parser = options.Parser(prog="t")
    options.add_options(parser, "run")
    args = parser.parse_args(["--results-dir", str(tmp_path / "r"), *argv])
    return options.parse(args, environ or {})


def test_the_options_reach_the_run_config(tmp_path: Path) -> None:
    opts = _parsed(tmp_path)
    assert opts.value("resolution") == versions.RUN_RESOLUTION and opts["resolution"].source == "default"
    assert opts.value("resolution_grace") == versions.DEFAULT_GRACE_DAYS
    opts = _parsed(tmp_path, "--resolution", "latest", "--resolution-grace", "30")
    config = opts.config("r1")
    assert (config.resolution, config.resolution_grace_days) == ("latest", 30)
    env = {"MLFLOW_COMPAT_RESOLUTION": "release", "MLFLOW_COMPAT_RESOLUTION_GRACE": "0"}
    config = _parsed(tmp_path, environ=env).config("r2")
    assert (config.resolution, config.resolution_grace_days) == ("release", 0)
    written = tmp_path / "run.json"
    config.write(written, tmp_path)
    assert RunConfig.read(written).resolution_grace_days == 0


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ((), {"MLFLOW_COMPAT_RESOLUTION": "newest"}, "MLFLOW_COMPAT_RESOLUTION='newest': choose from"),
        (("--resolution-grace", "-1"), {}, "--resolution-grace '-1': expected a whole number"),
        (("--resolution-grace", "week"), {}, "--resolution-grace 'week': expected a whole number"),
        ((), {"MLFLOW_COMPAT_RESOLUTION_GRACE": "1.5"}, "MLFLOW_COMPAT_RESOLUTION_GRACE '1.5'"),
    ],
)
def test_bad_resolution_options_are_one_line(tmp_path: Path, argv, environ, message) -> None:
    with pytest.raises(options.BadInput, match=message.replace("(", r"\(")):
        _parsed(tmp_path, *argv, environ=environ)
    with pytest.raises(options.BadInput):
        _parsed(tmp_path, "--resolution", "newest")  # argparse's choices, as one line too


@pytest.mark.parametrize(("resolution", "grace"), [("latest", 7), ("release", 0), ("release", 30)])
def test_the_worker_builds_envs_in_the_configured_mode(tmp_path: Path, resolution: str, grace: int) -> None:
    """A worker's cells get an EnvCache in run.json's mode and grace (the config reaches the env keys)."""
    from harness.plan import CellPlan
    from harness.plugin import of_run
    from harness.rundir import RunDir
    from harness.specs import parse_path

    run_dir = RunDir(tmp_path / "run-1")
    run_dir.path.mkdir()
    services = {"databases": {b: {"unavailable": "not needed"} for b in ("postgres", "mysql")}}
    config = RunConfig(run_id="run-1", resolution=resolution, resolution_grace_days=grace, services=services)
    config.write(run_dir.config, tmp_path)
    worker = of_run(run_dir)
    try:
        ctx = worker.context(CellPlan("sqlite", parse_path("1.30.1:3.17.2"), parse_path("1.30.1:3.17.2")))
    finally:
        worker.close()
    assert (ctx.envs.resolution, ctx.envs.grace_days) == (resolution, grace)
    key = ctx.envs.plan(parse_spec("1.30.1"))[0]
    assert key == EnvCache(tmp_path, resolution=resolution, grace_days=grace).plan(parse_spec("1.30.1"))[0]


# -- for real ------------------------------------------------------------------------------------------------
def _installed(env_python: Path, names: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as md, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try:\n"
        "        out[n] = md.version(n)\n"
        "    except md.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(env_python), "-c", code, *names], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def newer_than(installed: dict[str, str], cutoff: datetime) -> list[str]:
    """The installed distributions whose version reached the index after ``cutoff`` (the index says when)."""
    late = []
    for name, version in installed.items():
        found = [r for r in index.releases(name) if str(r.version) == str(Version(version))]
        assert found and found[0].uploaded is not None, f"{name} {version}: not on the index"
        if found[0].uploaded > cutoff:
            late.append(f"{name} {version} (uploaded {iso(found[0].uploaded)})")
    return late


def _expected_cutoff(cache: EnvCache) -> datetime:
    return cutoff_of(index.release_time(MlflowVersion.parse(OLD)), cache.grace_days)


@pytest.mark.cell
def test_an_old_release_resolves_as_of_its_upload(tmp_path: Path) -> None:
    """1.20.2 built with `release`: its manifest carries the cutoff, and every checked dependency's version
    was on the index by then (the newest of each is later: the cutoff really bound the resolution)."""
    cache = EnvCache(tmp_path / "envs", resolution="release")
    env = cache.ensure(parse_spec(OLD), tmp_path / "env.log")
    expected = _expected_cutoff(cache)
    manifest = json.loads((env.path / MANIFEST).read_text())
    assert manifest["resolution"] == "release" and manifest["exclude_newer"] == iso(expected)
    assert env.components()["resolution"] == f"release (<= {iso(expected)})"
    installed = _installed(env.interpreter, CHECKED)
    assert set(installed) >= {"sqlalchemy", "alembic", "numpy"}, installed
    assert newer_than(installed, expected) == []
    newest = {n: max(r.uploaded for r in index.releases(n) if r.uploaded) for n in installed}
    assert all(when > expected for when in newest.values()), (
        "each checked dist has a release after the cutoff"
    )
    # and the env works: mlflow, its server and its SQL store import (numpy, protobuf as of 2021: no recipe)
    imports = "import mlflow.server, mlflow.store.tracking.sqlalchemy_store"
    subprocess.run([str(env.interpreter), "-c", imports], env=env.environ(), check=True, capture_output=True,
                   timeout=300)  # fmt: skip


@pytest.mark.cell
def test_with_the_cutoff_removed_the_check_catches_newer_dependencies(tmp_path: Path) -> None:
    """The planted fault: the same requirements and Python, built without the cutoff (uv gets no
    --exclude-newer), install dependencies released after it, and the check of the test above names them."""
    cache = EnvCache(tmp_path / "envs", resolution="release")
    spec = parse_spec(OLD)
    _, interp, reqs = cache.plan(spec)
    path = tmp_path / "env"
    cache._build(path, spec, interp, reqs, tmp_path / "env.log", None)  # the fault: the cutoff left out
    installed = _installed(path / "bin" / "python", CHECKED)
    late = newer_than(installed, _expected_cutoff(cache))
    assert late, f"without the cutoff some of {installed} must be newer than {iso(_expected_cutoff(cache))}"


# -- the measurement (harness.installability), its pure parts ----------------------------------------------
def test_the_measurement_takes_the_newest_patch_of_each_minor_and_says_what_it_left_out() -> None:
    from harness import installability

    def rel(text: str, yanked: bool = False) -> index.Release:
        return index.Release(MlflowVersion.parse(text), yanked, index.SpecifierSet(), None)

    releases = [rel("1.19.0"), rel("1.20.1"), rel("1.20.2"), rel("2.0.0", yanked=True), rel("2.0.1"),
                rel("3.1.0rc1"), rel("3.18.0")]  # fmt: skip
    chosen, left_out = installability.versions_to_measure("1.20", releases)
    assert [str(v) for v in chosen] == ["1.20.2", "2.0.1"]
    assert any(x.startswith("2.0.0: yanked") for x in left_out) and any(
        x.startswith("3.18.0") for x in left_out
    )


def test_an_outcome_is_ok_only_when_every_step_ran_and_passed() -> None:
    from harness.installability import Outcome, recipe_verdicts, table

    good = Outcome("1.22.0", "release-bare", python="3.9.18", install="ok", cli=None, seconds=9.0,
                   steps={"import": None, "server": None, "store": None},
                   versions={"sqlalchemy": "1.4.27", "numpy": "1.21.4", "protobuf": "3.19.1"})  # fmt: skip
    assert good.ok and good.cell() == "ok py3.9 9s"
    assert not Outcome("1.22.0", "latest", install="ok", cli=None, steps={"import": None}).ok  # steps missing
    broken = Outcome("1.22.0", "latest", python="3.11.7", install="ok", cli="not run",
                     steps={"import": "ImportError: x", "server": None, "store": None})  # fmt: skip
    assert not broken.ok and broken.cell().startswith("FAIL import,cli")
    assert Outcome("2.1.1", "release", install="error: no wheel").cell() == "install FAIL"
    assert "| 1.22.0 | FAIL import,cli py3.11 0s | ok py3.9 9s | - |" in table([good, broken])
    verdicts = "\n".join(recipe_verdicts([good]))
    assert "['numpy<1.24'] (modes ['latest']): unnecessary under release" in verdicts
    bare_failed = Outcome("1.22.0", "release-bare", install="error: x")
    assert "['numpy<1.24'] (modes ['latest']): still needed" in "\n".join(recipe_verdicts([bare_failed]))
    too_new = Outcome(**{**good.__dict__, "versions": {"sqlalchemy": "2.0.1"}})
    assert (
        "['sqlalchemy<1.4'] (modes ['latest']): still needed (1 versions measured): 1.22.0: sqlalchemy 2.0.1"
        in ("\n".join(recipe_verdicts([too_new])))
    )
