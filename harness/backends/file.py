"""The file backend: MLflow's mlruns directory in the cell's workdir. No schema, no server; its backup is a
copy of the directory. Nothing else lives here (the store protocol is harness.backends._stores)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.backends._descriptor import Backend
from harness.backends._stores import Store


@dataclass
class FileStore(Store):
    backend: ClassVar[str] = "file"
    has_schema: ClassVar[bool] = False

    @property
    def root(self) -> Path:
        return self.workdir / "mlruns"

    def uri_at(self, mount: Path) -> str:
        return (mount / "mlruns").as_uri()

    def create(self) -> None:
        super().create()
        self.root.mkdir(parents=True, exist_ok=True)

    def _backup_data(self, dest: Path) -> None:
        shutil.copytree(self.root, dest / "mlruns")

    def _restore_data(self, src: Path) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(src / "mlruns", self.root)

    def describe(self) -> dict[str, str]:
        return {"product": "file store (mlruns directory)"}


BACKEND = Backend(name="file", order=10, store=FileStore)
