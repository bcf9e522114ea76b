"""The env cache, for real: uv builds a venv once even when parallel workers ask for it at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.envs import EnvCache, EnvError
from harness.specs import parse_spec

_ENSURE = """
import sys
from pathlib import Path
from harness.envs import EnvCache
from harness.specs import parse_spec
env = EnvCache(Path(sys.argv[1])).ensure(parse_spec("1.30.1"), Path(sys.argv[2]))
print(env.path, env.reused)
"""


@pytest.mark.cell
def test_parallel_requests_build_one_env(tmp_path: Path) -> None:
    root = tmp_path / "envs"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _ENSURE, str(root), str(tmp_path / f"log{i}.txt")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=900)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert outputs[0][0] == outputs[1][0], "both workers must get the same env"
    assert sorted(o[1] for o in outputs) == ["False", "True"], "exactly one of them builds it"
    builds = [p for p in tmp_path.glob("log*.txt") if "uv" in p.read_text() and "venv" in p.read_text()]
    assert len(builds) == 1
    env = EnvCache(root).ensure(parse_spec("1.30.1"), tmp_path / "log-again.txt")
    assert (
        env.reused
        and env.schema_head == "97727af70f4d"
        and env.sqlalchemy
        and env.sqlalchemy.startswith("1.4")
    )


def test_unresolvable_spec_raises_with_the_resolvers_reason(tmp_path: Path, unresolvable_wheel: Path) -> None:
    cache = EnvCache(tmp_path / "envs")
    with pytest.raises(EnvError, match="mlflow-compat-no-such-package-anywhere"):
        cache.ensure(parse_spec(str(unresolvable_wheel)), tmp_path / "log.txt")
    assert not [p for p in (tmp_path / "envs").glob("mlflow-*") if p.is_dir()]  # nothing half-built is left


def test_packages_are_in_the_requirements_and_the_key(tmp_path: Path) -> None:
    """Packages a scenario asks for (PACKAGES) go into the requirements and the cache key; the same set in
    another order is the same env; an env without packages keeps the requirements, and so the key, it had."""
    cache = EnvCache(tmp_path / "envs")
    spec = parse_spec("2.22.5")
    key, _, reqs = cache.plan(spec)
    assert reqs == [*spec.requirements(), *spec.version.install_requirements()]  # today's recipe, unchanged
    assert cache.plan(spec, ()) == cache.plan(spec)
    with_sklearn, _, sk_reqs = cache.plan(spec, ("scikit-learn",))
    assert with_sklearn != key and sk_reqs == [*reqs, "scikit-learn"]
    both = cache.plan(spec, ("scikit-learn", "boto3"))
    assert both[0] not in (key, with_sklearn) and both == cache.plan(spec, ("boto3", "scikit-learn", "boto3"))


@pytest.mark.cell
def test_an_env_with_packages_has_them_installed(tmp_path: Path) -> None:
    """uv resolves the package beside mlflow's own pins; the env reports the version it got."""
    env = EnvCache().ensure(parse_spec("1.30.1"), tmp_path / "log.txt", packages=("scikit-learn",))
    ((name, version),) = env.packages
    assert name == "scikit-learn" and version
    probe = subprocess.run([str(env.interpreter), "-c", "import sklearn; print(sklearn.__version__)"],
                           capture_output=True, text=True, check=True, env=env.environ())  # fmt: skip
    assert probe.stdout.strip() == version
    assert env.components()["scikit-learn"] == version and "scikit-learn" in env.requirements
    plain = EnvCache().ensure(parse_spec("1.30.1"), tmp_path / "log2.txt")
    assert plain.path != env.path and plain.packages == ()
