"""The features a cell's servers run with, beside the tracking store: one module per feature (auth.py: the
basic-auth app and its database; s3.py: an S3 bucket as the artifact store), each with an
``open(site) -> Feature`` function. `open_features` opens the cell's features in a fixed order and closes
them (dropping what they made) when the cell ends. The protocol they follow: harness/features/_base.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.backends import Store, StoreError
from harness.databases import DatabaseServer
from harness.features._base import Feature, ServerSetup, ServerView, combine, local_view

__all__ = ["Feature", "ServerSetup", "ServerView", "Site", "combine", "local_view", "open_features"]

ORDER = ("s3", "auth")  # opened in this order, closed in reverse
# What a feature needs installed beside mlflow in every env of its cells (known before envs are built).
# auth: what `pip install mlflow[auth]` adds (the extra is `Flask-WTF<2` in 2.5 through 3.17).
PACKAGES: dict[str, tuple[str, ...]] = {"s3": ("boto3",), "auth": ("Flask-WTF<2",)}


@dataclass(frozen=True)
class Site:
    """What a feature is opened with: the cell (its slug and run), its store, and the run's services."""

    slug: str
    run_id: str
    store: Store
    databases: Mapping[str, DatabaseServer]
    object_store: Any = None  # the run's S3 server (harness.features.s3), when the run has S3 cells
    object_store_unavailable: str | None = None  # why the run has no S3 server


@contextmanager
def open_features(names: frozenset[str], site: Site) -> Iterator[list[Feature]]:
    """The features ``names`` (harness.plan.CellPlan.features) opened for one cell, and closed on exit, each
    even when another could not be; what could not be opened or closed raises StoreError, saying which."""
    opened: list[Feature] = []
    try:
        for name in ORDER:
            if name in names:
                opened.append(importlib.import_module(f"harness.features.{name}").open(site))
        yield opened
    finally:
        failed = []
        for feature in reversed(opened):
            try:
                feature.close()
            except StoreError as exc:
                failed.append(f"{feature.name}: {exc}")
        if failed:
            raise StoreError("; ".join(failed))
