"""S3 artifact stores, for real: a moto server process, one bucket per cell, real MLflow servers keeping their
artifacts there (proxied), clients uploading in parts through the proxy, and the bucket backed up and
restored with the store. Also: an object changed in the bucket fails every read that downloads it; the
bucket and the moto process are gone afterwards; a moto that cannot start makes the S3 cells errors."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import expectations, objectstore
from harness.backends import Store
from harness.cell import CellContext, run_cell
from harness.config import RunConfig
from harness.envs import EnvCache
from harness.objectstore import ObjectStore, ObjectStoreUnavailable, bucket_name
from harness.plan import CellPlan, default_clients
from harness.results import CellResult, Status
from harness.runtime import get_runtime
from harness.runtime.local import LocalScope
from harness.specs import parse_path
from harness.versions import MlflowVersion
from tests.conftest import require_docker, run_cli

S3_SCENARIOS = ("quickstart", "artifacts", "s3_artifacts")
LARGE = "s3/parts/large.bin"  # scenarios/s3_artifacts.py: 6 MiB + 7 bytes, uploaded in 5 MiB parts


# -- units -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("run_id", "slug"),
    [("20261129T000325Z-93ad3a", "sqlite_2.22.5_to_3.17.2_artifacts_s3"), ("r", "s"),
     ("X" * 40, "postgres_1.30.1_to_2.22.5_to_3.17.2_auth_artifacts_s3")],
)  # fmt: skip
def test_bucket_names_are_valid_and_distinct(run_id: str, slug: str) -> None:
    name = bucket_name(run_id, slug)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name
    assert "--" not in name
    assert bucket_name(run_id, slug + "x") != name and bucket_name(run_id + "x", slug) != name


def test_a_cell_without_the_run_s_s3_server_cannot_open_its_bucket(tmp_path: Path) -> None:
    from harness.backends import StoreError
    from harness.features import Site
    from harness.features.s3 import open as open_s3

    site = Site(slug="c", run_id="r", store=None, databases={}, object_store_unavailable="moto broke")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no S3 artifact store for this cell: moto broke"):
        open_s3(site)


# -- the run's moto server -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto() -> Iterator[ObjectStore]:
    store, server = objectstore.start_local()
    try:
        yield store
    finally:
        server.close()
    assert not answers(store.endpoint), "the moto server is stopped with its scope"


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def moto_processes(port: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "moto_server" in line and f"-p {port}" in line]


def run_s3_cell(
    tmp_path: Path,
    path: str,
    store: ObjectStore | None,
    tamper=None,
    unavailable: str | None = None,
    scenarios: tuple[str, ...] = S3_SCENARIOS,
) -> CellResult:
    specs = parse_path(path)
    plan = CellPlan("sqlite", specs, default_clients(specs), scenarios=scenarios, artifact_store="s3")
    ctx = CellContext(cell_dir=tmp_path / plan.slug, runtime=get_runtime("local"), envs=EnvCache(),
                      work_root=tmp_path, tamper=tamper, run_id=tmp_path.name,
                      expectations=expectations.load(None), object_store=store,
                      object_store_unavailable=unavailable)  # fmt: skip
    return run_cell(plan, ctx)


def by_status(result: CellResult, status: Status) -> set[tuple[str, str, str | None, str | None]]:
    return {(c.phase, c.name, c.scenario, c.client) for c in result.checks if c.status is status}


@pytest.mark.cell
@pytest.mark.fault
def test_an_object_changed_in_the_bucket_fails_every_read_of_it(tmp_path: Path, moto: ObjectStore) -> None:
    """Before the upgrade, one byte of one artifact is changed in the bucket itself (boto3 against moto):
    every read of that record after it (each client through the new server; the old client after the
    rollback restore, which brings back the bucket's backup taken after the change) fails, naming the record
    and the file; nothing else fails. The same hook sees that each large file went up in two parts, for
    every client that has proxied multipart uploads, and that the store's local artifact directory stayed
    empty. When the cell ends its bucket is gone."""
    seen: dict[str, object] = {}

    def tamper(point: str, store: Store) -> None:
        if point != "before-upgrade":
            return
        bucket = bucket_name(tmp_path.name, "sqlite_2.22.5_to_3.17.2_artifacts_s3")
        objects = moto.objects(bucket)
        seen["objects"] = objects
        seen["local"] = [p for p in store.artifacts_dir.rglob("*") if p.is_file()]
        # artifacts/EXPERIMENT/RUN/artifacts/s3/notes.txt: one per s3_artifacts record written so far, one
        # per client; the first experiment is the first client's (2.22.5), which wrote first.
        notes = [k for k in objects if k.endswith("/s3/notes.txt")]
        notes.sort(key=lambda k: int(k.split("/")[1]))
        assert len(notes) == 2, objects
        moto.put(bucket, notes[0], b"artifacts kept in S3!\n", tmp_path / "put")
        seen["bucket"] = bucket

    result = run_s3_cell(tmp_path, "2.22.5:3.17.2", moto, tamper=tamper)
    assert result.status is Status.FAIL, result.summary
    failed = by_status(result, Status.FAIL)
    assert failed == {("after", "read", "s3_artifacts", "2.22.5"),
                      ("after", "read", "s3_artifacts", "3.17.2"),
                      ("rollback", "restore-read", "s3_artifacts", "2.22.5"),
                      ("cell", "acked-writes", None, None)}, failed  # fmt: skip
    for check in result.checks:  # each names the record (who wrote it, when) and the file
        if check.status is Status.FAIL and check.scenario:
            writer = "client 2.22.5 -> server 2.22.5 (before)"
            assert check.excerpt.splitlines() == [
                f"{writer}: run.artifact_listing['s3/notes.txt']: 22, expected 21",
                f"{writer}: run.artifacts['s3/notes.txt']: bytes differ (22 bytes, sha256 e9a458a8f7a2…, "
                "expected 21 bytes, sha256 6291769bc910…)",
            ], check.excerpt
    account = next(c for c in result.checks if c.name == "acked-writes")
    assert account.excerpt.splitlines() == [
        "before/2.22.5/s3_artifacts: not confirmed in after (reads: fail)",
        "before/2.22.5/s3_artifacts: not confirmed in rollback (reads: fail)",
    ]
    large = {k: v for k, v in seen["objects"].items() if k.endswith(LARGE)}  # type: ignore[union-attr]
    assert len(large) == 2 and all(v["size"] == 6 * 1024 * 1024 + 7 for v in large.values())
    assert all(v["etag"].endswith("-2") for v in large.values()), large  # multipart: two parts
    assert seen["local"] == [], "artifacts went to S3, not to the store's directory"
    assert result.components["features"]["s3"]["bucket"] == seen["bucket"]
    assert not moto.bucket_exists(str(seen["bucket"])), "the cell removes its bucket"


@pytest.mark.cell
@pytest.mark.slow
def test_a_server_without_proxying_hands_clients_the_bucket(tmp_path: Path, moto: ObjectStore) -> None:
    """MLflow 1.22 has no proxying: it runs with --default-artifact-root s3://..., and from then on every
    client gets the endpoint and credentials and writes to the bucket itself; after the upgrade the 1.30.1
    server proxies, and both clients read the s3:// runs of before through it. What fails is exactly what is
    declared: the 1.22 client cannot use the mlflow-artifacts: URIs of runs the proxying server created."""
    result = run_s3_cell(tmp_path, "1.22.0:1.30.1", moto)
    assert result.status is Status.XFAIL, result.summary
    modes = result.components["artifact_modes"]
    assert modes["1.22.0"].startswith("direct to s3://") and modes["1.30.1"].startswith("proxied to s3://")
    xfails = {(c.phase, c.name, c.scenario, c.client, c.expected) for c in result.checks
              if c.status is Status.XFAIL}  # fmt: skip
    assert xfails == {
        ("after", "write", "s3_artifacts", "1.22.0", "1.22-client-mangles-mlflow-artifacts-uris-write"),
        ("after", "read", "s3_artifacts", "1.22.0", "1.22-client-mangles-mlflow-artifacts-uris-read"),
    }, xfails
    assert by_status(result, Status.FAIL) == set() and by_status(result, Status.ERROR) == set()


@pytest.mark.cell
def test_a_moto_that_cannot_start_makes_s3_cells_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto without its [server] extra installs, but `moto_server` exits at once (no Flask): the run's scope
    has no S3 server and says why, and an S3 cell is an error saying so, never a failure."""
    monkeypatch.setattr(objectstore, "MOTO_REQUIREMENT", "moto==5.2.5")
    scope = LocalScope.open(RunConfig(run_id="no-moto"), backends={"sqlite"}, object_store=True)
    try:
        with pytest.raises(
            ObjectStoreUnavailable, match="the S3 server did not start: moto_server did not start"
        ):
            scope.object_store()
        published = scope.published()["object_store"]
        assert published == {"unavailable": scope.s3.missing}
        why = scope.s3.missing
    finally:
        scope.close()
    result = run_s3_cell(tmp_path, "2.22.5:3.17.2", None, unavailable=why, scenarios=("quickstart",))
    assert result.status is Status.ERROR, result.summary
    (problem,) = [c for c in result.checks if c.status is not Status.PASS]
    assert (problem.name, problem.status) == ("features", Status.ERROR)
    assert "no S3 artifact store for this cell: the S3 server did not start" in problem.detail


# -- from the command line -------------------------------------------------------------------------------
@pytest.mark.cell
def test_s3_cell_from_the_command_line_passes_as_declared(tmp_path: Path) -> None:
    """sqlite 2.22.5 -> 3.17.2 with --artifact-store s3: every check passes, or fails exactly as declared
    (a 3.x client listing artifact directories on a 2.x server); the report names the store; afterwards
    the moto process is gone."""
    results = tmp_path / "results"
    proc = run_cli("run", "--runtime", "local", "--backend", "sqlite", "--path", "2.22.5:3.17.2",
                   "--artifact-store", "s3", "--scenarios", ",".join(S3_SCENARIOS),
                   "--results-dir", str(results))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = (results / "latest").resolve()
    data = json.loads((run_dir / "results.json").read_text())
    (cell,) = data["cells"]
    assert cell["id"] == "sqlite:2.22.5->3.17.2[artifacts=s3]" and cell["status"] == "xfail"
    xfails = {(c["phase"], c["name"], c["scenario"], c["client"], c["expected"]) for c in cell["checks"]
              if c["status"] == "xfail"}  # fmt: skip
    assert {x[:4] for x in xfails} == {("before", "read", "artifacts", "3.17.2"),
                                       ("before", "read", "s3_artifacts", "3.17.2")}, xfails  # fmt: skip
    assert {x[4] for x in xfails} == {"3.x-client-lists-artifact-dirs-via-logged-models",
                                      "3.x-client-lists-s3-artifact-dirs-via-logged-models"}  # fmt: skip
    feature = cell["components"]["features"]["s3"]
    assert feature["product"].startswith("moto 5.") and feature["bucket"].startswith("mlflow-compat-")
    modes = cell["components"]["artifact_modes"]
    assert modes == {v: f"proxied to s3://{feature['bucket']}/artifacts" for v in ("2.22.5", "3.17.2")}
    writes = [c for c in cell["checks"] if c["name"] == "write" and c["scenario"] == "s3_artifacts"]
    assert len(writes) == 4 and all("multipart=True" in c["detail"] for c in writes)
    assert "s3 artifacts" in (run_dir / "report.md").read_text()
    port = int(feature["endpoint"].rsplit(":", 1)[1])
    assert not answers(feature["endpoint"]) and moto_processes(port) == [], "moto stops with the run"


# -- docker ----------------------------------------------------------------------------------------------
@pytest.mark.cell
@pytest.mark.docker
def test_s3_cell_under_docker(tmp_path: Path) -> None:
    """The same cell with servers in containers and moto in one too."""
    require_docker()
    results = tmp_path / "results"
    proc = run_cli("run", "--runtime", "docker", "--backend", "sqlite", "--path", "2.22.5:3.17.2",
                   "--artifact-store", "s3", "--scenarios", ",".join(S3_SCENARIOS),
                   "--results-dir", str(results))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(((results / "latest").resolve() / "results.json").read_text())
    (cell,) = data["cells"]
    assert cell["status"] == "xfail" and cell["runtime"] == "docker"
    assert "container" in cell["components"]["features"]["s3"]["product"]


def test_capability_matches_the_scenario_s_probe() -> None:
    """versions.toml's proxy_multipart_upload starts at 2.9.0 (the setting is in 2.9.0's wheel, not 2.8's)."""
    assert MlflowVersion.parse("2.9.0").lacks(("proxy_multipart_upload",)) is None
    assert MlflowVersion.parse("2.8.1").lacks(("proxy_multipart_upload",)) is not None
