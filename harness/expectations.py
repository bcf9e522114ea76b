"""Known incompatibilities, declared as data (harness/data/expectations.toml), applied to a cell's checks.

Upstream does not promise that every new client works against every old server. A declaration names a
check (its name, and optionally phase, scenario and backend), the client and server version ranges it
covers, the error that is expected (a substring, or a regular expression as ``re:PATTERN``), and why, with
an upstream link. Applied to a finished cell:

  failed as declared, with the declared error   -> xfail
  failed with a different error                 -> fail (named: the declaration did not cover this)
  passed although declared to fail              -> xpass (the declaration is stale)

Infrastructure errors and skips are never touched.
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

from harness.results import CellResult, Check, Status


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
    backends: tuple[str, ...] = field(default_factory=tuple)  # empty = every backend

    def covers(self, check: Check, result: CellResult) -> bool:
        """Whether this declaration is about ``check`` of ``result`` (regardless of how it ended)."""
        if check.name != self.check or (self.phase and check.phase != self.phase):
            return False
        if self.backends and result.backend not in self.backends:
            return False
        if not _within(result.from_, self.from_):
            return False
        if self.scenario and check.scenario != self.scenario:
            return False
        return _within(check.client, self.client) and _within(check.server, self.server)

    def matches_error(self, text: str) -> bool:
        if self.error.startswith("re:"):
            return re.search(self.error[3:], text) is not None
        return self.error in text


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


def parse(data: dict[str, Any], source: str) -> list[Expectation]:
    out = []
    for i, item in enumerate(data.get("expect", []), start=1):
        missing = [k for k in REQUIRED if not item.get(k)]
        if missing:
            raise ExpectationError(f"{source}: declaration {i} lacks {', '.join(missing)}")
        unknown = set(item) - {*REQUIRED, "link", "phase", "scenario", "client", "server", "from", "backends"}
        if unknown:
            raise ExpectationError(f"{source}: declaration {item['id']!r} has unknown keys {sorted(unknown)}")
        for key in ("client", "server", "from"):
            try:
                SpecifierSet(item.get(key, ""))
            except ValueError:
                raise ExpectationError(
                    f"{source}: {item['id']}: {key} {item[key]!r} is no version range"
                ) from None
        if item["error"].startswith("re:"):
            try:
                re.compile(item["error"][3:])
            except re.error as exc:
                raise ExpectationError(f"{source}: {item['id']}: bad pattern: {exc}") from None
        fields = {k: v for k, v in item.items() if k not in ("from", "backends")}
        out.append(
            Expectation(**fields, from_=item.get("from", ""), backends=tuple(item.get("backends", ())))
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


def apply(result: CellResult, expectations: tuple[Expectation, ...]) -> None:
    """Turn declared failures into xfail, stale declarations into xpass; then settle the cell's status."""
    for check in result.checks:
        covering = [e for e in expectations if e.covers(check, result)]
        if not covering or check.status in (Status.ERROR, Status.SKIP):
            continue
        names = ", ".join(e.id for e in covering)
        if check.status is Status.PASS:
            check.status = Status.XPASS
            check.detail = f"declared to fail ({names}) but passed: the declaration is stale; {check.detail}"
            continue
        text = f"{check.detail}\n{check.excerpt or ''}"
        matched = next((e for e in covering if e.matches_error(text)), None)
        if matched is not None:
            check.status = Status.XFAIL
            check.expected = matched.id
            check.detail = f"expected ({matched.id}: {matched.reason}): {check.detail}"
        else:
            wanted = "; ".join(repr(e.error) for e in covering)
            check.detail = f"declared ({names}) with a different error ({wanted}): {check.detail}"
    result.finish()
