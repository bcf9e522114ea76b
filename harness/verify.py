"""Comparing what a client read with what was written. Pure functions: every difference is named by its
place in the record (``run.params.learning_rate``, ``files['tree/large.bin']``, ``versions['2'].stage``).

A scenario's record is plain JSON (dicts, lists, strings, numbers); its reader returns the same shape, so
one comparison serves every scenario: values, metric histories, artifact bytes, registry versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SHOWN = 60  # characters of a value shown in a difference


@dataclass(frozen=True)
class Written:
    """A write a client saw acknowledged: what one scenario put into the store, as its record."""

    key: str  # unique in the cell: phase/client/scenario
    scenario: str
    writer: str  # e.g. "client 2.22.5 -> server 1.30.1 (before)"
    phase: str
    record: dict[str, Any]
    client: str = ""  # the writing client's version
    server: str = ""  # the server that acknowledged the write
    window: tuple[int, int] | None = field(default=None, compare=False)  # wall clock of the write, epoch ms

    @property
    def written_by(self) -> dict[str, str]:
        return {"client": self.client, "server": self.server, "phase": self.phase}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text)} chars)"


def _at(path: str, key: Any) -> str:
    key = str(key)
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _is_file(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"size", "sha256"}


def diff(expected: Any, observed: Any, path: str = "") -> list[str]:
    """Every difference between ``expected`` and ``observed``; empty when they agree exactly."""
    where = path.lstrip(".") or "(record)"
    if _is_file(expected) and _is_file(observed):
        if expected["sha256"] == observed["sha256"]:
            return []
        return [
            f"{where}: bytes differ ({observed['size']} bytes, sha256 {observed['sha256'][:12]}…, expected "
            f"{expected['size']} bytes, sha256 {expected['sha256'][:12]}…)"
        ]
    if isinstance(expected, dict) and isinstance(observed, dict):
        out = []
        for key, value in expected.items():
            if key not in observed:
                out.append(f"{_at(path, key).lstrip('.')}: missing (expected {_show(value)})")
            else:
                out += diff(value, observed[key], _at(path, key))
        out += [
            f"{_at(path, k).lstrip('.')}: unexpected ({_show(observed[k])})"
            for k in observed.keys() - expected.keys()
        ]
        return out
    if isinstance(expected, list) and isinstance(observed, list):
        out = []
        if len(expected) != len(observed):
            out.append(f"{where}: {len(observed)} items, expected {len(expected)}")
        for i, (e, o) in enumerate(zip(expected, observed, strict=False)):
            out += diff(e, o, f"{path}[{i}]")
        return out
    if (
        isinstance(expected, str)
        and isinstance(observed, str)
        and expected != observed
        and len(expected) > SHOWN
    ):
        at = next((i for i, (a, b) in enumerate(zip(expected, observed, strict=False)) if a != b), None)
        at = min(len(expected), len(observed)) if at is None else at
        return [f"{where}: {len(observed)} characters, expected {len(expected)}; first difference at {at}"]
    if expected != observed or isinstance(expected, bool) != isinstance(observed, bool):  # 1 == True
        return [f"{where}: {_show(observed)}, expected {_show(expected)}"]
    return []
