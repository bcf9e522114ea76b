"""The run's S3-compatible object store: one server per run that has S3 cells, a bucket per cell.

Locally the server is `moto` (``moto_server``, from `moto[server]` on the index) as a real process on a free
127.0.0.1 port, in a virtualenv of its own built with uv into the cache (keyed by what went into it): moto
pins Flask, Werkzeug and boto versions of its own that have nothing to do with the harness's or any
MLflow's, so it shares an env with neither. That env also holds the boto3 the harness drives the store
with: making and removing buckets, and copying a bucket to a directory and back (an operator's backup of
the bucket next to the store's), run as a short `python -c` in that env (`TOOL`), so the harness itself
does not depend on boto3. `ObjectStore` is the handle every part of a run shares (its endpoint as this
machine reaches it, the credentials, the product and version); `RunObjectStore` is what a run scope
holds: the server it started (or the handle a worker attached to from run.json), or why there is none.
What does not live here: the container a docker run starts instead of the process (harness.runtime.docker:
`ObjectStoreContainer`, its image from harness.images), what a cell does with its bucket
(harness.features.s3).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import uv
from filelock import FileLock

from harness import owner, procs
from harness.paths import cache_root
from harness.waiting import NotReady, Process, WaitStrategy, start_with_retries

MOTO_REQUIREMENT = "moto[server]==5.2.5"  # the S3 server; its env also holds the boto3 the harness uses
PRODUCT = "moto"
ACCESS_KEY = "mlflow-compat"  # moto accepts any credentials; real ones never reach a run
SECRET_KEY = "mlflow-compat-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0
TOOL_TIMEOUT_S = 300.0
ENV_FORMAT = "1"  # bump when the env's recipe changes


class ObjectStoreError(RuntimeError):
    """The object store could not be started, reached, or did not do what was asked: infrastructure."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The run has no object store; the message says why (its S3 cells become errors)."""


def bucket_name(run_id: str, slug: str) -> str:
    """A valid S3 bucket name (3-63 characters: lowercase letters, digits, hyphens; a letter or digit at
    both ends) for one cell of one run, unique per (run, cell): shortened names keep a digest of the whole."""
    raw = f"mlflow-compat-{run_id}-{slug}"
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw.lower())).strip("-")
    if len(name) > 63 or name != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: 63 - len(digest) - 1].rstrip('-')}-{digest}"
    return name


# Runs in the object store's env (boto3; any Python 3.8+): one operation on one bucket, JSON in argv[1],
# JSON out on the last line of stdout. Backups are a directory: objects/<key> and index.json {key: size}.
TOOL = r"""
import json, os, sys
import boto3
from botocore.config import Config

args = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=args["endpoint"], region_name=args["region"],
                  aws_access_key_id=args["access_key"], aws_secret_access_key=args["secret_key"],
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))
bucket, op = args["bucket"], args["op"]

def keys():
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = {"size": obj["Size"], "etag": obj["ETag"].strip('"')}
    return out

def empty():
    for key in keys():
        s3.delete_object(Bucket=bucket, Key=key)
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])

def local(root, key):
    path = os.path.normpath(os.path.join(root, "objects", key))
    if not path.startswith(os.path.join(root, "objects") + os.sep):
        raise SystemExit("refusing an object key outside the backup: %r" % key)
    return path

result = None
if op == "make":
    s3.create_bucket(Bucket=bucket)
elif op == "drop":
    try:
        empty()
        s3.delete_bucket(Bucket=bucket)
    except s3.exceptions.NoSuchBucket:
        pass
elif op == "list":
    result = keys()
elif op == "dump":
    found = keys()
    for key in found:
        path = local(args["dir"], key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, key, path)
    with open(os.path.join(args["dir"], "index.json"), "w") as fh:
        json.dump({k: v["size"] for k, v in found.items()}, fh, sort_keys=True)
    result = len(found)
elif op == "load":
    with open(os.path.join(args["dir"], "index.json")) as fh:
        index = json.load(fh)
    empty()
    for key in index:
        with open(local(args["dir"], key), "rb") as fh:
            s3.put_object(Bucket=bucket, Key=key, Body=fh.read())
    result = len(index)
elif op == "put":
    with open(args["file"], "rb") as fh:
        s3.put_object(Bucket=bucket, Key=args["key"], Body=fh.read())
elif op == "exists":
    result = bucket in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
else:
    raise SystemExit("unknown operation %r" % op)
print(json.dumps({"ok": True, "result": result}))
"""


@dataclass(frozen=True)
class ObjectStore:
    """A run's S3 server as every part of the run uses it: ``endpoint`` is how this machine reaches it (a
    server container may reach it otherwise: harness.features.ServerView.reach), ``tools`` the Python whose
    boto3 the harness drives it with, ``where`` how it runs (for the report)."""

    endpoint: str
    product: str
    version: str
    tools: str
    where: str = "local process"
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def describe(self) -> str:
        return f"{self.product} {self.version} ({self.where})"

    def credentials(self, endpoint: str | None = None) -> dict[str, str]:
        """The environment an MLflow process needs to use the store at ``endpoint`` (default: this machine's
        view of it): boto3's credentials and region, and MLflow's endpoint override."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectStore:
        return cls(**data)

    # -- buckets (each a short process in the store's env) ---------------------------------------------
    def tool(self, op: str, bucket: str, **extra: str) -> Any:
        """Run one operation of `TOOL` on ``bucket``; its result. Raises ObjectStoreError saying why not."""
        args = {"op": op, "bucket": bucket, "endpoint": self.endpoint, "region": self.region,
                "access_key": self.access_key, "secret_key": self.secret_key, **extra}  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        try:
            proc = subprocess.run([self.tools, "-c", TOOL, json.dumps(args)], capture_output=True, text=True,
                                  timeout=TOOL_TIMEOUT_S, env=environ, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ObjectStoreError(f"{op} on bucket {bucket}: {exc}") from exc
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            why = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ObjectStoreError(f"{op} on bucket {bucket} at {self.endpoint} failed: {why}")
        return json.loads(lines[-1])["result"]

    def make_bucket(self, bucket: str) -> None:
        self.tool("make", bucket)

    def drop_bucket(self, bucket: str) -> None:
        """Remove every object, every unfinished multipart upload and the bucket (gone already: fine)."""
        self.tool("drop", bucket)

    def bucket_exists(self, bucket: str) -> bool:
        return bool(self.tool("exists", bucket))

    def objects(self, bucket: str) -> dict[str, dict[str, Any]]:
        """{key: {"size", "etag"}} of every object in ``bucket``."""
        return dict(self.tool("list", bucket))

    def dump(self, bucket: str, dest: Path) -> int:
        """Copy every object of ``bucket`` into ``dest`` (objects/KEY, index.json); the count."""
        return int(self.tool("dump", bucket, dir=str(dest)))

    def load(self, bucket: str, src: Path) -> int:
        """Make ``bucket`` hold exactly what `dump` copied into ``src``; the count."""
        return int(self.tool("load", bucket, dir=str(src)))

    def put(self, bucket: str, key: str, data: bytes, scratch: Path) -> None:
        """Write one object (tests use it to change an artifact behind MLflow's back)."""
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / "object.bin"
        path.write_bytes(data)
        self.tool("put", bucket, key=key, file=str(path))


# -- the server's env ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolEnv:
    """The object store's virtualenv: moto's server and the boto3 the harness drives buckets with."""

    path: Path
    requirement: str
    version: str  # moto's

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def server(self) -> Path:
        return self.path / "bin" / "moto_server"


def tool_env(requirement: str | None = None) -> ToolEnv:
    """The env for ``requirement`` (default MOTO_REQUIREMENT), built with uv into the cache on first use
    (about 2 s with a warm uv cache) with the harness's own Python; a half-built one is rebuilt."""
    requirement = requirement or MOTO_REQUIREMENT
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256(json.dumps([ENV_FORMAT, requirement, sys.version]).encode()).hexdigest()[:12]
    root = cache_root() / "objectstore"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"moto-py{python}-{digest}"
    manifest = path / "mlflow-compat.json"
    with FileLock(str(path) + ".lock", timeout=900):
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            return ToolEnv(path, requirement, data["version"])
        shutil.rmtree(path, ignore_errors=True)
        uv_bin = uv.find_uv_bin()
        steps = [[uv_bin, "venv", "--quiet", "--seed", "--python", sys.executable, str(path)],
                 [uv_bin, "pip", "install", "--quiet", "--compile-bytecode", "--python",
                  str(path / "bin" / "python"), requirement]]  # fmt: skip
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
            except subprocess.TimeoutExpired as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise ObjectStoreError(f"installing {requirement} timed out") from exc
            if proc.returncode != 0:
                shutil.rmtree(path, ignore_errors=True)
                why = " ".join((proc.stderr or proc.stdout).split())[-600:]
                raise ObjectStoreError(f"installing {requirement} failed: {why}")
        probe = subprocess.run([str(path / "bin" / "python"), "-c", "import moto; print(moto.__version__)"],
                               capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        if probe.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise ObjectStoreError(f"{requirement} installed but moto does not import: {probe.stderr[-400:]}")
        version = probe.stdout.strip().splitlines()[-1]
        manifest.write_text(json.dumps({"requirement": requirement, "version": version}))
        return ToolEnv(path, requirement, version)


# -- the server as a local process ---------------------------------------------------------------------
class S3Answers(WaitStrategy):
    """The S3 API answers at ``endpoint`` (any HTTP answer to a bucket listing: the server is up)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def what(self) -> str:
        return f"{self.endpoint}/ (S3 ListBuckets)"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # an S3 error document is an answer
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False


class Server(Protocol):
    """A running object store server this run started (a process, a container): how to stop it."""

    def close(self) -> None: ...


class MotoProcess:
    """`moto_server` from the object store's env on a free 127.0.0.1 port, in its own process group
    (stopped by that group, never by name); its log in a temp directory of its own, removed on close."""

    def __init__(self, env: ToolEnv) -> None:
        self.env = env
        self.dir = owner.mkdtemp("mlflow-compat-s3-")
        self.log = self.dir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        started = time.monotonic()
        try:
            port = start_with_retries(self._start_on, retry_if=lambda exc: isinstance(exc, NotReady))
        except NotReady as exc:
            tail = procs.tail(self.log, 15)
            self.close()
            raise ObjectStoreError(f"moto_server did not start: {exc}\n{tail}") from exc
        except BaseException:
            self.close()
            raise
        self.seconds = round(time.monotonic() - started, 2)
        self.handle = ObjectStore(endpoint=f"http://127.0.0.1:{port}", product=PRODUCT, version=env.version,
                                  tools=str(env.python))  # fmt: skip

    def _start_on(self, port: int) -> int:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = procs.spawn([str(self.env.server), "-H", "127.0.0.1", "-p", str(port)], env=environ,
                                log=self.log, cwd=self.dir)  # fmt: skip
        wait = S3Answers(f"http://127.0.0.1:{port}").with_startup_timeout(START_TIMEOUT_S)
        try:
            wait.with_poll_interval(0.1).wait_until_ready(Process(self.proc.poll))
        except NotReady:
            procs.stop(self.proc, grace=2.0)
            self.proc = None
            raise
        return port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def close(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, grace=5.0)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def start_local(requirement: str | None = None) -> tuple[ObjectStore, Server]:
    """A moto server as a local process: its handle, and what to close to stop it."""
    server = MotoProcess(tool_env(requirement))
    return server.handle, server


# -- what a run scope holds ----------------------------------------------------------------------------
class RunObjectStore:
    """The run's object store: the one this scope started, the one the controller published (a worker), or
    why there is none. Only the controller's scope stops a server."""

    def __init__(self) -> None:
        self.store: ObjectStore | None = None
        self.server: Server | None = None
        self.missing: str | None = None
        self.start_seconds: float | None = None

    def get(self) -> ObjectStore:
        if self.store is None:
            why = self.missing or "the run has no S3 cells, so no S3 server was started"
            raise ObjectStoreUnavailable(why)
        return self.store

    def start(self, start: Callable[[], tuple[ObjectStore, Server]],
              failures: tuple[type[BaseException], ...] = ()) -> None:  # fmt: skip
        """Start it with ``start``; a server that cannot start (ObjectStoreError or one of ``failures``)
        makes only the S3 cells `error`, with why."""
        print("mlflow-compat: starting an S3 server (moto)", flush=True)
        started = time.monotonic()
        try:
            self.store, self.server = start()
        except (ObjectStoreError, *failures) as exc:
            self.missing = f"the S3 server did not start: {exc}"
            print(f"mlflow-compat: S3: {exc}; the S3 cells will be errors", file=sys.stderr)
            return
        self.start_seconds = round(time.monotonic() - started, 2)

    def attach(self, published: dict[str, Any] | None) -> None:
        if not published:
            return
        if "store" in published:
            self.store = ObjectStore.from_json(published["store"])
        else:
            self.missing = published.get("unavailable")

    def published(self) -> dict[str, Any] | None:
        if self.store is not None:
            return {"store": self.store.to_json()}
        if self.missing is not None:
            return {"unavailable": self.missing}
        return None

    def facts(self) -> dict[str, str]:
        if self.store is None:
            return {"s3": self.missing} if self.missing else {}
        return {"s3": f"{self.store.describe()} at {self.store.endpoint}, up in {self.start_seconds}s"}

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
