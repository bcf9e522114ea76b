"""The result model: checks, cells and runs, and how statuses roll up into verdicts and exit codes.

A check is one step of a cell (a client's write of one scenario, a read of every record of a scenario, a
server start, an upgrade, ...). What went wrong inside it is kept item by item as problems: each record
read back with a difference, each call the server answered wrongly, each call that got no answer. A check
takes the worst of its problems (fail > error > xpass > xfail), so one record's error never hides another
record's failure, and a declaration (harness/expectations.py) covers exactly the problems it names.
Nothing here runs anything or renders anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"  # MLflow misbehaved: an incompatibility
    ERROR = "error"  # the harness or the machine failed: infrastructure, never blamed on MLflow
    SKIP = "skip"  # not applicable, with a reason
    XFAIL = "xfail"  # failed as declared in the expectations, with the declared error
    XPASS = "xpass"  # declared to fail but passed: the declaration is stale


def worst(statuses: list[Status]) -> Status:
    """A cell's status from its checks': an unexpected failure outranks an infrastructure error, which
    outranks a stale declaration (xpass), then a declared failure (xfail); skipped checks do not count
    unless nothing else ran."""
    for status in (Status.FAIL, Status.ERROR, Status.XPASS, Status.XFAIL):
        if status in statuses:
            return status
    if statuses and all(s is Status.SKIP for s in statuses):
        return Status.SKIP
    return Status.PASS


class ExitCode:
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    INFRA_ONLY = 3


@dataclass
class Problem:
    """One thing wrong inside a check: a difference in one record (``record`` names it, ``written_by`` the
    client, server and phase that wrote it), a call the server answered wrongly (``fail``), or one that got
    no answer (``error``). ``expected`` is the declaration that covers it once expectations are applied."""

    text: str
    status: Status
    record: str | None = None
    written_by: dict[str, str] | None = None  # {"client": V, "server": V, "phase": P}
    expected: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        return cls(**{**data, "status": Status(data["status"])})


@dataclass
class Check:
    """One named step of a cell, e.g. `write` by client 2.22.5 against server 1.30.1 in phase `before`."""

    name: str
    phase: str
    status: Status
    detail: str = ""
    client: str | None = None
    server: str | None = None
    scenario: str | None = None  # the scenario of a client step (write, read)
    seconds: float = 0.0
    logs: list[str] = field(default_factory=list)  # paths relative to the cell's directory
    excerpt: str | None = None  # the part of a log or traceback that explains a failure
    expected: str | None = None  # the id(s) of the declared incompatibilities this check failed as (xfail)
    # Each thing wrong inside the check, item by item: what expectations match, one by one.
    problems: list[Problem] = field(default_factory=list)
    writers: list[dict[str, str]] = field(default_factory=list)  # a read's records were written by these

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        problems = [Problem.from_json(p) for p in data.get("problems", ())]
        return cls(**{**data, "status": Status(data["status"]), "problems": problems})

    def who(self) -> str:
        """Whose step this is, the parts present: "SCENARIO client C server S" (e.g. "quickstart client 2.22.5
        server 3.17.2"; "server 3.17.2" for a server start; "" for a cell-wide check). The one formatter of a
        check's who, for reports and messages."""
        parts = (
            self.scenario,
            self.client and f"client {self.client}",
            self.server and f"server {self.server}",
        )
        return " ".join(p for p in parts if p)

    def label(self) -> str:
        """How every report and message names a check: "PHASE/NAME" and its who ("after/read quickstart
        client 2.22.5 server 3.17.2")."""
        return " ".join(p for p in (f"{self.phase}/{self.name}", self.who()) if p)

    def fail_each(self, texts: list[str]) -> None:
        """Fail with one problem per text (each declared, or not, on its own), all in the excerpt."""
        if not texts:
            return
        self.problems += [Problem(text, Status.FAIL) for text in texts]
        self.excerpt = "\n".join(p.text for p in self.problems)
        self.settle()

    def settle(self) -> None:
        """The check's status from its problems: the worst of them (fail > error > xpass > xfail)."""
        if self.problems:
            self.status = worst([p.status for p in self.problems])


@dataclass
class CellResult:
    id: str
    backend: str
    runtime: str
    path: list[str]
    clients: list[str]
    status: Status = Status.PASS
    checks: list[Check] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase kind (env, server-start, ...)
    started: str = ""
    ended: str = ""
    seconds: float = 0.0
    dir: str = ""  # the cell's directory, relative to the run directory
    summary: str = ""  # one line: why the cell is not `pass`
    auth: bool = False  # its servers ran the basic-auth app
    artifact_store: str = "local"  # where its servers kept artifacts (harness.plan.ARTIFACT_STORES)
    scale: str = ""  # the seeded size ("1m"), when the FROM store was seeded before the upgrade
    rolling: bool = False  # the FROM server served a workload through the first upgrade
    seed: int | None = None  # the random plan's seed, when the cell was drawn from one

    @property
    def features(self) -> frozenset[str]:
        """The features its servers ran with, as scenarios and declarations name them."""
        return features_of(self.auth, self.artifact_store)

    @property
    def column(self) -> str:
        """Its column in the report's grid: the backend, and the features its servers ran with."""
        features = [f"{self.artifact_store} artifacts"] if self.artifact_store != "local" else []
        features += ["auth"] if self.auth else []
        features += [f"scale {self.scale}"] if self.scale else []
        features += ["rolling"] if self.rolling else []
        features += ["random plans"] if self.seed is not None else []
        return " + ".join([self.backend, *features])

    @property
    def row(self) -> str:
        """Its row in the report's grid: the upgrade path (with the clients when not the default)."""
        row = self.id.split(":", 1)[1]
        suffixes = [f"[artifacts={self.artifact_store}]", "[auth]", f"[scale={self.scale}]", "[rolling]"]
        for suffix in suffixes:
            row = row.replace(suffix, "")
        return row

    @property
    def from_(self) -> str:
        return self.path[0]

    @property
    def to(self) -> str:
        return self.path[-1]

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def finish(self) -> None:
        self.status = worst([c.status for c in self.checks]) if self.checks else Status.ERROR
        bad = [
            c
            for c in self.checks
            if c.status == self.status and self.status in (Status.FAIL, Status.ERROR, Status.XPASS)
        ]
        if self.status is Status.XFAIL:
            declared = sorted({c.expected for c in self.checks if c.status is Status.XFAIL and c.expected})
            n = sum(c.status is Status.XFAIL for c in self.checks)
            self.summary = f"{n} check(s) failed as declared: {', '.join(declared)}"
        if bad:
            first = bad[0]
            where = " ".join(x for x in (first.phase, first.name, _who(first)) if x)
            self.summary = f"{where}: {first.detail}".strip()
            if len(bad) > 1:
                self.summary += f" (+{len(bad) - 1} more)"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"], data["to"] = self.from_, self.to
        data["checks"] = [c.to_json() for c in self.checks]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        data = {k: v for k, v in data.items() if k not in ("from", "to")}
        data["status"] = Status(data["status"])
        data["checks"] = [Check.from_json(c) for c in data["checks"]]
        return cls(**data)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, path: Path) -> CellResult:
        return cls.from_json(json.loads(path.read_text()))


FEATURES = ("auth", "s3")  # a cell's features, as scenarios (NEEDS) and declarations (features) name them


def features_of(auth: bool, artifact_store: str) -> frozenset[str]:
    """A cell's features ("auth": its servers run the basic-auth app; "s3": they keep artifacts in S3)."""
    return frozenset({"auth"} if auth else set()) | ({"s3"} if artifact_store == "s3" else set())


def _who(check: Check) -> str:
    parts = []
    if check.client:
        parts.append(f"client {check.client}")
    if check.server:
        parts.append(f"server {check.server}")
    return "(" + " -> ".join(parts) + ")" if parts else ""


@dataclass
class RunResult:
    run_id: str
    started: str
    ended: str
    harness_version: str
    options: dict[str, Any]
    cells: list[CellResult]
    interrupted: bool = False
    not_run: list[str] = field(default_factory=list)  # planned cells with no result (crash, Ctrl-C)
    allow_xpass: bool = False  # a stale declaration does not fail the run

    def exit_code(self) -> int:
        statuses = [c.status for c in self.cells]
        if Status.FAIL in statuses or (Status.XPASS in statuses and not self.allow_xpass):
            return ExitCode.FAILED
        if Status.ERROR in statuses or self.not_run or self.interrupted:
            return ExitCode.INFRA_ONLY
        return ExitCode.OK

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for cell in self.cells:
            out[cell.status.value] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started": self.started,
            "ended": self.ended,
            "harness_version": self.harness_version,
            "options": self.options,
            "interrupted": self.interrupted,
            "allow_xpass": self.allow_xpass,
            "counts": self.counts(),
            "exit_code": self.exit_code(),
            "not_run": self.not_run,
            "cells": [c.to_json() for c in self.cells],
        }
