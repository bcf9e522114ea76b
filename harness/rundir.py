"""Every path of a run on disk, owned in one place: the run directory and each cell's directory in it.

A run directory (results/<run-id>) holds the plan (`cells.compat.json`, the pytest items), the run
configuration (`run.json`, read once by every pytest worker), the cells' own directories
(`cells/<slug>/cell.json`, `logs/`, `scratch/`), and what the run writes at the end (results.json,
report.md, report.html, junit.xml). Nothing here decides anything; it only names places. What goes into
those files lives with whoever writes them (harness.config, harness.report, harness.cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PLAN_FILE = "cells.compat.json"  # pytest collects it through harness.plugin (its name is how it is found)


@dataclass(frozen=True)
class CellDir:
    """One cell's directory: its verdict (cell.json), its logs and its clients' scratch directory."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def json(self) -> Path:
        return self.path / "cell.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def scratch(self) -> Path:
        """Clients' working directory: nothing they write by accident lands in the repository."""
        return self.path / "scratch"

    def rel(self, path: Path) -> str:
        """How a report names a file of this cell (relative to the cell's directory)."""
        return str(path.relative_to(self.path))


@dataclass(frozen=True)
class RunDir:
    """A run's directory (results/<run-id>): its name is the run id."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def plan(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def pytest_ini(self) -> Path:
        return self.path / "pytest.ini"

    @property
    def config(self) -> Path:
        return self.path / "run.json"

    @property
    def selected(self) -> Path:
        """The cells that survived `-k` (written by the plugin at collection)."""
        return self.path / "selected.json"

    @property
    def junit(self) -> Path:
        return self.path / "junit.xml"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def cells(self) -> Path:
        return self.path / "cells"

    def cell(self, slug: str) -> CellDir:
        return CellDir(self.cells / slug)

    def is_run(self) -> bool:
        """Whether this directory holds a finished run (a results.json)."""
        return self.results.is_file()
