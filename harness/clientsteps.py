"""A cell's client steps: every client writes every scenario it has the API for, and reads back every record
it can, one client process per client and step; each scenario's outcome is a check of its own.

One helper launches a client process for a step (its plan, its logs' stem, its time in the cell's timings)
and turns each scenario's or record's outcome into a result or a problem: it serves the cell's writes, its
reads (and the read after the restore), and the differential pass's isolated writes and reads alike. What
lives here: which scenarios a client can run (a `skip` says why not), the plans the client processes get,
how an outcome becomes a check (a call the server answered wrongly or a client that raised: fail; no
answer: error), and feeding the acked-writes ledger (harness/ledger.py). What does not: the timeline and
the servers (harness/cell.py), the client processes themselves (harness/clients.py), comparing a record
(harness/verify.py, harness/fields.py) or two servers' answers (harness/differential.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from harness import fields
from harness.clients import StepOutcome, call_failure, run_driver
from harness.differential import Outcome
from harness.envs import Env
from harness.ledger import Ledger
from harness.results import CellResult, Check, Problem, Status
from harness.rundir import CellDir
from harness.runtime import RunningServer
from harness.scenarios import Scenario
from harness.verify import Written, diff
from harness.versions import MlflowVersion


@dataclass
class ClientRun:
    """One client process: one step (write or read) of one client against one server, for several scenarios
    or records. ``name`` is the checks' name (write, read, restore-read); ``stem`` names its logs."""

    name: str
    phase: str
    client: Env
    server: RunningServer
    stem: str
    outcome: StepOutcome

    def check(self, scenario: Scenario) -> Check:
        """The check of one scenario of this step (not yet recorded in the cell)."""
        logs = [f"logs/{self.stem}.log", f"logs/{self.stem}.json"]
        return Check(self.name, self.phase, Status.PASS, client=self.client.spec_label,
                     server=self.server.version, scenario=scenario.name, logs=logs)  # fmt: skip

    def result(self, check: Check, key: str, written: Written | None = None) -> dict[str, Any] | None:
        """One scenario's (or record's) outcome from the client process, or None with the problem added to
        ``check``: a process that never reported (timed out, crashed) or a call that got no answer is an
        error; a call the server answered with an error, or a client that raised, is MLflow's failure."""
        outcome = self.outcome
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


@dataclass
class ClientSteps:
    """The client steps of one cell: their checks go into ``result``, acknowledged writes and what reads made
    of them into ``ledger``, the time their processes take into ``timings["client"]``."""

    result: CellResult
    ledger: Ledger
    scenarios: list[Scenario]
    backend: str
    dir: CellDir
    timings: MutableMapping[str, float]
    launch: str = "fork"  # how client processes start (harness/clients.py: fork or spawn)
    # What every client process of a version gets from the cell's features (credentials, endpoints).
    client_env: Callable[[MlflowVersion], dict[str, str]] = lambda version: {}

    # -- the cell's steps ---------------------------------------------------------------------------
    def write(self, phase: str, client: Env, server: RunningServer) -> None:
        """One client process runs every scenario this client has; each scenario is a check of its own."""
        writer = f"client {client.spec_label} -> server {server.version} ({phase})"
        runnable = self.runnable("write", phase, client, server, self.scenarios)
        if not runnable:
            return
        tags = {"compat.writer": writer, "compat.phase": phase}
        run = self.write_process("write", phase, client, server, runnable, tags)
        for scenario in runnable:
            check = self.result.add(run.check(scenario))
            got = run.result(check, scenario.name)
            if got is None:
                continue
            check.seconds = got["seconds"]
            record = got["record"]
            key = f"{phase}/{client.spec_label}/{scenario.name}"
            window = tuple(got["window"]) if got.get("window") else None
            written = Written(key, scenario.name, writer, phase, record, client=client.spec_label,
                              server=server.version, window=window)  # fmt: skip
            self.ledger.acknowledged(written)
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
        readable = self.runnable(
            name, phase, client, server, [s for s in self.scenarios if s.name in present]
        )
        if not readable:
            return
        names = {s.name for s in readable}
        records = [w for w in written if w.scenario in names]
        run = self.read_process(name, phase, client, server, readable, records)
        server_version = MlflowVersion.parse(server.version)
        for scenario in readable:
            check = self.result.add(run.check(scenario))
            self.judge_read(run, check, [w for w in records if w.scenario == scenario.name], server_version)

    def isolated(self, phase: str, client: Env, server: RunningServer) -> dict[str, Outcome]:
        """The differential pass's client part: ``client`` writes every scenario it can, then reads back its
        own records. {scenario: what the read returned, or the problem that kept it from returning}. Nothing
        is recorded as a check here: failures are compared with the other side's, not judged on their own."""
        answers: dict[str, Outcome] = {}
        runnable = self.runnable("write", phase, client, server, self.scenarios, record=False)
        if not runnable:
            return answers
        tags = {"compat.writer": "differential", "compat.phase": "differential"}
        # The same token on both servers: the names a scenario makes from it are then the same too.
        tokens = {s.name: hashlib.sha256(f"{client.spec_label}/{s.name}".encode()).hexdigest()[:10]
                  for s in runnable}  # fmt: skip
        wrote = self.write_process("write", phase, client, server, runnable, tags, tokens)
        records = []
        for scenario in runnable:
            scratch = Check("write", phase, Status.PASS)
            got = wrote.result(scratch, scenario.name)
            if got is None:
                answers[scenario.name] = scratch.problems[-1]
            else:
                records.append(Written(scenario.name, scenario.name, "differential", phase, got["record"]))
        if not records:
            return answers
        read = self.read_process("read", phase, client, server, runnable, records)
        for w in records:
            scratch = Check("read", phase, Status.PASS)
            got = read.result(scratch, w.key)
            answers[w.key] = scratch.problems[-1] if got is None else got["observed"]
        return answers

    # -- what a client can run, and its processes -------------------------------------------------------
    def runnable(
        self,
        name: str,
        phase: str,
        client: Env,
        server: RunningServer,
        scenarios: Iterable[Scenario],
        *,
        record: bool = True,
    ) -> list[Scenario]:
        """The scenarios ``client`` can run against ``server``; each other one is a `skip` saying why (the
        client lacks an API the scenario uses, or the store a feature), when ``record``."""
        server_version = MlflowVersion.parse(server.version)
        out = []
        for scenario in scenarios:
            why = scenario.lacks(client.version, server_version, self.backend)
            if why is None:
                out.append(scenario)
            elif record:
                self.result.add(Check(name, phase, Status.SKIP, why, client=client.spec_label,
                                      server=server.version, scenario=scenario.name))  # fmt: skip
        return out

    def write_process(
        self,
        name: str,
        phase: str,
        client: Env,
        server: RunningServer,
        scenarios: list[Scenario],
        tags: dict[str, str],
        tokens: dict[str, str] | None = None,
    ) -> ClientRun:
        """A client process that runs each scenario's write; ``tokens`` fixes what names it makes."""
        planned = [{**s.to_plan(), "token": tokens[s.name]} if tokens else s.to_plan() for s in scenarios]
        return self.process(name, "write", phase, client, server, {"scenarios": planned, "tags": tags})

    def read_process(
        self,
        name: str,
        phase: str,
        client: Env,
        server: RunningServer,
        scenarios: list[Scenario],
        records: list[Written],
    ) -> ClientRun:
        """A client process that reads each record back with its scenario's reader."""
        by_name = {s.name: s for s in scenarios}
        plan = {"records": [{"key": w.key, "scenario": by_name[w.scenario].to_plan(), "record": w.record}
                            for w in records]}  # fmt: skip
        return self.process(name, "read", phase, client, server, plan)

    def process(
        self, name: str, step: str, phase: str, client: Env, server: RunningServer, plan: dict[str, Any]
    ) -> ClientRun:
        """The one client-step helper: a client process runs ``step`` for everything in ``plan``; its logs are
        named after the phase, the check and the client; its time counts as the cell's client time."""
        stem = f"{phase}-{name}-{client.spec_label}"
        started = time.monotonic()
        outcome = run_driver(client, step, plan, tracking_uri=server.url, out=self.dir.logs / f"{stem}.json",
                             log=self.dir.logs / f"{stem}.log", workdir=self.dir.scratch,
                             launch=self.launch, extra_env=self.client_env(client.version))  # fmt: skip
        self.timings["client"] += time.monotonic() - started
        return ClientRun(name, phase, client, server, stem, outcome)

    # -- judging a read -----------------------------------------------------------------------------------
    def judge_read(
        self, run: ClientRun, check: Check, mine: list[Written], server_version: MlflowVersion
    ) -> None:
        """One scenario's records as one client read them back: each difference a problem naming its record
        and writer; the ledger learns which records were confirmed and which checks tried and did not."""
        phase, client = run.phase, run.client
        check.writers = [dict(t) for t in dict.fromkeys(tuple(w.written_by.items()) for w in mine)]
        read: set[str | None] = set()  # records the client returned (with or without differences)
        absent: set[str] = set()  # fields not compared, by rule (harness/data/fields.toml)
        for w in mine:
            tried = self.ledger.reading(w.key, phase)
            got = run.result(check, w.key, w)
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
                backend=self.backend,
            )
            absent.update(note.split(" not compared", 1)[0] for note in notes)
            differences = diff(expected, observed)
            if differences:
                tried.append(check)
            else:
                self.ledger.confirm(w.key, phase)
            check.problems += [Problem(f"{w.writer}: {d}", Status.FAIL, w.key, w.written_by)
                               for d in differences]  # fmt: skip
        check.settle()
        by_rule = f"; not compared, by rule: {', '.join(sorted(absent))}" if absent else ""
        if not check.problems:
            check.detail = f"{len(mine)} records read back exactly as written{by_rule}"
            return
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
        # Every problem, then the traceback or log tail of a failed read (kept by ClientRun.result).
        listed = "\n".join(p.text for p in check.problems)
        check.excerpt = f"{listed}\n\n{check.excerpt}" if check.excerpt else listed
