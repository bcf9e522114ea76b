"""The pytest plugin that turns a plan file into one pytest item per cell.

So `-k`, pytest-xdist's `-n` and JUnit XML come for free. A cell runs in its item's setup; the verdict
maps onto pytest's outcomes: pass -> passed, fail and xpass (a stale declaration) -> failed, error
(infrastructure) -> error (JUnit <error>, never <failure>), skip -> skipped, xfail -> xfailed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from harness import expectations, procs
from harness.cell import CellContext, run_cell
from harness.clients import close_forkservers
from harness.databases import URL_ENV, DatabaseServer, connect, parse_admin_url
from harness.envs import EnvCache
from harness.plan import CellPlan
from harness.results import CellResult, Status
from harness.runtime import get_runtime
from harness.runtime.docker import LABEL_CELL, LABEL_RUN

PLAN_FILE = "cells.compat.json"
SELECTED_FILE = "selected.json"


class CellFailed(Exception):
    """MLflow behaved incompatibly in this cell."""


class CellInfrastructureError(Exception):
    """The machine or the harness kept this cell from reaching a verdict."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlflow-compat")
    group.addoption("--compat-run-dir", help="the run's results directory")
    group.addoption("--compat-keep-stores", action="store_true", help="keep each cell's store after the run")
    group.addoption("--compat-expectations", help="declared incompatibilities (default: the shipped file)")


def pytest_configure(config: pytest.Config) -> None:
    procs.install_cleanup()


def run_databases(config: pytest.Config) -> dict[str, DatabaseServer]:
    """Handles on the run's database servers, published by the controller as URLs in the environment."""
    cached: dict[str, DatabaseServer] | None = getattr(config, "_compat_databases", None)
    if cached is None:
        cached = {
            b: connect(b, parse_admin_url(b, os.environ[var]))
            for b, var in URL_ENV.items()
            if os.environ.get(var)
        }
        config._compat_databases = cached  # type: ignore[attr-defined]
    return cached


def pytest_unconfigure(config: pytest.Config) -> None:
    close_forkservers()
    for server in getattr(config, "_compat_databases", {}).values():
        server.dispose()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == PLAN_FILE:
        return PlanFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Record which cells survived `-k` (every xdist worker writes the same list; the write is atomic)."""
    run_dir = session.config.getoption("--compat-run-dir")
    if run_dir:
        target = Path(run_dir) / SELECTED_FILE
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([item.name for item in session.items]))
        tmp.replace(target)


class PlanFile(pytest.File):
    def collect(self) -> Any:
        for data in json.loads(self.path.read_text())["cells"]:
            plan = CellPlan.from_json(data)
            yield CellItem.from_parent(self, name=plan.id, plan=plan)


class CellItem(pytest.Item):
    def __init__(self, *, plan: CellPlan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.result: CellResult | None = None

    def setup(self) -> None:
        run_dir = Path(self.config.getoption("--compat-run-dir") or tempfile.mkdtemp(prefix="mlflow-compat-"))
        declared = self.config.getoption("--compat-expectations")
        ctx = CellContext(
            cell_dir=run_dir / "cells" / self.plan.slug,
            runtime=get_runtime(
                self.plan.runtime, labels={LABEL_RUN: run_dir.name, LABEL_CELL: self.plan.slug}
            ),
            envs=EnvCache(),
            keep_store=bool(self.config.getoption("--compat-keep-stores")),
            databases=run_databases(self.config),
            run_id=run_dir.name,
            expectations=expectations.load(Path(declared) if declared else None),
        )
        self.result = run_cell(self.plan, ctx)
        if self.result.status is Status.ERROR:
            raise CellInfrastructureError(self.result.summary)
        if self.result.status is Status.SKIP:
            pytest.skip(self.result.summary or "every check was skipped")
        if self.result.status is Status.XFAIL:
            pytest.xfail(self.result.summary)

    def runtest(self) -> None:
        assert self.result is not None
        if self.result.status in (Status.FAIL, Status.XPASS):
            raise CellFailed(self.result.summary)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CellFailed | CellInfrastructureError) and self.result is not None:
            return describe_failures(self.result)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.plan.id


def describe_failures(result: CellResult) -> str:
    """The failing checks of a cell, with where to look: what pytest and JUnit show for it."""
    lines = [f"{result.id}: {result.status.value} — {result.summary}"]
    for check in result.checks:
        if check.status in (Status.FAIL, Status.ERROR, Status.XPASS):
            who = " ".join(
                x
                for x in (
                    f"scenario={check.scenario}" if check.scenario else "",
                    f"client={check.client}" if check.client else "",
                    f"server={check.server}" if check.server else "",
                )
                if x
            )
            lines.append(f"  [{check.status.value}] {check.phase}/{check.name} {who}: {check.detail}")
            lines += [f"      log: cells/{result.dir}/{log}" for log in check.logs]
            if check.excerpt:
                lines += ["      | " + line for line in check.excerpt.splitlines()[-15:]]
    return "\n".join(lines)
