"""The pytest plugin that turns a plan file into one pytest item per cell.

So `-k`, pytest-xdist's `-n` and JUnit XML come for free. A cell runs in its item's setup; the verdict
maps onto pytest's outcomes: pass -> passed, fail and xpass (a stale declaration) -> failed, error
(infrastructure) -> error (JUnit <error>, never <failure>), skip -> skipped, xfail -> xfailed.

Its one option is `--compat-run-dir`. Everything else a worker needs comes from the run directory: the
plan (the items) and run.json (harness.config.RunConfig, read once per worker), whose published services
the worker attaches to (harness.runtime.attach_run: starts nothing). In a run (that option given) each
cell's start and verdict go to the run's progress events (harness.progress: the controller shows them), and
pytest's own running output is left out: no progress character per cell, no xdist "bringing up nodes..."
(its final summary of failures stays). What does not live here: the options
and the run's steps (harness.options, harness.run), what a cell does (harness.cell).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from harness import expectations, procs, progress, scenarios, serverfork
from harness.backends import DATABASE_BACKENDS
from harness.cell import CellContext, run_cell
from harness.clients import close_forkservers
from harness.config import RunConfig
from harness.databases import DatabaseServer
from harness.envs import EnvCache
from harness.expectations import Expectation
from harness.objectstore import ObjectStore, ObjectStoreUnavailable
from harness.plan import CellPlan
from harness.results import CellResult, Status
from harness.rundir import PLAN_FILE, RunDir
from harness.runtime import DatabaseUnavailable, RunScope, attach_run
from harness.runtime.docker import LABEL_CELL, LABEL_RUN


class CellFailed(Exception):
    """MLflow behaved incompatibly in this cell."""


class CellInfrastructureError(Exception):
    """The machine or the harness kept this cell from reaching a verdict."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlflow-compat")
    group.addoption("--compat-run-dir", help="the run's results directory")


def pytest_configure(config: pytest.Config) -> None:
    procs.install_cleanup()
    given = config.getoption("--compat-run-dir", None)
    if given and (run_config := RunDir(Path(given)).config).is_file():  # a team's scenarios join, as planned
        scenarios.use_dirs(tuple(Path(d) for d in RunConfig.read(run_config).scenario_dirs))


def _in_run(config: pytest.Config) -> bool:
    return bool(config.getoption("--compat-run-dir", None))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """In a run, xdist's status lines ("bringing up nodes...", "created: 2/2 workers") are not shown: the
    run's progress display says what is running. Its reporter stays (a worker that goes down is still said);
    only its status is silenced, before xdist's session brings the workers up."""
    reporter = session.config.pluginmanager.get_plugin("terminaldistreporter")
    if _in_run(session.config) and reporter is not None:
        reporter.setstatus = lambda *args, **kwargs: None
        reporter.ensure_show_status = lambda: None


@pytest.hookimpl(wrapper=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """In a run, no progress character per cell (the run's progress display has each verdict); the
    category is kept, so pytest's final counts stay right."""
    found = yield
    if _in_run(config) and found:
        return found[0], "", ""
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller's progress display ends here, after the last verdict and before pytest's summary of
    failures (harness.progress; nothing in a worker process)."""
    progress.finish()


class Worker:
    """What a pytest worker shares between its cells: the run's configuration and its services (made on the
    first cell, so a collect-only pass, which comes before run.json is written, attaches to nothing)."""

    def __init__(self, run_dir: RunDir, config: RunConfig, name: str = "main") -> None:
        self.run_dir, self.config = run_dir, config
        self.scope: RunScope = attach_run(self.config)
        self.expectations: tuple[Expectation, ...] = expectations.load_all(self.config.expectations)
        self.databases: dict[str, DatabaseServer] = {}
        self.unavailable: dict[str, str] = {}
        for backend in DATABASE_BACKENDS:
            try:
                self.databases[backend] = self.scope.database(backend)
            except DatabaseUnavailable as exc:
                self.unavailable[backend] = str(exc)
        self.object_store: ObjectStore | None = None
        self.object_store_unavailable: str | None = None
        try:
            self.object_store = self.scope.object_store()
        except ObjectStoreUnavailable as exc:
            self.object_store_unavailable = str(exc)
        self.progress = progress.Emitter(progress.events_dir(run_dir.path) / f"{name}.jsonl", name)

    def context(self, plan: CellPlan) -> CellContext:
        return CellContext(
            cell_dir=self.run_dir.cell(plan.slug).path,
            runtime=self.scope.cell_runtime({LABEL_RUN: self.run_dir.run_id, LABEL_CELL: plan.slug}),
            envs=EnvCache(resolution=self.config.resolution, grace_days=self.config.resolution_grace_days),
            keep_store=self.config.keep_stores,
            databases=self.databases,
            unavailable=self.unavailable,
            run_id=self.run_dir.run_id,
            expectations=self.expectations,
            client_launch=self.config.client_launch,
            object_store=self.object_store,
            object_store_unavailable=self.object_store_unavailable,
            progress=self.progress.for_cell(plan.id),
        )

    def close(self) -> None:
        self.scope.close()


def worker(config: pytest.Config) -> Worker:
    found: Worker | None = getattr(config, "_compat_worker", None)
    if found is None:
        given = config.getoption("--compat-run-dir")
        name = progress.worker_id(config)
        found = of_run(RunDir(Path(given)), name) if given else ad_hoc(name)
        config._compat_worker = found  # type: ignore[attr-defined]
    return found


def of_run(run_dir: RunDir, name: str = "main") -> Worker:
    """A worker of a run the controller prepared: its settings are run.json's, and none other. A run
    directory without one is the harness's trouble (every cell an error), never a run on defaults."""
    if not run_dir.config.is_file():
        raise CellInfrastructureError(
            f"{run_dir.config}: no run configuration (written by `mlflow-compat run` before the cells start)"
        )
    return Worker(run_dir, RunConfig.read(run_dir.config), name)


def ad_hoc(name: str = "main") -> Worker:
    """A plan run by hand with plain pytest (no run directory): the defaults, in a temp directory."""
    run_dir = RunDir(Path(tempfile.mkdtemp(prefix="mlflow-compat-")))
    return Worker(run_dir, RunConfig(run_id=run_dir.run_id), name)


def pytest_unconfigure(config: pytest.Config) -> None:
    close_forkservers()
    serverfork.close_all()
    found: Worker | None = getattr(config, "_compat_worker", None)
    if found is not None:
        found.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == PLAN_FILE:
        return PlanFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Record which cells survived `-k` (every xdist worker writes the same list; the write is atomic)."""
    given = session.config.getoption("--compat-run-dir")
    if given:
        target = RunDir(Path(given)).selected
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
        found = worker(self.config)
        found.progress.start(self.plan.id)
        started = time.monotonic()
        try:
            self.result = run_cell(self.plan, found.context(self.plan))
        except BaseException as exc:  # the cell ends without a verdict: say how, then go on raising
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            seconds = round(time.monotonic() - started, 2)
            found.progress.verdict(self.plan.id, Status.ERROR.value, seconds, f"no verdict: {why}")
            raise
        found.progress.verdict(self.result.id, self.result.status.value, self.result.seconds,
                               self.result.summary or "", failing_checks(self.result))  # fmt: skip
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


def failing_checks(result: CellResult) -> list[str]:
    """The failing checks of a cell, one short line each, for its progress verdict."""
    bad = [c for c in result.checks if c.status in (Status.FAIL, Status.ERROR, Status.XPASS)]
    lines = [f"[{c.status.value}] {c.label()}: {c.detail[:200]}" for c in bad[: progress.PROBLEMS]]
    if len(bad) > progress.PROBLEMS:
        lines.append(f"... and {len(bad) - progress.PROBLEMS} more (report.md)")
    return lines


def describe_failures(result: CellResult) -> str:
    """The failing checks of a cell, with where to look: what pytest and JUnit show for it."""
    lines = [f"{result.id}: {result.status.value} — {result.summary}"]
    for check in result.checks:
        if check.status in (Status.FAIL, Status.ERROR, Status.XPASS):
            lines.append(f"  [{check.status.value}] {check.label()}: {check.detail}")
            cell_dir = RunDir(Path()).cell(result.dir).path  # relative to the run directory
            lines += [f"      log: {cell_dir / log}" for log in check.logs]
            if check.excerpt:
                lines += ["      | " + line for line in check.excerpt.splitlines()[-15:]]
    return "\n".join(lines)
