"""Fields absent by rule: which parts of an entity snapshot a version does not expose, loaded from one table.

The scenario snapshots (scenarios/common.py) return everything a user can read about a run, an experiment,
a registered model, a model version or a logged model, each marked with ``"_kind"``. Some fields exist only
from some client or server version on (a 1.x client has no ``run.inputs``; a 1.x server keeps no experiment
creation time), and those are not differences a user would call a break. Which ones are is data, in
``harness/data/fields.toml``: each rule names one field path of one entity kind, the versions (writer or
reader, client or server) and backends it holds for, and a reason. ``normalise`` removes exactly those
fields from both the expected record and the observed one, and says so in a note per rule; nothing else is
ever dropped. The table is checked on load: an unknown field path, key, backend or version range is an error.

Pure: no MLflow, no I/O beyond reading the table. Comparing the normalised records is harness/verify.py's
job, and declaring real incompatibilities is harness/data/expectations.toml's.
"""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from harness.versions import MlflowVersion


def _backend_names() -> tuple[str, ...]:
    """The backends there are: one module each in harness/backends, named after it (read from the directory,
    not imported: the backends sit a floor above this module; harness.backends discovers the same files)."""
    found = Path(__file__).with_name("backends").glob("[!_]*.py")
    return tuple(sorted(p.stem for p in found))


BACKENDS = _backend_names()
ROLES = ("writer_client", "writer_server", "reader_client", "reader_server")
KIND = "_kind"

# The shape of each entity kind's snapshot: a dict of fields; MAP = any key (tags, params, ...), LIST = each
# element of a list, None = a leaf. A rule's field path must name a node of this tree.
MAP = "*"
LIST = "[]"


def _leaves(*names: str) -> dict[str, Any]:
    return dict.fromkeys(names)


_DATASET = _leaves("name", "digest", "source_type", "source", "schema", "profile")
_VERSION = _leaves(
    "name", "version", "creation_timestamp", "last_updated_timestamp", "description", "user_id",
    "current_stage", "source", "run_id", "run_link", "status", "status_message", "aliases", "model_id",
) | {"tags": {MAP: None}}  # fmt: skip
SCHEMA: dict[str, dict[str, Any]] = {
    "run": {
        "info": _leaves(
            "run_id",
            "run_name",
            "experiment_id",
            "user_id",
            "status",
            "start_time",
            "end_time",
            "artifact_uri",
            "lifecycle_stage",
        ),
        "tags": {MAP: None},
        "params": {MAP: None},
        "metrics": {MAP: None},
        "metric_history": {MAP: None},
        "inputs": {"datasets": {LIST: {"dataset": _DATASET, "tags": {MAP: None}}}, "models": None},
        "outputs": {"models": None},
        "artifacts": {MAP: None},
        "artifact_listing": {MAP: None},
    },
    "experiment": _leaves(
        "experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time"
    )
    | {"tags": {MAP: None}},
    "model_version": _VERSION,
    "registered_model": _leaves("name", "creation_timestamp", "last_updated_timestamp", "description")
    | {"tags": {MAP: None}, "aliases": {MAP: None}, "latest_versions": None},
    "logged_model": _leaves(
        "model_id",
        "name",
        "experiment_id",
        "source_run_id",
        "model_type",
        "artifact_location",
        "status_message",
        "creation_timestamp",
        "last_updated_timestamp",
        "model_uri",
        "status",
        "metrics",
    )
    | {"params": {MAP: None}, "tags": {MAP: None}},
    # scenarios/models.py: one model as each URI route gives it (runs, version, alias, logged)
    "model_load": _leaves("name", "version") | {"uris": {MAP: None}, "routes": {MAP: None}},
}

_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]*)\]")


class FieldsTableError(ValueError):
    """The table is wrong: an unknown field, key, backend or version range, or a rule without a reason."""


def parse_path(text: str) -> tuple[str, tuple[str, ...]]:
    """``run.tags[mlflow.user]`` -> ("run", ("tags", "mlflow.user")); ``[]`` stands for each list element."""
    kind, _, rest = text.partition(".")
    if kind not in SCHEMA or not rest:
        raise FieldsTableError(
            f"unknown field {text!r}: it must start with one of {sorted(SCHEMA)} and a field"
        )
    rest = "." + rest
    parts: list[str] = []
    pos = 0
    while pos < len(rest):
        match = _SEGMENT.match(rest, pos)
        if not match:
            raise FieldsTableError(f"unknown field {text!r}: cannot read it from {rest[pos:]!r}")
        name, key = match.groups()
        parts.append(name if name is not None else (LIST if key == "" else key))
        pos = match.end()
    node: Any = SCHEMA[kind]
    for part in parts:
        if not isinstance(node, dict):
            raise FieldsTableError(f"unknown field {text!r}: {part!r} is below a leaf")
        if part in node and part not in (MAP, LIST):
            node = node[part]
        elif MAP in node and part != LIST:
            node = node[MAP]
        elif LIST in node and part == LIST:
            node = node[LIST]
        else:
            raise FieldsTableError(f"unknown field {text!r}: {kind} snapshots have no {part!r} there")
    return kind, tuple(parts)


@dataclass(frozen=True)
class Rule:
    """One field absent by rule: where it is absent (every condition holds) and why."""

    field: str
    kind: str
    path: tuple[str, ...]
    reason: str
    versions: tuple[tuple[str, SpecifierSet], ...]  # (role, range)
    backends: tuple[str, ...] = ()

    def applies(self, versions: dict[str, MlflowVersion], backend: str) -> bool:
        if self.backends and backend not in self.backends:
            return False
        for role, spec in self.versions:
            if not spec.contains(Version(versions[role].release.base_version), prereleases=True):
                return False
        return True


def parse(text: str) -> list[Rule]:
    """The rules of a fields table (TOML text), checked."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FieldsTableError(f"fields table is not TOML: {exc}") from exc
    unknown = set(data) - {"absent"}
    if unknown:
        raise FieldsTableError(f"fields table: unknown section(s) {sorted(unknown)}; only [[absent]]")
    rules = []
    for i, entry in enumerate(data.get("absent", [])):
        where = f"fields table rule {i + 1} ({entry.get('field', '?')})"
        extra = set(entry) - {"field", "reason", "backend", *ROLES}
        if extra:
            raise FieldsTableError(f"{where}: unknown key(s) {sorted(extra)}")
        if not isinstance(entry.get("field"), str):
            raise FieldsTableError(f"{where}: needs a field")
        if not str(entry.get("reason", "")).strip():
            raise FieldsTableError(f"{where}: needs a reason")
        kind, path = parse_path(entry["field"])
        versions = []
        for role in ROLES:
            if role in entry:
                try:
                    versions.append((role, SpecifierSet(entry[role])))
                except InvalidSpecifier as exc:
                    raise FieldsTableError(f"{where}: {role} {entry[role]!r} is not a version range") from exc
        backends = entry.get("backend", [])
        backends = [backends] if isinstance(backends, str) else backends
        if any(b not in BACKENDS for b in backends):
            raise FieldsTableError(f"{where}: unknown backend in {backends}; known: {list(BACKENDS)}")
        if not versions and not backends:
            raise FieldsTableError(f"{where}: names no version range or backend, so it would drop always")
        rules.append(
            Rule(entry["field"], kind, path, entry["reason"].strip(), tuple(versions), tuple(backends))
        )
    return rules


@functools.cache
def table() -> tuple[Rule, ...]:
    """The shipped rules (harness/data/fields.toml)."""
    return tuple(parse(resources.files("harness").joinpath("data/fields.toml").read_text()))


def _remove(node: Any, path: tuple[str, ...]) -> int:
    """Remove ``path`` below ``node`` (``[]`` = every list element); how many fields were removed."""
    if not path:
        return 0
    head, rest = path[0], path[1:]
    if head == LIST:
        return sum(_remove(item, rest) for item in node) if isinstance(node, list) else 0
    if not isinstance(node, dict) or head not in node:
        return 0
    if not rest:
        del node[head]
        return 1
    return _remove(node[head], rest)


def _apply(node: Any, rules: list[Rule], counts: dict[Rule, int]) -> None:
    """Remove every rule's field from every entity of its kind anywhere in ``node``."""
    if isinstance(node, dict):
        kind = node.get(KIND)
        for rule in rules:
            if rule.kind == kind:
                counts[rule] = counts.get(rule, 0) + _remove(node, rule.path)
        for value in node.values():
            _apply(value, rules, counts)
    elif isinstance(node, list):
        for item in node:
            _apply(item, rules, counts)


def normalise(
    expected: dict[str, Any],
    observed: dict[str, Any],
    *,
    writer_client: MlflowVersion,
    writer_server: MlflowVersion,
    reader_client: MlflowVersion,
    reader_server: MlflowVersion,
    backend: str,
    rules: list[Rule] | tuple[Rule, ...] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Copies of ``expected`` and ``observed`` without the fields absent by rule for these versions and this
    backend (on both sides), and one note per rule that removed something, naming the field and the reason."""
    versions = {"writer_client": writer_client, "writer_server": writer_server,
                "reader_client": reader_client, "reader_server": reader_server}  # fmt: skip
    active = [r for r in (table() if rules is None else rules) if r.applies(versions, backend)]
    expected, observed = copy.deepcopy(expected), copy.deepcopy(observed)
    counts: dict[Rule, int] = {}
    _apply(expected, active, counts)
    _apply(observed, active, counts)
    notes = [f"{rule.field} not compared ({n} removed): {rule.reason}" for rule, n in counts.items() if n]
    return expected, observed, notes
