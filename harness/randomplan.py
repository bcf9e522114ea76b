"""Seeded random upgrade plans (`--random-plan SEED`): one drawn cell per SQL backend of a run.

From a seed and a backend, `draw` picks a multi-hop upgrade path (2 to 4 hops, ascending, through the
releases of the run: every version its paths name, which for a discovered profile includes every FROM the
package index gave it), a client set (1 to 3 of that path's versions) and the order the cell runs its
scenarios in. The draw depends on nothing but the seed, the backend, the pool of versions and the scenario
names (`random.Random` seeded with a string of the seed and the backend, so neither the process's hash seed
nor the order the pool arrives in changes it): replaying a seed on the same profile gives the same cells.
The seed is kept in each drawn `CellPlan` (its id ends with ``[seed=N]``) and in the cell's result, with
the plan as drawn (`record`). Random cells are drawn for the backends whose store is a database from the
start (SQLite and the database-server backends): `file` has no schema to upgrade, and `file_to_sqlite`'s
first hop is `migrate-filestore`, which only a TO of 3.10+ has, so most drawn paths could not run on it.
What does not live here: the option (harness.options), adding the cells to a run and printing the seed
(harness.run `plan`), running a cell (harness.cell), the report's section (templates/report/_randomplan.*).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Any

from harness.backends import BACKENDS
from harness.plan import CellPlan, backend_lacking
from harness.scenarios import fitting
from harness.specs import Spec

MIN_HOPS, MAX_HOPS = 2, 4
MAX_CLIENTS = 3


class PlanError(ValueError):
    """A random plan that cannot be drawn from what the run has (bad input: one line, exit code 2)."""


def new_seed() -> int:
    """A fresh seed (`--random-plan new`): six digits from the OS's randomness, short enough to retype."""
    return int.from_bytes(os.urandom(4), "big") % 1_000_000


def drawn_for(backend: str) -> bool:
    """Whether a run's random plan draws a cell for ``backend``: a store that is a database from the start."""
    return backend == "sqlite" or BACKENDS[backend].has_server


def pool_of(paths: Iterable[tuple[Spec, ...]]) -> list[Spec]:
    """The releases a random path goes through: every version the run's paths name, once, ascending (a
    `latest` not yet pinned to a version is left out; `harness.run.resolve` pins it before the plan)."""
    by_label: dict[str, Spec] = {}
    for path in paths:
        for spec in path:
            if spec.version is not None:
                by_label.setdefault(spec.label, spec)
    return sorted(by_label.values(), key=lambda s: (s.version, s.label))


def draw(
    seed: int,
    backend: str,
    pool: Iterable[Spec],
    scenario_names: tuple[str, ...],
    runtime: str = "local",
    scripts: tuple[str, ...] = (),
) -> CellPlan:
    """The cell drawn for ``backend`` from ``seed``: a path of 2-4 hops through ``pool`` (ascending), 1-3
    clients among the path's versions (ascending), and the cell's scenarios in a drawn order (users' scripts
    keep their place after them). No auth, local artifacts, no seeded volume: the plan is the variable."""
    versions = pool_of([tuple(pool)])
    if len(versions) < MIN_HOPS + 1:
        have = ", ".join(s.label for s in versions) or "none"
        raise PlanError(
            f"--random-plan needs at least {MIN_HOPS + 1} MLflow versions among the run's paths for a "
            f"{MIN_HOPS}-hop path (it has {len(versions)}: {have}); add a --path"
        )
    rng = random.Random(f"mlflow-compat random plan {seed} {backend}")
    hops = rng.randint(MIN_HOPS, min(MAX_HOPS, len(versions) - 1))
    chosen = sorted(rng.sample(range(len(versions)), hops + 1))
    path = tuple(versions[i] for i in chosen)
    picked = sorted(rng.sample(range(len(path)), rng.randint(1, min(MAX_CLIENTS, len(path)))))
    clients = tuple(path[i] for i in picked)
    order = list(fitting(scenario_names, frozenset()))  # a plain cell: no auth, local artifacts
    rng.shuffle(order)
    if why := backend_lacking(backend, path):
        raise PlanError(f"--random-plan {seed}: the path drawn for {backend} cannot run there ({why})")
    return CellPlan(backend=backend, path=path, clients=clients, runtime=runtime, scenarios=tuple(order),
                    scripts=scripts, seed=seed)  # fmt: skip


def draw_run(
    seed: int,
    backends: Iterable[str],
    pool: Iterable[Spec],
    scenario_names: tuple[str, ...],
    runtime: str = "local",
    scripts: tuple[str, ...] = (),
) -> list[CellPlan]:
    """A run's random cells: one per backend it draws for (`drawn_for`), through ``pool`` (`pool_of` the run's
    paths)."""
    return [draw(seed, b, pool, scenario_names, runtime, scripts) for b in backends if drawn_for(b)]


def record(plan: CellPlan) -> dict[str, Any]:
    """What a drawn cell's result keeps of its plan (its components["random_plan"]): to show and replay it."""
    return {
        "seed": plan.seed,
        "path": [s.label for s in plan.path],
        "clients": [s.label for s in plan.clients],
        "scenarios": list(plan.scenarios),
        "replay": f"--random-plan {plan.seed}",
    }
