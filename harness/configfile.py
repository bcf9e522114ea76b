"""A team's own defaults, kept in their repo: `[tool.mlflow-compat]` in pyproject.toml, or mlflow-compat.toml.

`find` looks from a directory upwards: the first directory with an `mlflow-compat.toml` (its keys at the top
level) or a `pyproject.toml` ends the search (the latter counts only with a `[tool.mlflow-compat]` table: a
project without one has no settings, and its parents' are not borrowed), and so does a directory holding
`.git` (a repository's top). `MLFLOW_COMPAT_CONFIG=FILE` names the file outright (its settings at the top
level, or in a `[tool.mlflow-compat]` table).
Keys are option names as the report's options table shows them, in kebab or snake case (`results-dir`,
`results_dir`); what each key takes (a string, a list of strings, a bool, a whole number; paths, resolved
against the file's own directory) is told by the caller (harness.options, where every option is declared
once). An unknown key, a wrong type, a file that does not parse: `ConfigError`, one line naming the file and
the key. Reading is pure: nothing is made or started. What does not live here: which option a key sets and
the precedence of command line > environment > file > default (harness.options).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_ENV = "MLFLOW_COMPAT_CONFIG"
OWN_FILE = "mlflow-compat.toml"
PYPROJECT = "pyproject.toml"
TABLE = ("tool", "mlflow-compat")

KINDS = ("str", "csv", "list", "bool", "int")  # csv: a string "a,b", or a list of strings joined so


class ConfigError(ValueError):
    """A config file that cannot be used: one line, naming the file (and the key)."""


@dataclass(frozen=True)
class Key:
    """What one key takes: ``kind`` (one of KINDS), and whether its strings are paths (made absolute against
    the file's directory)."""

    kind: str
    paths: bool = False


@dataclass(frozen=True)
class TeamConfig:
    """The values a config file sets, by key in snake case, checked for type; paths absolute."""

    path: Path
    in_pyproject: bool
    values: Mapping[str, Any]

    @property
    def source(self) -> str:
        """How the report's options table names a value from this file."""
        return f"file {self.path} [tool.mlflow-compat]" if self.in_pyproject else f"file {self.path}"


def find(start: Path, keys: Mapping[str, Key], environ: Mapping[str, str] | None = None) -> TeamConfig | None:
    """The team's config for a command run in ``start`` (None: there is none)."""
    env = os.environ if environ is None else environ
    if named := env.get(CONFIG_ENV):
        path = Path(named)
        if not path.is_absolute():
            path = start / path
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named}: no such file")
        found = load(path, keys, in_pyproject=path.name == PYPROJECT or _has_table(path))
        if found is None:
            raise ConfigError(f"{path}: no [tool.mlflow-compat] table")
        return found
    here = start.resolve()
    for directory in (here, *here.parents):
        if (directory / OWN_FILE).is_file():
            return load(directory / OWN_FILE, keys, in_pyproject=False)
        if (directory / PYPROJECT).is_file():
            return load(directory / PYPROJECT, keys, in_pyproject=True)
        if (directory / ".git").exists():
            return None
    return None


def _has_table(path: Path) -> bool:
    """Whether a file named outright keeps its settings in a [tool.mlflow-compat] table, as pyproject does."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # load() says why
    return isinstance(data.get(TABLE[0]), dict) and TABLE[1] in data[TABLE[0]]


def load(path: Path, keys: Mapping[str, Key], *, in_pyproject: bool) -> TeamConfig | None:
    """The settings in ``path``: a pyproject's `[tool.mlflow-compat]` table (None when it has none), or a
    whole mlflow-compat.toml."""
    path = path.resolve()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    where = "" if not in_pyproject else " [tool.mlflow-compat]"
    if in_pyproject:
        table = data.get(TABLE[0], {})
        if not isinstance(table, dict) or TABLE[1] not in table:
            return None
        data = table[TABLE[1]]
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: tool.mlflow-compat must be a table")
    values: dict[str, Any] = {}
    for raw, value in data.items():
        name = raw.replace("-", "_")
        if name not in keys:
            known = ", ".join(sorted(k.replace("_", "-") for k in keys))
            raise ConfigError(f"{path}{where}: unknown key {raw!r} (known: {known})")
        if name in values:
            raise ConfigError(f"{path}{where}: key {raw!r} is given twice (kebab and snake case)")
        try:
            values[name] = _typed(value, keys[name], path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}{where}: {raw}: {exc}") from None
    return TeamConfig(path, in_pyproject, values)


def _typed(value: Any, key: Key, base: Path) -> Any:
    """``value`` as the option takes it from the command line (strings, a list of strings, a bool, an int)."""

    def text(item: Any) -> str:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ConfigError(f"expected a string, got {_kind(item)}")
        return str((base / str(item)).resolve()) if key.paths else str(item)

    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_kind(value)}")
        return value
    if key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected a whole number, got {_kind(value)}")
        return value
    if key.kind == "list":
        if not isinstance(value, list):
            raise ConfigError(f"expected a list of strings, got {_kind(value)}")
        return [text(item) for item in value]
    if key.kind == "csv" and isinstance(value, list):
        return ",".join(text(item) for item in value)
    return text(value)


def _kind(value: Any) -> str:
    names = {bool: "a bool", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "a table"}  # fmt: skip
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
