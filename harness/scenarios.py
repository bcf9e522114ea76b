"""The scenarios a cell runs: plain scripts in scenarios/, each declaring the capabilities it needs.

A scenario module defines ``write(ctx) -> record`` and ``read(ctx, record) -> observed`` and a module-level
``REQUIRES`` tuple of capability names (harness/data/versions.toml), and optionally ``STORE_REQUIRES``
({backend: capabilities}) for what the server needs on a given store, ``DEFAULT = False`` when it is too
costly for the default selection (it then runs only when named), ``PACKAGES`` (requirements it needs in
every env that runs it, beside mlflow, e.g. ("scikit-learn",): resolved into the version's env, keyed into
the env cache) and ``NEEDS`` (cell features it exists for, e.g. ("auth",): it is part of a cell only when
the cell has them; see harness/plan.py). The harness reads these without
importing the module (it imports mlflow, which only the clients' venvs have), and skips a scenario for a
client version that lacks a capability, or a server whose store lacks one, with that reason. A user's own
script (``--scenario PATH``) runs through scenarios/script.py, which learns what it wrote from the server.

A team's own scenario modules, in the same format, live in directories of their own (``--scenario-dir DIR``,
``scenario-dirs`` in their config file): `use_dirs` adds them to the built-in ones by name (a name a shipped
scenario has is refused), the controller from its options and each pytest worker from run.json. They run
like the shipped ones, with the shipped directory on their import path (``from common import ...`` works).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.paths import SCENARIOS_DIR
from harness.results import FEATURES
from harness.versions import MlflowVersion, capability_names

# The runners, helpers, the user-script adapter, background programs (the rolling upgrade's workload,
# `mlflow db upgrade` timed per revision).
NOT_SCENARIOS = {
    "driver",
    "forkserver",
    "serverfork",
    "common",
    "script",
    "workload",
    "upgrade_timer",
    "scale_probe",
}
SCRIPT_PREFIX = "script:"
DECLARATIONS = ("REQUIRES", "STORE_REQUIRES", "DEFAULT", "PACKAGES", "NEEDS")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path  # the module the driver loads
    doc: str
    requires: tuple[str, ...] = ()  # of the client
    store_requires: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    default: bool = True  # in the default selection (False: only when named, e.g. --scenarios metric_pages)
    packages: tuple[str, ...] = ()  # requirements beside mlflow in every env that runs it
    needs: tuple[
        str, ...
    ] = ()  # cell features (results.FEATURES) it needs: a cell without them leaves it out

    def lacks(self, client: MlflowVersion, server: MlflowVersion, backend: str) -> str | None:
        """Why this scenario cannot run with ``client`` against ``server`` on ``backend`` (None when it can):
        the client lacks an API it uses, or the server's store lacks a feature it needs on that backend
        (e.g. a model registry on the file store). Anything else a server lacks is skew, reported as such."""
        if why := client.lacks(self.requires):
            return why
        if why := server.lacks(self.store_requires.get(backend, ())):
            return f"{why}, which the {backend} store needs for this scenario"
        return None

    def to_plan(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "options": self.options}


def _declared(path: Path) -> tuple[str, dict[str, Any]]:
    """A module's first docstring paragraph and its declarations (DECLARATIONS), read without importing it."""
    tree = ast.parse(path.read_text())
    declared: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in DECLARATIONS:
                    declared[target.id] = ast.literal_eval(node.value)
    doc = (ast.get_docstring(tree) or "").split("\n\n")[0].replace("\n", " ")
    return doc, declared


class ScenarioError(ValueError):
    """A scenario directory that cannot be used (bad input): not a directory, a module that does not parse or
    lacks write/read, a name a shipped scenario has."""


_extra_dirs: tuple[Path, ...] = ()


def use_dirs(dirs: tuple[Path, ...]) -> None:
    """Make the scenario modules in ``dirs`` (absolute) join the built-in ones from now on (replacing any
    given before; () for none). Checked at once: ScenarioError names the first that cannot be used."""
    global _extra_dirs
    before, _extra_dirs = _extra_dirs, tuple(Path(d) for d in dirs)
    builtin.cache_clear()
    try:
        known = builtin()
        for path in _extra_dirs:  # a team's REQUIRES must name capabilities versions.toml knows
            for scenario in (s for s in known.values() if s.path.parent == path):
                wanted = {*scenario.requires, *(c for caps in scenario.store_requires.values() for c in caps)}
                if unknown := sorted(wanted - set(capability_names())):
                    raise ScenarioError(f"scenario {scenario.path}: unknown capabilities {unknown} "
                                        f"(known: {', '.join(capability_names())})")  # fmt: skip
    except ValueError as exc:  # ScenarioError, or an unknown NEEDS
        _extra_dirs = before
        builtin.cache_clear()
        raise ScenarioError(str(exc)) from None


def extra_dirs() -> tuple[Path, ...]:
    return _extra_dirs


@functools.cache
def _scan(dirs: tuple[Path, ...]) -> tuple[Path, ...]:
    """The scenario modules of the shipped directory, then of ``dirs``; a clash of names is refused."""
    shipped = [p for p in sorted(SCENARIOS_DIR.glob("*.py")) if p.stem not in NOT_SCENARIOS]
    seen = {p.stem: p for p in shipped}
    found = list(shipped)
    for d in dirs:
        if not d.is_dir():
            raise ScenarioError(f"scenario directory {d}: no such directory")
        for path in sorted(d.glob("*.py")):
            if path.stem.startswith("_"):
                continue
            if path.stem in seen:
                raise ScenarioError(f"scenario {path}: the name {path.stem!r} is taken by {seen[path.stem]}")
            try:
                tree = ast.parse(path.read_text(), str(path))
            except (OSError, SyntaxError, ValueError) as exc:
                raise ScenarioError(f"scenario {path}: {exc}") from None
            defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            if missing := {"write", "read"} - defined:
                raise ScenarioError(f"scenario {path}: defines no {' or '.join(sorted(missing))}(ctx, ...)")
            seen[path.stem] = path
            found.append(path)
    return tuple(found)


@functools.cache
def builtin() -> dict[str, Scenario]:
    """Every built-in scenario by name (the shipped ones and those of `use_dirs`), quickstart first (the
    baseline), then alphabetically."""
    found = {}
    for path in _scan(_extra_dirs):
        try:
            doc, declared = _declared(path)
        except (ValueError, SyntaxError) as exc:  # a declaration that is no literal
            raise ScenarioError(f"scenario {path}: {exc}") from None
        store = {backend: tuple(caps) for backend, caps in declared.get("STORE_REQUIRES", {}).items()}
        requires = tuple(declared.get("REQUIRES", ()))
        found[path.stem] = Scenario(
            path.stem,
            path,
            doc,
            requires,
            store,
            default=declared.get("DEFAULT", True),
            packages=tuple(declared.get("PACKAGES", ())),
            needs=tuple(declared.get("NEEDS", ())),
        )
        if unknown := set(found[path.stem].needs) - set(FEATURES):
            raise ValueError(f"{path}: NEEDS names unknown features {sorted(unknown)} (known: {FEATURES})")
    return dict(sorted(found.items(), key=lambda item: (item[0] != "quickstart", item[0])))


def user_script(path: Path) -> Scenario:
    path = path.resolve()
    return Scenario(f"{SCRIPT_PREFIX}{path.name}", SCENARIOS_DIR / "script.py",
                    f"your script {path}", options={"script": str(path)})  # fmt: skip


def resolve(names: tuple[str, ...], scripts: tuple[str, ...] = ()) -> list[Scenario]:
    """The scenarios of a cell: built-ins by name, then user scripts by path."""
    known = builtin()
    return [known[n] for n in names] + [user_script(Path(s)) for s in scripts]


def fitting(names: tuple[str, ...], features: frozenset[str]) -> tuple[str, ...]:
    """The built-in scenarios among ``names`` a cell with ``features`` has: those whose NEEDS it meets."""
    known = builtin()
    return tuple(n for n in names if set(known[n].needs) <= features)


def all_names() -> tuple[str, ...]:
    """Every built-in scenario (what --scenarios accepts)."""
    return tuple(builtin())


def default_names() -> tuple[str, ...]:
    """The built-in scenarios a run selects when none are named: all but the costly (``DEFAULT = False``)."""
    return tuple(name for name, s in builtin().items() if s.default)
