"""The `Backend` descriptor: what one backend of the matrix is, as data.

Each backend module (harness/backends/<name>.py) declares one `BACKEND = Backend(...)`: its name, where its
column sits in the report, its store class, for a SQL server its product (harness.backends._base), and a
refusal when it cannot run on this machine at all. Nothing else lives here: stores are in _stores, the
registry that finds the descriptors in harness.backends, options generated from them in harness.options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.backends._base import SqlProduct
from harness.backends._stores import Store
from harness.versions import MlflowVersion


@dataclass(frozen=True)
class Backend:
    """One backend of the matrix. ``order`` places its column in the report; ``refusal`` (one line) says
    why it cannot run on this machine at all."""

    name: str
    order: int
    store: type[Store]
    product: SqlProduct | None = None
    refusal: str | None = None

    @property
    def label(self) -> str:
        """The report's column heading."""
        return self.name

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (one line), or None."""
        return self.refusal

    def path_lacks(self, path: Sequence[MlflowVersion | None]) -> str | None:
        """Why an upgrade path cannot run on this backend (None when it can; a version not known yet is None).
        E.g. file_to_sqlite: the first TO version must have `mlflow migrate-filestore`."""
        return None

    @property
    def has_server(self) -> bool:
        """A database backend this machine can have a server for: it gets its options, images and column."""
        return self.product is not None and self.unavailable() is None

    def url_help(self) -> str:
        return (
            f"use this {self.name} server (per-cell databases are created and dropped there); "
            "default: start a local one"
        )

    def image_help(self) -> str:
        default = self.product.default_image if self.product else "none"
        return f"{self.name} image for docker (default {default})"
