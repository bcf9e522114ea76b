"""Shards balanced by recorded durations: the split (longest first, each cell to the least loaded shard) is
balanced, deterministic and complete; the id rule is only the fallback; `run --list --shards N` prints the
split that `--shard I/N` runs; a shard leaves the record to the shards after it and its times join the
record at the merge; shards of different splits do not merge. Unit and CLI tests: nothing is started."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import durations, options
from harness.cli import build_parser
from harness.compare import merge
from harness.paths import cache_root
from harness.plan import CellPlan, plan_cells
from harness.results import CellResult, RunResult, Status
from harness.run import Run, describe_split, merge_shards, remember_durations, split_cells, take_shard
from harness.rundir import RunDir
from harness.specs import parse_path
from tests.conftest import REPO, run_cli
from tests.test_cli import refused

PATHS = ("1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2", "1.30.1:2.22.5:3.17.2")
BACKENDS = ("file", "sqlite")
PLAN_ARGS = ["--runtime", "local", "--scenarios", "quickstart",
             *[a for b in BACKENDS for a in ("--backend", b)],
             *[a for p in PATHS for a in ("--path", p)]]  # fmt: skip


def cells(backends: tuple[str, ...] = BACKENDS, runtime: str = "local") -> list[CellPlan]:
    """The cells `PLAN_ARGS` plans (the same scenarios, so the same keys in the record)."""
    return plan_cells(list(backends), [parse_path(p) for p in PATHS], None, runtime, ("quickstart",), ())


def record(root: Path, plans: list[CellPlan], seconds: dict[str, float]) -> dict[str, float]:
    """Write ``seconds`` (by cell id) into a durations record in ``root``, as runs do; return it loaded."""
    results = [CellResult(id=c.id, backend=c.backend, runtime=c.runtime, path=[], clients=[],
                          status=Status.PASS, seconds=seconds[c.id])
               for c in plans if c.id in seconds]  # fmt: skip
    durations.remember(plans, results, root)
    return durations.load(root)


def skewed(plans: list[CellPlan], n: int) -> dict[str, float]:
    """Long cells exactly where the id rule puts them all in shard 1: every n-th by id."""
    ordered = sorted(c.id for c in plans)
    return {cid: (300.0 if k % n == 0 else 20.0 + k) for k, cid in enumerate(ordered)}


def works(split: durations.Split) -> list[float]:
    return [split.work(k) for k in range(1, len(split.shares) + 1)]


def test_lpt_split_is_balanced_complete_and_beats_the_id_rule_on_a_skewed_record(tmp_path: Path) -> None:
    plans = cells()
    assert len(plans) == 8
    known = record(tmp_path, plans, skewed(plans, 3))
    split = split_cells(plans, 3, known)
    assert split.rule == "durations"
    every = [c.id for share in split.shares for c in share]
    assert sorted(every) == sorted(c.id for c in plans) and len(every) == len(set(every)), "each cell once"
    longest = max(e.seconds for e in split.seconds.values())
    assert max(works(split)) - min(works(split)) <= longest, "greedy least-loaded: within one cell"
    # The id rule (the fallback) on the same record: all three long cells land in shard 1.
    by_id = [take_shard(plans, (i, 3)) for i in (1, 2, 3)]
    id_max = max(sum(split.seconds[c.id].seconds for c in share) for share in by_id)
    assert id_max >= 900 and max(works(split)) < 0.5 * id_max, (id_max, works(split))
    # The three 300 s cells go one to each shard (longest first, each to the least loaded).
    assert sorted(sum(split.seconds[c.id].seconds == 300 for c in s) for s in split.shares) == [1, 1, 1]


def test_the_split_is_the_same_whatever_the_plan_order_the_process_or_where_the_record_is(
    tmp_path: Path,
) -> None:
    plans = cells()
    known = record(tmp_path / "a", plans, skewed(plans, 4))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = split_cells(plans, 4, known)
    for seed in range(5):
        shuffled = list(plans)
        random.Random(seed).shuffle(shuffled)
        again = split_cells(shuffled, 4, durations.load(tmp_path / "b"))
        assert [[c.id for c in s] for s in again.shares] == [[c.id for c in s] for s in first.shares]
        assert again.digest() == first.digest()
    # Another interpreter with another hash seed (another machine's dict and set order) splits alike.
    code = (
        "import sys; from pathlib import Path; from harness import durations;"
        "from harness.run import split_cells; from tests.test_shards import cells;"
        "print(split_cells(list(reversed(cells())), 4, durations.load(Path(sys.argv[1]))).digest())"
    )
    for hashseed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=True,
                              env={**os.environ, "PYTHONHASHSEED": hashseed})  # fmt: skip
        assert proc.stdout.strip() == first.digest()
    # A different record is a different split, and the digest says so.
    other = dict(known)
    short = next(c for c in sorted(plans, key=lambda c: c.id)[1:])  # 21 s: now the longest of all
    other[durations._key(short)] = 10_000.0
    assert split_cells(plans, 4, other).digest() != first.digest()


def test_ties_go_by_id_and_to_the_lowest_shard() -> None:
    plans = cells()
    known = {durations._key(c): 50.0 for c in plans}  # all equal: ids decide, shards fill 1, 2, 3, 1, ...
    split = split_cells(plans, 3, known)
    ordered = sorted(c.id for c in plans)
    assert [[c.id for c in s] for s in split.shares] == [sorted(ordered[i::3]) for i in range(3)]


def test_unrecorded_cells_take_the_median_of_recorded_cells_alike() -> None:
    plans = cells(("file", "sqlite", "postgres"))
    by_id = {c.id: c for c in plans}
    known = {
        durations._key(by_id["sqlite:1.30.1->2.22.5"]): 10.0,
        durations._key(by_id["sqlite:2.22.5->3.17.2"]): 20.0,
        durations._key(by_id["sqlite:1.30.1->3.17.2"]): 90.0,
        durations._key(by_id["file:1.30.1->2.22.5"]): 400.0,  # one file cell: too few alike for a median
    }
    got = durations.estimates(plans, known)
    assert got["sqlite:1.30.1->2.22.5->3.17.2"] == durations.Estimate(20.0, False), "median of 3 sqlite"
    assert got["sqlite:1.30.1->2.22.5"] == durations.Estimate(10.0, True)
    # file has 1 recorded cell (< ALIKE), postgres none: the median of every recorded cell, (20 + 90) / 2.
    assert got["file:2.22.5->3.17.2"] == durations.Estimate(55.0, False)
    assert got["postgres:1.30.1->3.17.2"] == durations.Estimate(55.0, False)
    # A cell seen only with other scenarios is measured: the longest of those times.
    other = plan_cells(["sqlite"], [parse_path("1.30.1:2.22.5")], None, "local", ("quickstart", "search"), ())
    assert durations.estimates(other, known)[other[0].id] == durations.Estimate(10.0, True)


def test_no_recorded_cell_falls_back_to_the_ids(tmp_path: Path) -> None:
    plans = cells()
    docker = cells(runtime="docker")
    known = record(tmp_path, docker, {c.id: 100.0 for c in docker})  # another runtime's times only
    split = split_cells(plans, 3, known)
    ordered = sorted(plans, key=lambda c: c.id)
    assert split.rule == "ids"
    assert [[c.id for c in s] for s in split.shares] == [[c.id for c in ordered[i::3]] for i in range(3)]
    assert describe_split(split).startswith("by id over 3 shards")


def _cache_with(tmp_path: Path, seconds: dict[str, float]) -> Path:
    """A cache root holding a durations record (and today's package index, when this machine has it)."""
    root = tmp_path / "cache"
    root.mkdir()
    index = cache_root() / "index-mlflow.json"
    if index.is_file():
        shutil.copy2(index, root / index.name)  # its age is kept: a stale copy is fetched again
    record(root, cells(), seconds)
    return root


def _shares(stdout: str) -> list[list[str]]:
    shares: list[list[str]] = []
    for line in stdout.splitlines():
        if line.startswith("shard "):
            shares.append([])
        elif line.startswith("  "):
            shares[-1].append(line.split()[0])
    return shares


def test_list_shards_prints_the_split_that_each_shard_runs(tmp_path: Path) -> None:
    plans = cells()
    times = skewed(plans, 3)
    del times[sorted(times)[-1]]  # one cell the record has never seen: estimated
    env = {"MLFLOW_COMPAT_CACHE": str(_cache_with(tmp_path, times))}
    results = tmp_path / "results"
    proc = run_cli("run", *PLAN_ARGS, "--results-dir", str(results), "--list", "--shards", "3", "-n", "2",
                   env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    expected = split_cells(plans, 3, durations.load(Path(env["MLFLOW_COMPAT_CACHE"])))
    assert _shares(proc.stdout) == [[c.id for c in s] for s in expected.shares]
    heads = [line for line in lines if line.startswith("shard ")]
    for k, head in enumerate(heads, 1):
        seconds = [expected.seconds[c.id].seconds for c in expected.shares[k - 1]]
        wall = durations.wall(seconds, 2)
        assert head.startswith(f"shard {k}/3: {len(seconds)} cells, estimated wall {wall:.0f} s"), head
        assert f"({sum(seconds):.0f} s of cell time; {expected.unmeasured(k)} cells estimated" in head
    assert sum(expected.unmeasured(k) for k in (1, 2, 3)) == 1
    unseen = sorted(times.keys() ^ {c.id for c in plans})[0]
    assert any(line.split()[:2] == [unseen, f"~{expected.seconds[unseen].seconds:.0f}"] for line in lines)
    assert lines[-1].startswith(f"total: 8 cells over 3 shards, {sum(works(expected)):.0f} s of cell time")
    assert "7 cells measured, 1 estimated" in lines[-1]
    fact = "# shard split: by recorded durations over 3 shards, longest first (7 of the 8 cells measured"
    assert fact in proc.stderr and proc.stderr.rstrip().endswith(f"; split {expected.digest()}")
    # Each --shard I/3 runs exactly the listed share, and says it split by durations, with the same digest.
    for i in (1, 2, 3):
        one = run_cli("run", *PLAN_ARGS, "--results-dir", str(results), "--list", "--shard", f"{i}/3",
                      env=env, timeout=600)  # fmt: skip
        assert one.returncode == 0, one.stderr
        assert one.stdout.split() == [c.id for c in expected.shares[i - 1]]
        assert f"# shard split: {describe_split(expected)}" in one.stderr
    assert not results.exists(), "listing starts nothing and writes nothing"


def test_list_shards_without_a_record_says_it_splits_by_id(tmp_path: Path) -> None:
    env = {"MLFLOW_COMPAT_CACHE": str(_cache_with(tmp_path, {}))}
    proc = run_cli("run", *PLAN_ARGS, "--results-dir", str(tmp_path / "r"), "--list", "--shards", "2",
                   env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ordered = sorted(c.id for c in cells())
    assert _shares(proc.stdout) == [ordered[0::2], ordered[1::2]]
    assert proc.stdout.splitlines()[0].startswith("# split by id: the durations record has no time")
    assert "# shard split: by id over 2 shards" in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--list", "--shards", "0"], {}, "--shards 0: expected a number of shards, 1 or more"),
        (["--list", "--shards", "-3"], {}, "--shards -3: expected a number of shards"),
        (["--list", "--shards", "two"], {}, "--shards two: expected a number of shards"),
        (["--shards", "4"], {}, "--shards N goes with --list"),
        (["--list", "--shards", "4", "--shard", "1/4"], {},
         "--shards N lists every shard: drop --shard (1/4)"),
        (["--list", "--shards", "4"], {"MLFLOW_COMPAT_SHARD": "2/4"},
         "drop environment MLFLOW_COMPAT_SHARD (2/4)"),
    ],
)  # fmt: skip
def test_bad_shards_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    assert message in refused(
        tmp_path, "run", "--runtime", "local", "--path", "1.30.1:2.22.5", *args, env=env
    )


def _result(run_id: str, shard: str, fact: str, plans: list[CellPlan], seconds: float) -> RunResult:
    cells = [CellResult(id=c.id, backend=c.backend, runtime=c.runtime, path=[s.label for s in c.path],
                        clients=[s.label for s in c.clients], status=Status.PASS, seconds=seconds + k)
             for k, c in enumerate(plans)]  # fmt: skip
    options = {"shard": {"value": shard, "source": "command line"}, "resolved": {"shard split": fact}}
    return RunResult(run_id, "2026-11-29T00:00Z", "2026-11-29T01:00Z", "t", options, cells)


def test_shards_run_one_after_another_split_alike_and_their_times_join_the_record_at_the_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two shards on one machine, one after the other: the first must not change the record the second
    splits by (a shard keeps its times in its run directory); merging them writes their times over it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLFLOW_COMPAT_CACHE", str(cache))
    plans = cells()
    before = record(cache, plans, skewed(plans, 2))
    first = split_cells(plans, 2, before)
    dirs = []
    for i in (1, 2):
        args = build_parser().parse_args(["run", *PLAN_ARGS, "--results-dir", str(tmp_path / "r"),
                                          "--shard", f"{i}/2"])  # fmt: skip
        opts = options.parse(args)
        split = split_cells(plans, 2, durations.load())
        assert split.digest() == first.digest(), f"shard {i} splits as shard 1 did"
        mine = split.shares[i - 1]
        result = _result(f"s{i}", f"{i}/2", describe_split(split), mine, 1000.0)
        run_dir = tmp_path / f"shard{i}"
        run_dir.mkdir()
        remember_durations(Run(opts, cells=mine, run_dir=RunDir(run_dir), result=result))
        assert durations.load() == before, "a shard leaves the record as it found it"
        assert durations.load(run_dir) == durations.times(mine, result.cells), "its times are in its run"
        (run_dir / "results.json").write_text(json.dumps(result.to_json()))
        dirs.append(run_dir)
        # Had it written them to the record, the next shard would split otherwise: the fault is real here.
        assert (
            split_cells(plans, 2, {**before, **durations.times(mine, result.cells)}).digest()
            != first.digest()
        )
    merged, _ = merge_shards(dirs, "merged")
    assert sorted(c.id for c in merged.cells) == sorted(c.id for c in plans) and merged.not_run == []
    after = durations.load()
    assert {k for k in after if after[k] != before.get(k)} == {durations._key(c) for c in plans}
    assert all(after[durations._key(c)] >= 1000 for c in plans), "tonight's times, for tomorrow's split"
    # An unsharded run writes its times to the record directly.
    args = build_parser().parse_args(["run", *PLAN_ARGS, "--results-dir", str(tmp_path / "r")])
    whole = _result("w", "", "", plans, 5.0)
    whole.options = {}
    remember_durations(Run(options.parse(args), cells=plans, run_dir=RunDir(tmp_path / "w"), result=whole))
    assert durations.load() == {**after, **durations.times(plans, whole.cells)}
    assert not (tmp_path / "w").exists()


def _shard_run(run_id: str, label: str, fact: str | None, cell: str) -> RunResult:
    resolved = {"shard split": fact} if fact else {}
    return RunResult(run_id=run_id, started="2026-11-29T00:00Z", ended="2026-11-29T01:00Z",
                     harness_version="t", options={"shard": {"value": label, "source": "command line"},
                                                   "resolved": resolved},
                     cells=[CellResult(id=cell, backend="sqlite", runtime="local", path=[], clients=[],
                                       status=Status.PASS, seconds=1.0)])  # fmt: skip


def test_shards_of_different_splits_do_not_merge() -> None:
    plans = cells()
    ids = {c.id: c for c in plans}

    def fact(seconds: dict[str, float]) -> str:
        return describe_split(split_cells(plans, 2, {durations._key(ids[k]): v for k, v in seconds.items()}))

    same, other = fact(skewed(plans, 2)), fact(skewed(plans, 3))
    assert same.rpartition(" ")[2] != other.rpartition(" ")[2], "two records that deal the cells differently"
    merged = merge(
        [_shard_run("s1", "1/2", same, "sqlite:a"), _shard_run("s2", "2/2", same, "sqlite:b")], "m"
    )
    assert [c.id for c in merged.cells] == ["sqlite:a", "sqlite:b"] and merged.not_run == []
    with pytest.raises(ValueError, match=r"split the cells differently .* same durations record"):
        merge([_shard_run("s1", "1/2", same, "sqlite:a"), _shard_run("s2", "2/2", other, "sqlite:b")], "m")
    # Times that differ but deal the cells alike are the same split: the digest is of who got which cell.
    alike = fact({k: v + 1 for k, v in skewed(plans, 2).items()})
    assert alike != same and alike.rpartition(" ")[2] == same.rpartition(" ")[2]
    assert merge([_shard_run("s1", "1/2", same, "sqlite:a"), _shard_run("s2", "2/2", alike, "sqlite:b")], "m")
    # Runs that record no split (older harnesses) merge as before.
    assert merge([_shard_run("s1", "1/2", None, "sqlite:a"), _shard_run("s2", "2/2", same, "sqlite:b")], "m")
