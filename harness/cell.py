"""One cell, from start to verdict. Read this file top to bottom to see a cell's timeline:

  env       build or reuse one venv per MLflow version the cell needs
  before    FROM server on a fresh store; every client runs every scenario it has the API for (one client
            process per client and step, forked from that version's fork server), then every client reads
            back every record it can
  upgrade   stop the server, back the store up; start the next server on the un-upgraded store (refused,
            migrated by the server itself, or served as it is?) and restore the backup; snapshot the
            tables, `mlflow db upgrade` to the next version; the revision must be the new head and every
            row that existed must still be there, unchanged
  after     next server on the same store; every client writes again and reads every record, old ones included
            (a multi-hop path repeats upgrade/after per hop: upgrade-1, after-1, upgrade-2, ...)
  rollback  FROM server on the upgraded store (a refusal is the documented outcome), then restore the
            backup and show that the FROM server serves the pre-upgrade runs again, intact
  account   acked writes: every record a client saw acknowledged was read back intact after every hop
            (and after the restore); then the declared expectations turn known failures into xfail

Each step is a Check. A step whose failure makes the rest meaningless (a server that will not start,
a failed upgrade, a broken backup) ends the cell early; client steps never do.

What lives here: the timeline, the steps about the store and its schema, and the servers' lifecycle
(each start a check). What does not: the client steps (harness/clientsteps.py), the acked-writes ledger
(harness/ledger.py), how the differential pass compares two answers (harness/differential.py), where a
cell's files go (harness/rundir.py), what a declared expectation does to a check (harness/expectations.py).
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from harness import (
    fidelity,
    integrity,
    interrupted,
    migration,
    owner,
    procs,
    randomplan,
    rolling,
    scale,
    schema,
)
from harness.backends import DATABASE_BACKENDS, Store, StoreError, new_store
from harness.clientsteps import ClientSteps
from harness.databases import DatabaseServer
from harness.differential import Outcome, compare_answers
from harness.envs import Env, EnvCache, EnvError
from harness.expectations import Expectation
from harness.expectations import apply as apply_expectations
from harness.features import PACKAGES as FEATURE_PACKAGES
from harness.features import Feature, Site, close_features, open_features
from harness.ledger import Ledger
from harness.plan import CellPlan, scale_label
from harness.results import CellResult, Check, Status
from harness.rundir import CellDir
from harness.runtime import RunningServer, Runtime
from harness.scenarios import Scenario, resolve
from harness.server import ServerStartError, StartFailure
from harness.specs import Spec
from harness.versions import MlflowVersion

UPGRADE_TIMEOUT_S = 900.0

# A hook a test may pass to change the store behind the clients' backs at a named point of the timeline.
Tamper = Callable[[str, Store], None]
# A hook a fault test may pass: called with the phase and the server, right after every server start.
OnServer = Callable[[str, RunningServer], None]


class Abort(Exception):
    """The cell cannot go on; the check that says why is already recorded."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class CellContext:
    cell_dir: Path  # logs and cell.json live here (inside the run's results directory)
    runtime: Runtime
    envs: EnvCache
    work_root: Path | None = None  # where stores are made; a fresh temp dir under it, removed at the end
    keep_store: bool = False
    tamper: Tamper | None = None
    on_server: OnServer | None = None
    databases: dict[str, DatabaseServer] = field(default_factory=dict)  # the run's servers, by backend
    run_id: str = "adhoc"
    expectations: tuple[Expectation, ...] = ()  # declared incompatibilities, applied when the cell ends
    unavailable: Mapping[str, str] = field(default_factory=dict)  # why a backend has no server in this run
    client_launch: str = "fork"  # how client processes start: fork (from a fork server) or spawn
    object_store: Any = None  # the run's S3 server, when the run has S3 cells (harness/features/s3.py)
    object_store_unavailable: str | None = None  # why the run has no S3 server
    progress: Callable[[str, str], None] | None = None  # told each (phase, step) the cell moves to


@dataclass
class Hop:
    """What the steps of one stretch of the timeline (an upgrade hop, or the rollback) hand on to each
    other: the version it goes to (or back to), the store, the backup taken before it, the rows before the
    upgrade."""

    phase: str
    env: Env
    store: Store
    timing: str  # the timings key its schema steps count under
    rolling: bool = False  # the FROM server and a workload run through its upgrade (harness/rolling.py)
    backup: Path = field(init=False)
    rows_before: integrity.Snapshot | scale.Sums = field(init=False)  # at scale: counts and checksums


@dataclass(frozen=True)
class SchemaStep:
    """A step about the store's schema. ``without_schema``: the skip's reason on a store that has none (the
    file store); None: the step is not recorded there at all."""

    name: str
    run: Callable[[Cell, Hop, Check], None]
    without_schema: str | None
    critical: bool = False


@dataclass
class Cell:
    plan: CellPlan
    ctx: CellContext
    result: CellResult = field(init=False)
    completed: bool = False  # the timeline ran to its end (not aborted, interrupted or crashed)
    scenarios: list[Scenario] = field(init=False)
    envs: dict[str, Env] = field(default_factory=dict)
    servers_started: int = 0
    _timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    dir: CellDir = field(init=False)
    ledger: Ledger = field(init=False)  # the acked writes and what the reads made of them
    clients: ClientSteps = field(init=False)  # every client's writes and reads, as checks
    features: list[Feature] = field(default_factory=list)  # what its servers run with (auth, S3 artifacts)
    at: tuple[str, str] | None = None  # the (phase, step) last told to ctx.progress

    def __post_init__(self) -> None:
        self.result = CellResult(
            id=self.plan.id,
            backend=self.plan.backend,
            runtime=self.ctx.runtime.name,
            path=[s.label for s in self.plan.path],
            clients=[s.label for s in self.plan.clients],
            dir=self.ctx.cell_dir.name,
            auth=self.plan.auth,
            artifact_store=self.plan.artifact_store,
            scale=scale_label(self.plan.scale) if self.plan.scale else "",
            rolling=self.plan.rolling,
            seed=self.plan.seed,
        )
        if self.plan.seed is not None:  # a drawn cell keeps its plan as drawn (--random-plan)
            self.result.components["random_plan"] = randomplan.record(self.plan)
        self.scenarios = resolve(self.plan.scenarios, self.plan.scripts)
        self.dir = CellDir(self.ctx.cell_dir)
        self.dir.logs.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.scenarios, self.plan.path[0], list(self.plan.clients), self.plan.backend)
        self.clients = ClientSteps(self.result, self.ledger, self.scenarios, self.plan.backend, self.dir,
                                   self._timings, launch=self.ctx.client_launch,
                                   client_env=self.client_env)  # fmt: skip

    # -- the timeline --------------------------------------------------------------------------
    def run(self) -> CellResult:
        self.result.started = now()
        started = time.monotonic()
        try:
            with ExitStack() as stack:
                self.prepare_envs()
                store = stack.enter_context(self.fresh_store())
                self.features = stack.enter_context(self.cell_features(store))
                path = self.plan.path
                self.serve_phase("before", path[0], store)
                backups = []
                for hop, target in enumerate(path[1:], start=1):
                    suffix = "" if len(path) == 2 else f"-{hop}"
                    # Tests change the store behind the clients' backs here.
                    self.hook("before-upgrade", store)
                    backups.append(self.upgrade_phase(f"upgrade{suffix}", target, store))
                    self.serve_phase(f"after{suffix}", target, store)
                self.rollback_phase(path[0], store, backups[0])
                if self.plan.differential:
                    self.differential_phase(path[0], path[-1])
                self.completed = True
        except Abort:
            pass
        except KeyboardInterrupt:
            self.result.add(
                Check("interrupted", "cell", Status.ERROR, "interrupted (Ctrl-C); servers stopped")
            )
            raise
        except Exception as exc:  # a bug in the harness itself: say so, never pass
            self.result.add(
                Check(
                    "harness",
                    "cell",
                    Status.ERROR,
                    f"harness error: {type(exc).__name__}: {exc}",
                    excerpt=traceback.format_exc(),
                )
            )
        finally:
            self.result.seconds = round(time.monotonic() - started, 2)
            self.result.ended = now()
            self.result.timings = {k: round(v, 2) for k, v in self._timings.items()}
            if runtime_facts := self.ctx.runtime.describe():
                self.result.components["runtime"] = runtime_facts
            acked = self.ledger.account(self.result)
            apply_expectations(self.result, self.ctx.expectations)  # xfail/xpass, then the cell's status
            self.ledger.settle(acked, self.result, completed=self.completed)
            self.result.write(self.dir.json)
        return self.result

    def prepare_envs(self) -> None:
        for spec in dict.fromkeys((*self.plan.path, *self.plan.clients)):
            with self.step("env", "env", client=None, server=None, timing="env",
                           shown=f"MLflow {spec.label}") as check:  # fmt: skip
                check.detail = f"MLflow {spec.label}"
                log = self.dir.logs / f"env-{spec.label}.log"
                try:
                    env = self.ctx.envs.ensure(spec, log, packages=self.packages())
                except EnvError as exc:
                    check.status, check.detail = Status.ERROR, f"cannot install MLflow {spec.label}: {exc}"
                    check.logs = [self.dir.rel(log)]
                    raise Abort from exc
                self.envs[spec.label] = env
                how = "reused" if env.reused else f"built in {env.build_seconds:.0f}s"
                check.detail = f"MLflow {env.version} on Python {env.python} ({how}): {env.path.name}"
                self.result.components.setdefault("envs", {})[spec.label] = env.components()

    def packages(self) -> tuple[str, ...]:
        """What the cell needs installed beside mlflow in every env: its scenarios' and features' PACKAGES."""
        wanted = {p for s in self.scenarios for p in s.packages}
        wanted |= {p for name in self.plan.features for p in FEATURE_PACKAGES.get(name, ())}
        return tuple(sorted(wanted))

    @contextmanager
    def fresh_store(self, role: str = "") -> Iterator[Store]:
        """A new, empty store of the cell's backend, removed at the end; ``role`` names an extra one."""
        slug = f"{self.plan.slug}-{role}" if role else self.plan.slug
        workdir = owner.mkdtemp(f"mlflow-compat-{slug}-", self.ctx.work_root)
        try:
            store = new_store(
                self.plan.backend,
                workdir,
                servers=self.ctx.databases,
                run_id=self.ctx.run_id,
                cell_slug=slug,
                unavailable=self.ctx.unavailable,
            )
        except StoreError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            self.result.add(Check("store", "env", Status.ERROR, str(exc)))
            raise Abort from exc
        if not role:
            self.result.components["backend"] = store.describe()
        try:
            yield store
        finally:
            t = time.monotonic()
            try:
                store.close()
            except StoreError as exc:
                self.result.add(Check("teardown", "cell", Status.ERROR, str(exc)))
            if not self.ctx.keep_store:
                shutil.rmtree(workdir, ignore_errors=True)
            self._timings["teardown"] += time.monotonic() - t

    @contextmanager
    def cell_features(self, store: Store) -> Iterator[list[Feature]]:
        """The cell's features (harness/features), opened beside its store and closed before it. One that
        cannot be opened ends the cell (`error`); one that cannot be closed is a teardown error."""
        site = Site(slug=self.plan.slug, run_id=self.ctx.run_id, store=store, databases=self.ctx.databases,
                    object_store=self.ctx.object_store,
                    object_store_unavailable=self.ctx.object_store_unavailable)  # fmt: skip
        try:
            features = open_features(self.plan.features, site)
        except StoreError as exc:
            self.result.add(Check("features", "env", Status.ERROR, str(exc)))
            raise Abort from exc
        for feature in features:
            self.result.components.setdefault("features", {})[feature.name] = feature.describe()
        try:
            yield features
        finally:
            try:
                close_features(features)
            except StoreError as exc:
                self.result.add(Check("teardown", "cell", Status.ERROR, str(exc)))

    def client_env(self, version: MlflowVersion) -> dict[str, str]:
        """What every client process of ``version`` gets from the cell's features (credentials, endpoints)."""
        out: dict[str, str] = {}
        for feature in self.features:
            out.update(feature.client_env(version))
        return out

    def backup(self, store: Store, name: str) -> Path:
        """Back the store up as an operator would, and each feature's state (an auth database, a bucket) with
        it; returns the backup's directory."""
        dest = store.backup(name)
        for feature in self.features:
            feature.backup(self.feature_dir(dest, feature))
        return dest

    def restore(self, store: Store, backup: Path) -> None:
        store.restore(backup)
        for feature in self.features:
            feature.restore(self.feature_dir(backup, feature))

    @staticmethod
    def feature_dir(backup: Path, feature: Feature) -> Path:
        path = backup / f"feature-{feature.name}"
        path.mkdir(exist_ok=True)
        return path

    def serve_phase(self, phase: str, version: Spec, store: Store) -> None:
        """Start ``version``'s server on the store; every client writes, then every client reads all runs."""
        env = self.envs[version.label]
        self.ledger.serving(phase, env.version)
        with self.server(phase, env, store) as server:
            if self.plan.scale:
                self.scale_step(phase, env, store, server)
            self.moved(phase, "write")
            for client in self.plan.clients:
                self.clients.write(phase, self.envs[client.label], server)
            self.moved(phase, "read")
            for client in self.plan.clients:
                self.clients.read(phase, self.envs[client.label], server, self.ledger.written)

    def upgrade_phase(self, phase: str, target: Spec, store: Store) -> Path:
        """Back the store up, then `mlflow db upgrade` it with the target version, as an operator would.
        Returns the backup (the rollback restores the first hop's)."""
        hop = Hop(phase, self.envs[target.label], store, timing="upgrade")
        with self.step("backup", phase, timing="backup", critical=True) as check:
            hop.backup = self.backup(store, f"before-{phase}")
            check.detail = (
                f"{store.backend} store copied to {hop.backup.name} at revision {store.schema_revision()}"
            )
        self.schema_steps(hop, UNUPGRADED_START)  # restores the backup: before the rolling FROM server starts
        if self.plan.scale and store.backend in DATABASE_BACKENDS:  # kill an upgrade half-way, run it again
            self.schema_steps(hop, INTERRUPTED_UPGRADE)
        if self.plan.rolling and phase in ("upgrade", "upgrade-1") and store.has_schema:
            self.rolling_upgrade(hop)
        else:
            self.schema_steps(hop, DB_UPGRADE, INTEGRITY)
        self.schema_steps(hop, SCHEMA_DRIFT)
        return hop.backup

    def rolling_upgrade(self, hop: Hop) -> None:
        """--rolling, first hop: the FROM server and a workload of every client keep running through
        `mlflow db upgrade` and the integrity check, then the TO server starts beside it on the same store;
        every acknowledged write is read back through the TO server (harness/rolling.py)."""
        hop.rolling = True
        rolling.run_stretch(self, hop, lambda: self.schema_steps(hop, DB_UPGRADE, INTEGRITY))

    def rollback_phase(self, version: Spec, store: Store, backup: Path) -> None:
        """The FROM server on the upgraded store, then on the restored backup."""
        hop = Hop("rollback", self.envs[version.label], store, timing="rollback")
        self.schema_steps(hop, ROLLBACK_START)
        with self.step("restore", hop.phase, timing="rollback", critical=True) as check:
            self.restore(store, backup)
            check.detail = f"restored {backup.name}; schema revision {store.schema_revision()}"
        before = [w for w in self.ledger.written if w.phase == "before"]
        self.ledger.serving(hop.phase, hop.env.version)
        with self.server(hop.phase, hop.env, store) as server:
            self.moved(hop.phase, "restore-read")
            self.clients.read(hop.phase, hop.env, server, before, name="restore-read")

    def schema_steps(self, hop: Hop, *steps: SchemaStep) -> None:
        """Steps about the store's schema, in order. The one place that decides what a store without a schema
        (the file store) does with them: each is recorded as a skip saying why, or not at all when it has
        nothing to say (the integrity check), and none runs."""
        has_schema = hop.store.has_schema
        # Decided on the store as the hop found it: a store that moves to another backend on upgrade (the file
        # store migrated into SQLite) has steps with nothing to do before it moved (Store.skips says which).
        skips = {s.name: hop.store.skips(s.name) if has_schema else s.without_schema for s in steps}
        for step in steps:
            if not has_schema and step.without_schema is None:
                continue
            with self.step(step.name, hop.phase, server=str(hop.env.version), timing=hop.timing,
                           critical=step.critical) as check:  # fmt: skip
                if (why := skips[step.name]) is None:
                    step.run(self, hop, check)
                else:
                    check.status, check.detail = Status.SKIP, why

    # -- the schema steps ---------------------------------------------------------------------------
    def probe_unupgraded(self, hop: Hop, check: Check) -> None:
        """Start the next server on the store before `mlflow db upgrade`: does it refuse the old schema,
        migrate it itself (then every row must survive), or serve it as it is? The backup is restored
        afterwards, so the upgrade below starts from the store the old server left."""
        env, store = hop.env, hop.store
        revision = store.schema_revision()
        rows_before = self.rows_now(hop)
        server = self.start_or_classify(hop, check, f"{hop.phase}-unupgraded-server",
                                        refused=f"refused the un-upgraded store (schema {revision})",
                                        crashed="crashed instead of refusing or migrating")  # fmt: skip
        if server is not None:
            server.stop()
        now = store.schema_revision()
        if server is None:
            pass
        elif now == revision == env.schema_head:
            check.detail = f"started: the store is already at this version's head {revision}"
        elif now == env.schema_head:
            report = self.rows_compare(rows_before, hop)
            check.detail = f"migrated the store itself on start: {revision} -> {now}; {report.summary()}"
            check.fail_each(report.differences)
        else:
            check.status = Status.FAIL
            check.detail = (
                f"served the store at schema {now} (its head is {env.schema_head}) without refusing or "
                "migrating it"
            )
        if now != revision:
            self.restore(store, hop.backup)
            check.detail += f"; backup restored (schema {store.schema_revision()})"

    def db_upgrade(self, hop: Hop, check: Check) -> None:
        """`mlflow db upgrade`: the revision must then be the version's head (the rows: the next step)."""
        env, store = hop.env, hop.store
        hop.rows_before = self.rows_now(hop)
        before = hop.rows_before.revision
        self.hook("before-db-upgrade", store)
        log = self.dir.logs / f"{hop.phase}-db-upgrade-{env.version}.log"
        check.logs = [self.dir.rel(log)]
        with self.upgrade_watch(hop):
            code, seconds, events, _ = self.ctx.runtime.db_upgrade(env, store, log, UPGRADE_TIMEOUT_S)
        timing = migration.record(migration.read_events(events))  # per revision: harness/migration.py
        self.result.components.setdefault("migration", {})[hop.phase] = timing
        try:
            after = store.schema_revision()
        except StoreError as exc:  # the database itself went away: the machine's fault, not MLflow's
            check.status, check.excerpt = Status.ERROR, self.tail(log)
            check.detail = (
                f"`mlflow db upgrade` exited with code {code} and the database no longer answers: {exc}"
            )
            return
        self.result.components.setdefault("revisions", {})[hop.phase] = {
            "before": before,
            "after": after,
            "expected": env.schema_head,
        }
        if code is None:
            check.status, check.detail = Status.ERROR, f"`mlflow db upgrade` timed out after {seconds:.0f}s"
        elif code != 0:
            check.status, check.detail = Status.FAIL, f"`mlflow db upgrade` exited with code {code}"
            check.excerpt = self.tail(log)
        elif after != env.schema_head:
            check.status = Status.FAIL
            head = env.schema_head
            check.detail = f"schema at {after} after the upgrade, but MLflow {env.version}'s head is {head}"
        else:
            done = f"revision {before} -> {after} in {seconds:.1f}s"
            check.detail = "; ".join(filter(None, (done, migration.slowest(timing))))

    @contextmanager
    def upgrade_watch(self, hop: Hop) -> Iterator[None]:
        """What is measured while `mlflow db upgrade` runs: in scale cells the store's size before and after
        and the longest blocking lock per table (harness/scale.py), into components["scale"]."""
        if not self.plan.scale or hop.store.sqlalchemy_url is None:
            yield
            return
        with scale.watch(hop.store.sqlalchemy_url) as seen:
            yield
        scale.record_watch(self.result.components.setdefault("scale", {}), hop.phase, seen)

    def rows_now(self, hop: Hop) -> integrity.Snapshot | scale.Sums:
        """The store's rows, read in full (harness/integrity.py), or in scale cells as in-database row counts
        and column checksums (harness/scale.py): a 1m-point store is too big to hold in Python."""
        if self.plan.scale and not hop.rolling:
            return scale.checksums(hop.store.sqlalchemy_url)
        return integrity.snapshot(hop.store.sqlalchemy_url)

    def rows_compare(
        self, before: integrity.Snapshot | scale.Sums, hop: Hop
    ) -> integrity.IntegrityReport | scale.ChecksumReport:
        if isinstance(before, scale.Sums):
            return scale.compare(before, scale.checksums(hop.store.sqlalchemy_url, like=before))
        return integrity.compare(before, integrity.snapshot(hop.store.sqlalchemy_url))

    def scale_step(self, phase: str, env: Env, store: Store, server: RunningServer) -> None:
        """Scale cells: seed the FROM store and read a sample back through its server (check `seed`); in the
        first phase after the upgrade, the next server's first start and first search_runs, timed."""
        if phase not in ("before", "after", "after-1"):
            return
        record = self.result.components.setdefault("scale", {})
        probe = partial(scale.run_probe, env, server.url, self.client_env(env.version),
                        self.dir.logs / f"{phase}-scale-probe-{env.version}")  # fmt: skip
        seeded = True
        with self.step("seed" if phase == "before" else "first-search", phase, server=str(env.version),
                       timing="scale") as check:  # fmt: skip
            if phase == "before":
                seeded = scale.seed_check(check, store.sqlalchemy_url, self.plan.scale, str(env.version),
                                          record, probe)  # fmt: skip
            else:
                starts = [c for c in self.result.checks if c.name == "server-start" and c.phase == phase]
                record["first_start_seconds"] = starts[-1].seconds if starts else None
                scale.search_check(check, str(env.version), record, probe)
        if not seeded:
            raise Abort

    def interrupted_upgrade(self, hop: Hop, check: Check) -> None:
        """`mlflow db upgrade` killed inside its middle pending revision, then run again: recovered,
        refused or a store neither version serves (harness/interrupted.py); the backup is restored after."""
        labels = [s.label for s in self.plan.path]
        from_env = self.envs[labels[labels.index(hop.env.spec_label) - 1]]
        interrupted.interrupted_upgrade(self, hop, check, UPGRADE_TIMEOUT_S, from_env)

    def check_integrity(self, hop: Hop, check: Check) -> None:
        """Every row that existed before `mlflow db upgrade` must still be there, unchanged."""
        self.hook("before-integrity", hop.store)  # tests change rows here
        if isinstance(hop.rows_before, scale.Sums):  # scale cells: counts and checksums (harness/scale.py)
            checked = self.rows_compare(hop.rows_before, hop)
            check.detail = checked.summary()
            check.fail_each(checked.differences)
            return
        before, after = hop.rows_before, integrity.snapshot(hop.store.sqlalchemy_url)
        if hop.rolling:  # the workload's own rows change during the upgrade by design: only they are left out
            before, after = rolling.without_workload(before), rolling.without_workload(after)
        # Kept beside cell.json: two runs of the cell (fork and cli launches) must hold them alike.
        fidelity.keep_snapshots(self.dir.path / fidelity.SNAPSHOTS / f"{hop.phase}.json", before, after)
        report = integrity.compare(before, after)
        check.detail = report.summary()
        check.fail_each(report.differences)

    def check_schema_drift(self, hop: Hop, check: Check) -> None:
        """The upgraded schema must be a fresh install's of the same version on the same product (made once
        per version, backend and product by starting the version's server on an empty store, and cached)."""
        self.hook("before-schema-drift", hop.store)  # tests plant drift here
        refs = schema.References(self.ctx.runtime.start_server, self.ctx.runtime.name, self.ctx.databases,
                                 self.ctx.run_id, self.ctx.work_root, self.ctx.unavailable)  # fmt: skip
        log = self.dir.logs / f"{hop.phase}-schema-reference-server-{hop.env.version}.log"
        schema.check_drift(check, hop.store, hop.env, refs, slug=f"{self.plan.slug}-{hop.phase}-schema",
                           log=log, log_rel=self.dir.rel(log))  # fmt: skip

    def probe_old_server(self, hop: Hop, check: Check) -> None:
        """The FROM server on the upgraded store: it should refuse a schema newer than its own head."""
        env, store = hop.env, hop.store
        revision = store.schema_revision()
        server = self.start_or_classify(hop, check, "rollback-server",
                                        refused="refused the upgraded store as expected",
                                        crashed="crashed instead of refusing")  # fmt: skip
        if server is None:
            return
        server.stop()
        if revision == env.schema_head:
            check.detail = f"started: the store is at {revision}, which is also this version's head"
        else:
            check.status = Status.FAIL
            check.detail = (
                f"MLflow {env.version} served a store at schema {revision} (its own head is "
                f"{env.schema_head}) instead of refusing it"
            )

    # -- the gate's differential pass -----------------------------------------------------------------
    def differential_phase(self, baseline: Spec, candidate: Spec) -> None:
        """The gate's differential pass: every client runs every scenario against the baseline's server and
        against the candidate's, each on a fresh store, and reads back what it wrote; the two answers must be
        identical once what a fresh store generates at random is aligned (harness/differential.py)."""
        started = time.monotonic()
        sides = (("baseline", baseline), ("candidate", candidate))
        seen = {role: self.isolated_pass(role, spec) for role, spec in sides}
        base_env, cand_env = self.envs[baseline.label], self.envs[candidate.label]
        for client in self.plan.clients:
            for scenario in self.scenarios:
                key = (client.label, scenario.name)
                base, cand = seen["baseline"][1].get(key), seen["candidate"][1].get(key)
                check = Check("differential", "differential", Status.PASS, client=client.label,
                              server=cand_env.spec_label, scenario=scenario.name)  # fmt: skip
                if base is None or cand is None:
                    if base is not None or cand is not None:  # one side could not even run it: say which
                        check.status = Status.SKIP
                        check.detail = f"not run against the {'candidate' if cand is None else 'baseline'}"
                        self.result.add(check)
                    continue
                self.result.add(check)
                compare_answers(check, base, cand, seen["baseline"][0], seen["candidate"][0])
                same = f"same answers from {base_env.spec_label} and {cand_env.spec_label}"
                check.detail = check.detail or same
        # Its server starts and client steps are also in the timings by kind; this is the pass as a whole.
        seconds = round(time.monotonic() - started, 2)
        self.result.components["differential"] = {"baseline": baseline.label, "candidate": candidate.label,
                                                  "seconds": seconds}  # fmt: skip

    def isolated_pass(self, role: str, spec: Spec) -> tuple[str, dict[tuple[str, str], Outcome]]:
        """Against ``spec``'s server on a fresh store, each client's isolated pass (harness/clientsteps.py).
        Its store's directory, and {(client, scenario): what the read returned, or the problem that kept it
        from returning}. Failures here are compared, not judged on their own."""
        env = self.envs[spec.label]
        phase = f"differential-{role}"
        answers: dict[tuple[str, str], Outcome] = {}
        with self.fresh_store(role) as store, self.server(phase, env, store, backup=False) as server:
            self.moved(phase, "write and read")
            for client in self.plan.clients:
                mine = self.clients.isolated(phase, self.envs[client.label], server)
                answers.update({(client.label, scenario): outcome for scenario, outcome in mine.items()})
            root = str(store.workdir)
        return root, answers

    # -- servers ------------------------------------------------------------------------------------
    def start_or_classify(
        self, hop: Hop, check: Check, log_name: str, *, refused: str, crashed: str
    ) -> RunningServer | None:
        """Start the hop's server on its store, which it may rightly refuse (its log: ``log_name``-VERSION).
        A schema refusal is ``refused`` (the check passes), a taken port or a timeout an error, any other exit
        ``crashed`` (a failure); None then."""
        log = self.dir.logs / f"{log_name}-{hop.env.version}.log"
        check.logs = [self.dir.rel(log)]
        try:
            return self.ctx.runtime.start_server(hop.env, hop.store, log, self.features)
        except ServerStartError as exc:
            if exc.kind is StartFailure.REFUSED_SCHEMA:
                check.detail = f"{refused}: {exc}"
            elif exc.is_infrastructure:
                check.status, check.detail = Status.ERROR, str(exc)
            else:
                check.status, check.detail, check.excerpt = Status.FAIL, f"{crashed}: {exc}", exc.excerpt
            return None

    @contextmanager
    def server(self, phase: str, env: Env, store: Store, backup: bool = True) -> Iterator[RunningServer]:
        """A server for the length of a phase. Its start is a check; a failed start ends the cell."""
        log = self.dir.logs / f"{phase}-server-{env.version}.log"
        if self.servers_started and backup:
            # A server may migrate the schema on start (shared/mlflow-facts.md): back up first, every time.
            with self.step("backup", phase, timing="backup", critical=True) as check:
                check.detail = f"copied to {self.backup(store, f'before-{phase}-server').name}"
        self.servers_started += 1
        revision = store.schema_revision()
        with self.step(
            "server-start", phase, server=str(env.version), timing="server-start", critical=True
        ) as check:
            check.logs = [self.dir.rel(log)]
            server = self.ctx.runtime.start_server(env, store, log, self.features)
            now_at = store.schema_revision()
            if now_at == revision:
                migrated = ""
            elif revision is None:
                migrated = f"; created the schema at {now_at}"
            else:
                migrated = f"; migrated the schema itself on start: {revision} -> {now_at}"
            check.detail = f"{server.url} (artifacts: {server.artifact_mode}){migrated}"
            self.result.components.setdefault("artifact_modes", {})[str(env.version)] = server.artifact_mode
        for feature in self.features:
            for check in feature.on_started(phase, env.version):
                self.result.add(check)
        if self.ctx.on_server is not None:
            self.ctx.on_server(phase, server)
        try:
            yield server
        finally:
            t = time.monotonic()
            died = not server.alive()
            code = server.stop()
            self._timings["teardown"] += time.monotonic() - t
            if died:
                self.result.add(
                    Check(
                        "server-alive",
                        phase,
                        Status.ERROR,
                        f"server {env.version} exited during the phase (code {code})",
                        server=str(env.version),
                        logs=[self.dir.rel(log)],
                        excerpt=self.tail(log),
                    )
                )

    # -- bookkeeping ----------------------------------------------------------------------------------
    @contextmanager
    def step(
        self,
        name: str,
        phase: str,
        *,
        client: str | None = None,
        server: str | None = None,
        timing: str,
        critical: bool = False,
        shown: str | None = None,
    ) -> Iterator[Check]:
        """Record one check, timed and classified when it raises. A failed ``critical`` step ends the cell.
        The cell's progress display shows it as ``shown``, else its name and server."""
        self.moved(phase, shown or " ".join(filter(None, (name, server))))
        check = self.result.add(Check(name, phase, Status.PASS, client=client, server=server))
        started = time.monotonic()
        try:
            yield check
        except Abort:
            raise
        except ServerStartError as exc:
            check.status = Status.ERROR if exc.is_infrastructure else Status.FAIL
            check.detail, check.excerpt = str(exc), exc.excerpt
        except (StoreError, OSError) as exc:
            check.status, check.detail = Status.ERROR, f"{type(exc).__name__}: {exc}"
            check.excerpt = traceback.format_exc()
        except Exception as exc:  # a harness bug: the check never finished, so it must not read `pass`
            check.status, check.detail = Status.ERROR, f"harness error: {type(exc).__name__}: {exc}"
            raise
        finally:
            elapsed = time.monotonic() - started
            check.seconds = round(elapsed, 2)
            self._timings[timing] += elapsed
        if critical and check.status in (Status.FAIL, Status.ERROR):
            raise Abort

    def moved(self, phase: str, step: str) -> None:
        """Tell the run's progress display (harness.progress) that the cell is now at ``step`` of ``phase``
        (once per change: a step repeated for each client or scenario is one change)."""
        if self.ctx.progress is not None and (phase, step) != self.at:
            self.at = (phase, step)
            self.ctx.progress(phase, step)

    def hook(self, point: str, store: Store) -> None:
        if self.ctx.tamper is not None:
            self.ctx.tamper(point, store)

    @staticmethod
    def tail(path: Path) -> str:
        return procs.tail(path)


# The schema steps, in timeline order (Cell.schema_steps: what a store without a schema does with them).
UNUPGRADED_START = SchemaStep(
    "unupgraded-start",
    Cell.probe_unupgraded,
    "the file store has no schema for a new server to refuse or migrate",
)
DB_UPGRADE = SchemaStep(
    "db-upgrade",
    Cell.db_upgrade,
    "the file store has no schema: `mlflow db upgrade` does not apply",
    critical=True,
)
INTEGRITY = SchemaStep("integrity", Cell.check_integrity, None)
INTERRUPTED_UPGRADE = SchemaStep("interrupted-upgrade", Cell.interrupted_upgrade, None)
SCHEMA_DRIFT = SchemaStep("schema-drift", Cell.check_schema_drift, None)
ROLLBACK_START = SchemaStep(
    "rollback-start",
    Cell.probe_old_server,
    "the file store has no schema version for an old server to refuse",
)


def run_cell(plan: CellPlan, ctx: CellContext) -> CellResult:
    return Cell(plan, ctx).run()
