"""Known incompatibilities, declared as data (harness/data/expectations.toml), applied to a cell's checks.

Upstream does not promise that every new client works against every old server. A declaration names a
check (its name, and optionally phase, scenario, backend and the cell features it needs: `features = ["auth"]`
covers only cells whose servers run the auth app), the client and server version ranges it
covers, the error that is expected (a substring, or a regular expression as ``re:PATTERN``), and why, with
an upstream link; optionally ``written_by`` (client and server ranges and the phase of the records' writer:
"records written by 1.x before the upgrade") and ``intermittent = true`` (a failure that depends on timing, a
race: a run where it did not happen passes and is not called stale; say in the reason how often it was seen).
``[[change]]`` declares an intended behaviour change the same
way: the candidate's server answering otherwise than its baseline's in the gate's differential pass.
Applied to a finished cell, problem by problem (each record's difference, each failed call, each lost row
is a problem of its check, harness/results.py):

  every failing problem covered, with its declared error   -> xfail
  any failing problem not covered                          -> fail (naming what no declaration covers)
  passed although declared to fail                         -> xpass (the declaration is stale)

A declaration covers exactly what it names: one matching difference never turns the others in the same check
into xfail. Infrastructure errors and skips are never touched (a check keeps `error` when a problem of it got
no answer, even when its failures were all declared).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.results import FEATURES, CellResult, Check, Problem, Status


class ExpectationError(ValueError):
    """A declaration file that cannot be used (bad input)."""


@dataclass(frozen=True)
class Expectation:
    id: str
    check: str
    error: str
    reason: str
    link: str = ""
    phase: str | None = None
    scenario: str | None = None
    client: str = ""  # PEP 440 specifier on the client version; "" = any
    server: str = ""
    from_: str = ""  # on the version that created the cell's store (the path's first)
    # On the SQLAlchemy that version's env ran on (a store's schema can depend on it: how an env is resolved,
    # --resolution, decides it); "" = any.
    from_sqlalchemy: str = ""
    backends: tuple[str, ...] = field(default_factory=tuple)  # empty = every backend
    features: tuple[str, ...] = field(
        default_factory=tuple
    )  # cells with all of these ("auth", "s3"); empty = any
    # Only records written by these (keys client, server: version ranges; phase: a phase name); empty = any.
    written_by: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    intermittent: bool = False  # a race: a run where it did not happen passes (never xpass)

    def covers(self, check: Check, result: CellResult) -> bool:
        """Whether this declaration is about ``check`` of ``result`` (regardless of how it ended)."""
        if check.name != self.check or (self.phase and not in_phase(check.phase, self.phase)):
            return False
        if self.backends and result.backend not in self.backends:
            return False
        if not set(self.features) <= result.features:
            return False
        if not _within(result.from_, self.from_):
            return False
        if self.from_sqlalchemy and not _within(creator_sqlalchemy(result), self.from_sqlalchemy):
            return False
        if self.scenario and check.scenario != self.scenario:
            return False
        return _within(check.client, self.client) and _within(check.server, self.server)

    def matches_error(self, text: str) -> bool:
        if self.error.startswith("re:"):
            return re.search(self.error[3:], text) is not None
        return self.error in text

    def matches_writer(self, written_by: dict[str, str] | None) -> bool:
        """Whether a record written by ``written_by`` is one this declaration names (any record, when it
        says nothing of its writer)."""
        if not self.written_by:
            return True
        if written_by is None:  # not a record read back (a call, a row): a written_by declaration is silent
            return False
        wanted = dict(self.written_by)
        if "phase" in wanted and not in_phase(written_by.get("phase", ""), wanted["phase"]):
            return False
        return _within(written_by.get("client"), wanted.get("client", "")) and _within(
            written_by.get("server"), wanted.get("server", "")
        )

    def covers_problem(self, problem: Problem) -> bool:
        return self.matches_error(problem.text) and self.matches_writer(problem.written_by)

    def applies_to(self, check: Check) -> bool:
        """Whether a passing ``check`` is one this declaration says should fail (for xpass)."""
        if self.intermittent:
            return False
        return not self.written_by or any(self.matches_writer(w) for w in check.writers)


def creator_sqlalchemy(result: CellResult) -> str | None:
    """The SQLAlchemy of the env that created the cell's store (the path's first version; None: unknown)."""
    envs = result.components.get("envs", {})
    return (envs.get(result.from_) or {}).get("sqlalchemy") if isinstance(envs, dict) else None


def in_phase(actual: str, declared: str) -> bool:
    """A declared phase names its family: "after" is also each hop's "after-1", "after-2", ..."""
    return actual == declared or actual.startswith(f"{declared}-")


def _within(version: str | None, spec: str) -> bool:
    if not spec:
        return True
    if version is None:
        return False
    try:
        return SpecifierSet(spec).contains(Version(version.split("@")[0]), prereleases=True)
    except InvalidVersion:
        return False


REQUIRED = ("id", "check", "error", "reason")
OPTIONAL = (
    "link",
    "phase",
    "scenario",
    "client",
    "server",
    "from",
    "from_sqlalchemy",
    "backends",
    "features",
    "written_by",
    "intermittent",
)


CHANGE_CHECK = "differential"  # what a [[change]] declares: the candidate answers otherwise than its baseline


def parse(data: dict[str, Any], source: str) -> list[Expectation]:
    """``[[expect]]`` declarations, and ``[[change]]`` ones: an intended behaviour change, where the
    candidate's server answers otherwise than its baseline's in the gate's differential pass (the same keys,
    without ``check``)."""
    unknown_tables = set(data) - {"expect", "change"}
    if unknown_tables:
        raise ExpectationError(f"{source}: unknown tables {sorted(unknown_tables)} (expect, change)")
    changes = []
    for item in data.get("change", []):
        if "check" in item:
            raise ExpectationError(f"{source}: change {item.get('id')!r}: a change is always about the "
                                   f"differential check; drop its check key")  # fmt: skip
        changes.append({**item, "check": CHANGE_CHECK})
    out = []
    for i, item in enumerate([*data.get("expect", []), *changes], start=1):
        missing = [k for k in REQUIRED if not item.get(k)]
        if missing:
            raise ExpectationError(f"{source}: declaration {i} lacks {', '.join(missing)}")
        unknown = set(item) - {*REQUIRED, *OPTIONAL}
        if unknown:
            raise ExpectationError(f"{source}: declaration {item['id']!r} has unknown keys {sorted(unknown)}")
        written_by = item.get("written_by", {})
        if not isinstance(written_by, dict) or set(written_by) - {"client", "server", "phase"}:
            raise ExpectationError(
                f"{source}: {item['id']}: written_by takes a table of client, server and phase"
            )
        ranges = [(key, item.get(key, "")) for key in ("client", "server", "from", "from_sqlalchemy")]
        ranges += [(f"written_by.{key}", written_by.get(key, "")) for key in ("client", "server")]
        for key, spec in ranges:
            try:
                SpecifierSet(spec)
            except ValueError:
                why = f"{source}: {item['id']}: {key} {spec!r} is no version range"
                raise ExpectationError(why) from None
        if item["error"].startswith("re:"):
            try:
                re.compile(item["error"][3:])
            except re.error as exc:
                raise ExpectationError(f"{source}: {item['id']}: bad pattern: {exc}") from None
        if not isinstance(item.get("intermittent", False), bool):
            raise ExpectationError(f"{source}: {item['id']}: intermittent is true or false")
        if set(item.get("features", ())) - set(FEATURES):
            raise ExpectationError(f"{source}: {item['id']}: features may name {', '.join(FEATURES)}")
        fields = {k: v for k, v in item.items() if k not in ("from", "backends", "features", "written_by")}
        out.append(
            Expectation(
                **fields,
                from_=item.get("from", ""),
                backends=tuple(item.get("backends", ())),
                features=tuple(item.get("features", ())),
                written_by=tuple(sorted(written_by.items())),
            )
        )
    ids = [e.id for e in out]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise ExpectationError(f"{source}: duplicate ids {dupes}")
    return out


@functools.cache
def default() -> tuple[Expectation, ...]:
    text = resources.files("harness").joinpath("data/expectations.toml").read_text()
    return tuple(parse(tomllib.loads(text), "harness/data/expectations.toml"))


def load(path: Path | None) -> tuple[Expectation, ...]:
    """The declarations in ``path`` (None: the shipped file)."""
    if path is None:
        return default()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ExpectationError(f"{path}: {exc}") from None
    return tuple(parse(data, str(path)))


def load_all(extras: tuple[Path | str, ...] = ()) -> tuple[Expectation, ...]:
    """The shipped declarations, then each file of ``extras`` in order merged over them: an entry whose id
    was declared before replaces that entry (in its place), a new id is added at the end. A team overrides
    a shipped declaration by declaring its id again."""
    merged = {e.id: e for e in default()}
    for extra in extras:
        for e in load(Path(extra)):
            merged[e.id] = e
    return tuple(merged.values())


def apply(result: CellResult, expectations: tuple[Expectation, ...]) -> None:
    """Turn declared failures into xfail problem by problem, stale declarations into xpass; then settle the
    cell's status."""
    for check in result.checks:
        covering = [e for e in expectations if e.covers(check, result)]
        if covering:
            _apply(check, covering)
    result.finish()


def _apply(check: Check, covering: list[Expectation]) -> None:
    names = ", ".join(e.id for e in covering)
    if check.status is Status.PASS:
        stale = [e.id for e in covering if e.applies_to(check)]
        if stale:
            check.status = Status.XPASS
            check.detail = (
                f"declared to fail ({', '.join(stale)}) but passed: the declaration is stale; {check.detail}"
            )
        return
    if check.status is not Status.FAIL:  # error, skip: never declared away
        return
    # A check without problems of its own (a refused upgrade, a crashed server) is one problem: its text.
    whole = Problem(f"{check.detail}\n{check.excerpt or ''}", Status.FAIL)
    problems = [p for p in check.problems or [whole] if p.status is Status.FAIL]
    for problem in problems:
        matched = next((e for e in covering if e.covers_problem(problem)), None)
        if matched is not None:
            problem.status, problem.expected = Status.XFAIL, matched.id
    if check.problems:
        check.settle()
    elif whole.status is Status.XFAIL:
        check.status = Status.XFAIL
    declared = {e.id: e for e in covering if any(p.expected == e.id for p in problems)}
    uncovered = [p for p in problems if p.status is Status.FAIL]
    if not uncovered:
        check.expected = ", ".join(declared)
        reasons = "; ".join(f"{e.id}: {e.reason}" for e in declared.values())
        check.detail = f"expected ({reasons}): {check.detail}"
    elif declared:
        check.detail = (
            f"{len(uncovered)} of {len(problems)} problem(s) not covered by the declarations "
            f"({', '.join(declared)}): {uncovered[0].text}; {check.detail}"
        )
    else:
        wanted = "; ".join(repr(e.error) for e in covering)
        check.detail = f"declared ({names}) with a different error ({wanted}): {check.detail}"
