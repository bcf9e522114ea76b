"""The `s3` cell feature: the cell's servers keep artifacts in an S3 bucket of their own on the run's S3
server (harness.objectstore), instead of the store's local directory.

One bucket per cell (named from the run id and the cell's slug), made when the cell opens and removed, with
everything in it, when it closes. Servers with artifact proxying (1.23 and later) run with
`--artifacts-destination s3://BUCKET/artifacts` and get the endpoint and credentials through their
environment (MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION); their
clients get none, so everything they upload and download goes through the server (proxied multipart uploads
excepted: the client PUTs each part to a URL the server presigned). Servers without proxying (before 1.23)
run with `--default-artifact-root s3://BUCKET/artifacts` and their clients write to the bucket themselves:
from the first such server on, every client gets the endpoint and credentials (runs it created keep s3://
artifact URIs after any upgrade). The bucket is backed up and restored with the store (its objects copied
to and from the backup's directory), as an operator backs a bucket up with the store. What does not live
here: the S3 server and the bucket operations (harness.objectstore), when a feature is asked what (the
protocol: harness/features/_base.py).
"""

from __future__ import annotations

from pathlib import Path

from harness.backends import StoreError
from harness.features import Site
from harness.features._base import ServerSetup, ServerView
from harness.objectstore import ObjectStore, ObjectStoreError, bucket_name
from harness.results import Check
from harness.versions import MlflowVersion

PREFIX = "artifacts"  # the key prefix under which servers keep artifacts in the bucket


class S3Artifacts:
    """One cell's bucket, and how its servers and clients use it."""

    name = "s3"

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self.direct = False  # a server without proxying ran: clients use the bucket themselves from then on

    @property
    def destination(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def server(self, version: MlflowVersion, view: ServerView) -> ServerSetup:
        endpoint = view.reach("s3", self.store.endpoint)
        if version.supports_serve_artifacts():
            mode = f"proxied to {self.destination}"
        else:
            self.direct = True
            mode = f"direct to {self.destination} (clients hold the S3 credentials)"
        env = self.store.credentials(endpoint)
        return ServerSetup(env=env, artifacts=self.destination, artifact_mode=mode)

    def client_env(self, version: MlflowVersion) -> dict[str, str]:
        return self.store.credentials() if self.direct else {}

    def on_started(self, phase: str, version: MlflowVersion) -> list[Check]:
        return []

    def backup(self, dest: Path) -> None:
        try:
            self.store.dump(self.bucket, dest)
        except ObjectStoreError as exc:
            raise StoreError(f"backing up bucket {self.bucket}: {exc}") from exc

    def restore(self, src: Path) -> None:
        try:
            self.store.load(self.bucket, src)
        except ObjectStoreError as exc:
            raise StoreError(f"restoring bucket {self.bucket}: {exc}") from exc

    def describe(self) -> dict[str, str]:
        return {
            "product": self.store.describe(),
            "endpoint": self.store.endpoint,
            "bucket": self.bucket,
            "destination": self.destination,
        }

    def close(self) -> None:
        try:
            self.store.drop_bucket(self.bucket)
        except ObjectStoreError as exc:
            raise StoreError(f"removing bucket {self.bucket}: {exc}") from exc


def open(site: Site) -> S3Artifacts:
    """The cell's bucket, made now on the run's S3 server; StoreError when the run has none or it fails."""
    store = site.object_store
    if not isinstance(store, ObjectStore):
        why = site.object_store_unavailable or "the run started no S3 server"
        raise StoreError(f"no S3 artifact store for this cell: {why}")
    bucket = bucket_name(site.run_id, site.slug)
    try:
        store.make_bucket(bucket)
    except ObjectStoreError as exc:
        raise StoreError(f"cannot make the cell's bucket: {exc}") from exc
    return S3Artifacts(store, bucket)
