"""The features a cell's servers run with, beside the tracking store: one module per feature (auth.py: the
basic-auth app and its database; s3.py: an S3 bucket as the artifact store), each with an
``open(site) -> Feature`` function. `open_features` opens the cell's features in a fixed order and
`close_features` closes them (dropping what they made) when the cell ends. The protocol they follow:
harness/features/_base.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.backends import Store, StoreError
from harness.databases import DatabaseServer
from harness.features._base import Feature, ServerSetup, ServerView, combine, local_view

__all__ = [
    "Feature",
    "ServerSetup",
    "ServerView",
    "Site",
    "close_features",
    "combine",
    "local_view",
    "open_features",
]

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


def open_features(names: frozenset[str], site: Site) -> list[Feature]:
    """The features ``names`` (harness.plan.CellPlan.features) opened for one cell, in ORDER. One that cannot
    be opened raises StoreError, after the ones opened before it are closed again."""
    opened: list[Feature] = []
    try:
        for name in ORDER:
            if name in names:
                opened.append(importlib.import_module(f"harness.features.{name}").open(site))
    except StoreError as exc:
        try:
            close_features(opened)
        except StoreError as also:  # both said: the opening's failure first
            raise StoreError(f"{exc}; closing the features opened before it: {also}") from exc
        raise
    return opened


def close_features(features: list[Feature]) -> None:
    """Close each feature, in reverse order, each even when another could not be; StoreError names those
    that could not."""
    failed = []
    for feature in reversed(features):
        try:
            feature.close()
        except StoreError as exc:
            failed.append(f"{feature.name}: {exc}")
    if failed:
        raise StoreError("; ".join(failed))
