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
