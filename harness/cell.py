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
"""

from __future__ import annotations

import hashlib
import shutil
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import fields, integrity, owner, procs
from harness.backends import Store, StoreError, new_store
from harness.clients import StepOutcome, call_failure, run_driver
from harness.databases import DatabaseServer
from harness.differential import compare
from harness.envs import Env, EnvCache, EnvError
from harness.expectations import Expectation
from harness.expectations import apply as apply_expectations
from harness.plan import CellPlan
from harness.results import CellResult, Check, Problem, Status, worst
from harness.runtime import RunningServer, Runtime
from harness.scenarios import Scenario, resolve
from harness.server import ServerStartError, StartFailure
from harness.specs import Spec
from harness.verify import Written, diff
from harness.versions import MlflowVersion

UPGRADE_TIMEOUT_S = 900.0

# A hook a test may pass to change the store behind the clients' backs at a named point of the timeline.
Tamper = Callable[[str, Store], None]
# A hook a fault test may pass: called with the phase and the server, right after every server start.
OnServer = Callable[[str, RunningServer], None]
# What a client got back in the differential pass: the observed record, or why there is none.
Outcome = dict[str, Any] | Problem


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


@dataclass
class Account:
    """What the acked-writes check found: records never read back, and records reads did not confirm."""

    check: Check
    lost: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    reads: list[Check] = field(default_factory=list)


@dataclass
class Cell:
    plan: CellPlan
    ctx: CellContext
    result: CellResult = field(init=False)
    written: list[Written] = field(default_factory=list)
    # Every acknowledged write must be read back intact in every later phase where a client can read it:
    # the (record key, phase) pairs some client confirmed, and the read checks that tried and did not.
    confirmed: set[tuple[str, str]] = field(default_factory=set)
    tried: dict[tuple[str, str], list[Check]] = field(default_factory=dict)
    serve_phases: list[str] = field(default_factory=list)
    phase_servers: dict[str, MlflowVersion] = field(default_factory=dict)
    completed: bool = False  # the timeline ran to its end (not aborted, interrupted or crashed)
    scenarios: list[Scenario] = field(init=False)
    envs: dict[str, Env] = field(default_factory=dict)
    servers_started: int = 0
    _timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __post_init__(self) -> None:
        self.result = CellResult(
            id=self.plan.id,
            backend=self.plan.backend,
            runtime=self.ctx.runtime.name,
            path=[s.label for s in self.plan.path],
            clients=[s.label for s in self.plan.clients],
            dir=self.ctx.cell_dir.name,
        )
        self.scenarios = resolve(self.plan.scenarios, self.plan.scripts)
        self.logs = self.ctx.cell_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- the timeline --------------------------------------------------------------------------
    def run(self) -> CellResult:
        self.result.started = now()
        started = time.monotonic()
        try:
            with ExitStack() as stack:
                self.prepare_envs()
                store = stack.enter_context(self.fresh_store())
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
            acked = self.account_for_writes()
            apply_expectations(self.result, self.ctx.expectations)  # xfail/xpass, then the cell's status
            self.settle_account(acked)
            self.result.write(self.ctx.cell_dir / "cell.json")
        return self.result

    def prepare_envs(self) -> None:
        for spec in dict.fromkeys((*self.plan.path, *self.plan.clients)):
            with self.step("env", "env", client=None, server=None, timing="env") as check:
                check.detail = f"MLflow {spec.label}"
                log = self.logs / f"env-{spec.label}.log"
                try:
                    env = self.ctx.envs.ensure(spec, log)
                except EnvError as exc:
                    check.status, check.detail = Status.ERROR, f"cannot install MLflow {spec.label}: {exc}"
                    check.logs = [str(log.relative_to(self.ctx.cell_dir))]
                    raise Abort from exc
                self.envs[spec.label] = env
                how = "reused" if env.reused else f"built in {env.build_seconds:.0f}s"
                check.detail = f"MLflow {env.version} on Python {env.python} ({how}): {env.path.name}"
                self.result.components.setdefault("envs", {})[spec.label] = env.components()

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

    def serve_phase(self, phase: str, version: Spec, store: Store) -> None:
        """Start ``version``'s server on the store; every client writes, then every client reads all runs."""
        env = self.envs[version.label]
        self.serve_phases.append(phase)
        self.phase_servers[phase] = env.version
        with self.server(phase, env, store) as server:
            for client in self.plan.clients:
                self.write(phase, self.envs[client.label], server)
            for client in self.plan.clients:
                self.read(phase, self.envs[client.label], server, self.written)

    def upgrade_phase(self, phase: str, target: Spec, store: Store) -> Path:
        """Back the store up, then `mlflow db upgrade` it with the target version, as an operator would."""
        env = self.envs[target.label]
        with self.step("backup", phase, timing="backup", critical=True) as check:
            backup = store.backup(f"before-{phase}")
            check.detail = (
                f"{store.backend} store copied to {backup.name} at revision {store.schema_revision()}"
            )
        with self.step("unupgraded-start", phase, server=str(env.version), timing="upgrade") as check:
            if not store.has_schema:
                check.status = Status.SKIP
                check.detail = "the file store has no schema for a new server to refuse or migrate"
            else:
                self.probe_unupgraded(check, env, store, backup)
        with self.step(
            "db-upgrade", phase, server=str(env.version), timing="upgrade", critical=True
        ) as check:
            if not store.has_schema:
                check.status = Status.SKIP
                check.detail = "the file store has no schema: `mlflow db upgrade` does not apply"
                return backup
            rows_before = integrity.snapshot(store.sqlalchemy_url)
            before = rows_before.revision
            self.hook("before-db-upgrade", store)
            log = self.logs / f"{phase}-db-upgrade-{env.version}.log"
            check.logs = [self.rel(log)]
            code, seconds = self.ctx.runtime.db_upgrade(env, store, log, UPGRADE_TIMEOUT_S)
            try:
                after = store.schema_revision()
            except StoreError as exc:  # the database itself went away: the machine's fault, not MLflow's
                check.status, check.excerpt = Status.ERROR, self.tail(log)
                check.detail = (
                    f"`mlflow db upgrade` exited with code {code} and the database no longer answers: {exc}"
                )
                return backup
            self.result.components.setdefault("revisions", {})[phase] = {
                "before": before,
                "after": after,
                "expected": env.schema_head,
            }
            if code is None:
                check.status, check.detail = (
                    Status.ERROR,
                    f"`mlflow db upgrade` timed out after {seconds:.0f}s",
                )
            elif code != 0:
                check.status, check.detail = Status.FAIL, f"`mlflow db upgrade` exited with code {code}"
                check.excerpt = self.tail(log)
            elif after != env.schema_head:
                check.status = Status.FAIL
                head = env.schema_head
                check.detail = (
                    f"schema at {after} after the upgrade, but MLflow {env.version}'s head is {head}"
                )
            else:
                check.detail = f"revision {before} -> {after} in {seconds:.1f}s"
        with self.step("integrity", phase, server=str(env.version), timing="upgrade") as check:
            report = integrity.compare(rows_before, integrity.snapshot(store.sqlalchemy_url))
            check.detail = report.summary()
            check.fail_each(report.differences)
        return backup

    def probe_unupgraded(self, check: Check, env: Env, store: Store, backup: Path) -> None:
        """Start the next server on the store before `mlflow db upgrade`: does it refuse the old schema,
        migrate it itself (then every row must survive), or serve it as it is? The backup is restored
        afterwards, so the upgrade below starts from the store the old server left."""
        revision = store.schema_revision()
        rows_before = integrity.snapshot(store.sqlalchemy_url)
        log = self.logs / f"{check.phase}-unupgraded-server-{env.version}.log"
        server = self.start_or_classify(
            check,
            env,
            store,
            log,
            refused=f"refused the un-upgraded store (schema {revision})",
            crashed="crashed instead of refusing or migrating",
        )
        if server is not None:
            server.stop()
        now = store.schema_revision()
        if server is None:
            pass
        elif now == revision == env.schema_head:
            check.detail = f"started: the store is already at this version's head {revision}"
        elif now == env.schema_head:
            report = integrity.compare(rows_before, integrity.snapshot(store.sqlalchemy_url))
            check.detail = f"migrated the store itself on start: {revision} -> {now}; {report.summary()}"
            check.fail_each(report.differences)
        else:
            check.status = Status.FAIL
            check.detail = (
                f"served the store at schema {now} (its head is {env.schema_head}) without refusing or "
                "migrating it"
            )
        if now != revision:
            store.restore(backup)
            check.detail += f"; backup restored (schema {store.schema_revision()})"

    def rollback_phase(self, version: Spec, store: Store, backup: Path) -> None:
        """The FROM server on the upgraded store, then on the restored backup."""
        env = self.envs[version.label]
        phase = "rollback"
        with self.step("rollback-start", phase, server=str(env.version), timing="rollback") as check:
            if not store.has_schema:
                check.status = Status.SKIP
                check.detail = "the file store has no schema version for an old server to refuse"
            else:
                self.probe_old_server(check, env, store)
        with self.step("restore", phase, timing="rollback", critical=True) as check:
            store.restore(backup)
            check.detail = f"restored {backup.name}; schema revision {store.schema_revision()}"
        before = [w for w in self.written if w.phase == "before"]
        self.serve_phases.append(phase)
        self.phase_servers[phase] = env.version
        with self.server(phase, env, store) as server:
            self.read(phase, env, server, before, name="restore-read")

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
                self.compare_answers(check, base, cand, seen["baseline"][0], seen["candidate"][0])
                same = f"same answers from {base_env.spec_label} and {cand_env.spec_label}"
                check.detail = check.detail or same
        # Its server starts and client steps are also in the timings by kind; this is the pass as a whole.
        seconds = round(time.monotonic() - started, 2)
        self.result.components["differential"] = {"baseline": baseline.label, "candidate": candidate.label,
                                                  "seconds": seconds}  # fmt: skip

    @staticmethod
    def compare_answers(check: Check, base: Outcome, cand: Outcome, base_root: str, cand_root: str) -> None:
        """One client's view of one scenario through the baseline and through the candidate."""
        if isinstance(base, dict) and isinstance(cand, dict):
            differences = compare(base, cand, baseline_roots=(base_root,), candidate_roots=(cand_root,))
            check.fail_each(differences)
            if differences:
                check.detail = f"{len(differences)} difference(s): " + "; ".join(differences[:2])
            return
        lost = [o for o in (base, cand) if isinstance(o, Problem) and o.status is Status.ERROR]
        if lost:  # no answer on one side: nothing to compare, and nobody to blame but the machine
            check.problems.append(Problem(f"not compared: {lost[0].text}", Status.ERROR))
            check.settle()
            check.detail = check.problems[0].text
            return
        if isinstance(base, Problem) and isinstance(cand, Problem):
            # "the server answered HTTP 404 to POST /api/...": the same answer to the same call is alike.
            if base.text.split(": ", 1)[0] == cand.text.split(": ", 1)[0]:
                check.detail = f"both servers failed alike: {cand.text}"
                return
            text = (
                f"the candidate failed otherwise than the baseline: {cand.text} (the baseline: {base.text})"
            )
        elif isinstance(cand, Problem):
            text = f"the candidate failed where the baseline answered: {cand.text}"
        else:
            assert isinstance(base, Problem)
            text = f"the candidate answered where the baseline failed: {base.text}"
        check.fail_each([text])
        check.detail = text

    def isolated_pass(self, role: str, spec: Spec) -> tuple[str, dict[tuple[str, str], Outcome]]:
        """Against ``spec``'s server on a fresh store: every client writes every scenario it can, then reads
        back its own records. Its store's directory, and {(client, scenario): what the read returned, or the
        problem that kept it from returning}. Failures here are compared, not judged on their own."""
        env = self.envs[spec.label]
        phase = f"differential-{role}"
        answers: dict[tuple[str, str], Outcome] = {}
        with self.fresh_store(role) as store, self.server(phase, env, store, backup=False) as server:
            for client in self.plan.clients:
                cenv = self.envs[client.label]
                runnable = [s for s in self.scenarios if not s.lacks(cenv.version, env.version,
                                                                     self.plan.backend)]  # fmt: skip
                if not runnable:
                    continue
                stem = f"{phase}-write-{cenv.spec_label}"
                tags = {"compat.writer": "differential", "compat.phase": "differential"}
                # The same token on both servers: the names a scenario makes from it are then the same too.
                tokens = {s.name: hashlib.sha256(f"{client.label}/{s.name}".encode()).hexdigest()[:10]
                          for s in runnable}  # fmt: skip
                planned = [{**s.to_plan(), "token": tokens[s.name]} for s in runnable]
                plan = {"scenarios": planned, "tags": tags}
                wrote = self.client_process(cenv, server, "write", plan, stem)
                records = {}
                for scenario in runnable:
                    scratch = Check("write", phase, Status.PASS)
                    got = self.scenario_result(scratch, wrote, scenario.name)
                    if got is None:
                        answers[(client.label, scenario.name)] = scratch.problems[-1]
                    else:
                        records[scenario.name] = (scenario, got["record"])
                if not records:
                    continue
                stem = f"{phase}-read-{cenv.spec_label}"
                plan = {"records": [{"key": name, "scenario": sc.to_plan(), "record": record}
                                    for name, (sc, record) in records.items()]}  # fmt: skip
                read = self.client_process(cenv, server, "read", plan, stem)
                for name in records:
                    scratch = Check("read", phase, Status.PASS)
                    got = self.scenario_result(scratch, read, name)
                    answers[(client.label, name)] = scratch.problems[-1] if got is None else got["observed"]
            root = str(store.workdir)
        return root, answers

    def probe_old_server(self, check: Check, env: Env, store: Store) -> None:
        revision = store.schema_revision()
        log = self.logs / f"rollback-server-{env.version}.log"
        server = self.start_or_classify(
            check,
            env,
            store,
            log,
            refused="refused the upgraded store as expected",
            crashed="crashed instead of refusing",
        )
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

    def start_or_classify(
        self, check: Check, env: Env, store: Store, log: Path, *, refused: str, crashed: str
    ) -> RunningServer | None:
        """Start a server that may rightly refuse the store. A schema refusal is ``refused`` (the check
        passes), a taken port or a timeout an error, any other exit ``crashed`` (a failure); None then."""
        check.logs = [self.rel(log)]
        try:
            return self.ctx.runtime.start_server(env, store, log)
        except ServerStartError as exc:
            if exc.kind is StartFailure.REFUSED_SCHEMA:
                check.detail = f"{refused}: {exc}"
            elif exc.is_infrastructure:
                check.status, check.detail = Status.ERROR, str(exc)
            else:
                check.status, check.detail, check.excerpt = Status.FAIL, f"{crashed}: {exc}", exc.excerpt
            return None

    # -- client steps -----------------------------------------------------------------------------
    def write(self, phase: str, client: Env, server: RunningServer) -> None:
        """One client process runs every scenario this client has; each scenario is a check of its own."""
        writer = f"client {client.spec_label} -> server {server.version} ({phase})"
        runnable = [s for s in self.scenarios if not self.skipped("write", phase, client, server, s)]
        if not runnable:
            return
        plan = {"scenarios": [s.to_plan() for s in runnable],
                "tags": {"compat.writer": writer, "compat.phase": phase}}  # fmt: skip
        stem = f"{phase}-write-{client.spec_label}"
        outcome = self.client_process(client, server, "write", plan, stem)
        for scenario in runnable:
            check = self.scenario_check("write", phase, client, server, scenario, stem)
            got = self.scenario_result(check, outcome, scenario.name)
            if got is None:
                continue
            check.seconds = got["seconds"]
            record = got["record"]
            key = f"{phase}/{client.spec_label}/{scenario.name}"
            window = tuple(got["window"]) if got.get("window") else None
            self.written.append(Written(key, scenario.name, writer, phase, record, client=client.spec_label,
                                        server=server.version, window=window))  # fmt: skip
            shown = [f"{k}={v}" for k, v in record.items() if isinstance(v, str | int) and len(str(v)) < 200]
            check.detail = f"acknowledged in {got['seconds']:.1f}s" + (
                f": {', '.join(shown)}" if shown else ""
            )

    def read(
        self, phase: str, client: Env, server: RunningServer, written: list[Written], name: str = "read"
    ) -> None:
        """One client process reads back every record it can; each scenario's records are one check, and
        each record's outcome is kept in it (a difference or a wrong answer: fail; no answer: error)."""
        if not written:
            self.result.add(Check(name, phase, Status.SKIP, "no acknowledged writes to read back",
                                  client=client.spec_label, server=server.version))  # fmt: skip
            return
        present = {w.scenario for w in written}
        scenarios = [s for s in self.scenarios if s.name in present]
        readable = [s for s in scenarios if not self.skipped(name, phase, client, server, s)]
        if not readable:
            return
        by_name = {s.name: s for s in readable}
        server_version = MlflowVersion.parse(server.version)
        records = [w for w in written if w.scenario in by_name]
        plan = {"records": [{"key": w.key, "scenario": by_name[w.scenario].to_plan(), "record": w.record}
                            for w in records]}  # fmt: skip
        stem = f"{phase}-{name}-{client.spec_label}"
        outcome = self.client_process(client, server, "read", plan, stem)
        for scenario in readable:
            check = self.scenario_check(name, phase, client, server, scenario, stem)
            mine = [w for w in records if w.scenario == scenario.name]
            check.writers = [dict(t) for t in dict.fromkeys(tuple(w.written_by.items()) for w in mine)]
            read: set[str | None] = set()  # records the client returned (with or without differences)
            absent: set[str] = set()  # fields not compared, by rule (harness/data/fields.toml)
            for w in mine:
                tried = self.tried.setdefault((w.key, phase), [])
                got = self.scenario_result(check, outcome, w.key, w)
                if got is None:
                    tried.append(check)
                    continue
                read.add(w.key)
                check.seconds += got["seconds"]
                expected, observed, notes = fields.normalise(
                    w.record,
                    got["observed"],
                    writer_client=MlflowVersion.parse(w.client.split("@")[0]),
                    writer_server=MlflowVersion.parse(w.server),
                    reader_client=client.version,
                    reader_server=server_version,
                    backend=self.plan.backend,
                )
                absent.update(note.split(" not compared", 1)[0] for note in notes)
                differences = diff(expected, observed)
                if differences:
                    tried.append(check)
                else:
                    self.confirmed.add((w.key, phase))
                check.problems += [Problem(f"{w.writer}: {d}", Status.FAIL, w.key, w.written_by)
                                   for d in differences]  # fmt: skip
            check.settle()
            by_rule = f"; not compared, by rule: {', '.join(sorted(absent))}" if absent else ""
            if not check.problems:
                check.detail = f"{len(mine)} records read back exactly as written{by_rule}"
                continue
            differences = sum(p.record in read for p in check.problems)
            failed = {p.record for p in check.problems if p.status is Status.FAIL} - read
            unread = {p.record for p in check.problems if p.status is Status.ERROR}
            summary = [f"{differences} difference(s)"] if differences else []
            summary += [f"{len(failed)} read(s) failed"] if failed else []
            summary += [f"{len(unread)} record(s) not read (no answer)"] if unread else []
            check.detail = (
                f"{', '.join(summary)} in {len(mine)} records: "
                + "; ".join(p.text for p in check.problems[:2])
                + by_rule
            )
            # Every problem, then the traceback or log tail of a failed read (kept by scenario_result).
            listed = "\n".join(p.text for p in check.problems)
            check.excerpt = f"{listed}\n\n{check.excerpt}" if check.excerpt else listed

    def account_for_writes(self) -> Account | None:
        """`acked writes: N, read back: N`: every write a client saw acknowledged must be read back intact
        after every hop (and, if written before the upgrade, after the restore) by at least one client that
        can read it. A shortfall names the missing records; its status is settled after the expectations."""
        if not self.written:
            return None
        account = Account(self.result.add(Check("acked-writes", "cell", Status.PASS)))
        for w in self.written:
            later = self.serve_phases[self.serve_phases.index(w.phase) :]
            for phase in [p for p in later if p != "rollback" or w.phase == "before"]:
                if (w.key, phase) in self.confirmed:
                    continue
                tried = self.tried.get((w.key, phase))
                if tried:
                    how = ", ".join(sorted({c.status.value for c in tried}))
                    account.unconfirmed.append(f"{w.key}: not confirmed in {phase} (reads: {how})")
                    account.reads += tried
                elif self.can_be_read(w, phase):
                    account.lost.append(f"{w.key}: never read back in {phase}")
        missing = account.lost + account.unconfirmed
        short = {m.split(":", 1)[0] for m in missing}
        check = account.check
        check.detail = f"acked writes: {len(self.written)}, read back: {len(self.written) - len(short)}"
        if missing:
            check.detail += f"; missing: {'; '.join(missing[:2])}" + (" …" if len(missing) > 2 else "")
            check.excerpt = "\n".join(missing)
        return account

    def settle_account(self, account: Account | None) -> None:
        """A record the harness never read back is a fail of its own; one that reads did not confirm takes the
        worst status those reads ended with, after the expectations (a declared failure stays xfail)."""
        if account is None or not (account.lost or account.unconfirmed):
            return
        # Never read because the cell ended early is not a lost write; the reason is already an error check.
        lost = [Status.FAIL if self.completed else Status.ERROR] if account.lost else []
        statuses = [c.status for c in account.reads] + lost
        account.check.status = worst(statuses)
        self.result.finish()

    def can_be_read(self, w: Written, phase: str) -> bool:
        scenario = next(s for s in self.scenarios if s.name == w.scenario)
        server = self.phase_servers[phase]
        readers = [self.plan.path[0]] if phase == "rollback" else list(self.plan.clients)
        return any(not scenario.lacks(r.version, server, self.plan.backend) for r in readers)

    def skipped(self, name: str, phase: str, client: Env, server: RunningServer, scenario: Scenario) -> bool:
        """Record a `skip` when the client lacks an API the scenario uses (or the store a feature)."""
        why = scenario.lacks(client.version, MlflowVersion.parse(server.version), self.plan.backend)
        if why:
            self.result.add(Check(name, phase, Status.SKIP, why, client=client.spec_label,
                                  server=server.version, scenario=scenario.name))  # fmt: skip
        return why is not None

    def scenario_check(
        self, name: str, phase: str, client: Env, server: RunningServer, scenario: Scenario, stem: str
    ) -> Check:
        logs = [f"logs/{stem}.log", f"logs/{stem}.json"]
        return self.result.add(Check(name, phase, Status.PASS, client=client.spec_label,
                                     server=server.version, scenario=scenario.name, logs=logs))  # fmt: skip

    def client_process(
        self, client: Env, server: RunningServer, step: str, plan: dict, stem: str
    ) -> StepOutcome:
        started = time.monotonic()
        outcome = run_driver(client, step, plan, tracking_uri=server.url, out=self.logs / f"{stem}.json",
                             log=self.logs / f"{stem}.log", workdir=self.scratch)  # fmt: skip
        self._timings["client"] += time.monotonic() - started
        return outcome

    @staticmethod
    def scenario_result(
        check: Check, outcome: StepOutcome, key: str, written: Written | None = None
    ) -> dict | None:
        """One scenario's outcome from a client process, or None with the problem added to ``check``: a
        process that never reported (timed out, crashed) or a call that got no answer is an error; a call
        the server answered with an error, or a client that raised, is MLflow's failure."""
        record, by = (written.key, written.written_by) if written else (None, None)
        prefix = f"{written.writer}: " if written else ""
        if not outcome.ok:
            problem = Problem(prefix + outcome.error, Status.ERROR, record, by)
            check.excerpt = outcome.excerpt
        elif (got := outcome.data["results"].get(key)) is None:
            problem = Problem(
                f"{prefix}the client process reported nothing for {key}", Status.ERROR, record, by
            )
        elif not got["ok"]:
            failure = call_failure(got)
            problem = Problem(prefix + failure.text, Status.FAIL if failure.answered else Status.ERROR,
                              record, by)  # fmt: skip
            check.excerpt = got.get("traceback")
        else:
            return got
        check.problems.append(problem)
        check.settle()
        check.detail = problem.text
        return None

    # -- servers ------------------------------------------------------------------------------------
    @contextmanager
    def server(self, phase: str, env: Env, store: Store, backup: bool = True) -> Iterator[RunningServer]:
        """A server for the length of a phase. Its start is a check; a failed start ends the cell."""
        log = self.logs / f"{phase}-server-{env.version}.log"
        if self.servers_started and backup:
            # A server may migrate the schema on start (shared/mlflow-facts.md): back up first, every time.
            with self.step("backup", phase, timing="backup", critical=True) as check:
                check.detail = f"copied to {store.backup(f'before-{phase}-server').name}"
        self.servers_started += 1
        revision = store.schema_revision()
        with self.step(
            "server-start", phase, server=str(env.version), timing="server-start", critical=True
        ) as check:
            check.logs = [self.rel(log)]
            server = self.ctx.runtime.start_server(env, store, log)
            now_at = store.schema_revision()
            if now_at == revision:
                migrated = ""
            elif revision is None:
                migrated = f"; created the schema at {now_at}"
            else:
                migrated = f"; migrated the schema itself on start: {revision} -> {now_at}"
            check.detail = f"{server.url} (artifacts: {server.artifact_mode}){migrated}"
            self.result.components.setdefault("artifact_modes", {})[str(env.version)] = server.artifact_mode
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
                        logs=[self.rel(log)],
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
    ) -> Iterator[Check]:
        """Record one check, timed and classified when it raises. A failed ``critical`` step ends the cell."""
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
        finally:
            elapsed = time.monotonic() - started
            check.seconds = round(elapsed, 2)
            self._timings[timing] += elapsed
        if critical and check.status in (Status.FAIL, Status.ERROR):
            raise Abort

    def hook(self, point: str, store: Store) -> None:
        if self.ctx.tamper is not None:
            self.ctx.tamper(point, store)

    @property
    def scratch(self) -> Path:
        """Clients' working directory: nothing they write by accident lands in the repository."""
        return self.ctx.cell_dir / "scratch"

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.ctx.cell_dir))

    @staticmethod
    def tail(path: Path) -> str:
        return procs.tail(path)


def run_cell(plan: CellPlan, ctx: CellContext) -> CellResult:
    return Cell(plan, ctx).run()
