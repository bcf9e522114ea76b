"""The sessions people run. `nox -l` lists them; options after `--` go to the harness or to pytest."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["matrix"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def _install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


@nox.session(python=PYTHON)
def matrix(session: nox.Session) -> None:
    """Run the compatibility matrix (default: the smoke profile) and write a report under results/."""
    _install(session)
    session.run("mlflow-compat", "run", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the harness's own tests: unit tests and real cells (real MLflow servers, real stores)."""
    _install(session, "dev")
    args = session.posargs or ["-n", "2", "-m", "not slow"]
    # pytest exits 5 when nothing ran; nox fails on any non-zero code, so an empty run never passes.
    session.run("pytest", *args)


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """Faults injected for real (killed server, crashed database, taken port, hung client, Ctrl-C, ...)."""
    _install(session, "dev")
    session.run("pytest", "-n", "2", "-m", "fault", *session.posargs)


@nox.session(python=PYTHON)
def mutations(session: nox.Session) -> None:
    """Broken candidates built from real wheels, each of which the gate must fail (`-- --list`, `--kinds`).

    Ends with one line, `mutations: caught=<n>/<m> control=pass|fail`; exits 0 only if all are caught and the
    untouched wheels pass."""
    _install(session)
    session.run("python", "-m", "harness.mutants", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff on the package, the scenarios and the tests."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "--diff", "harness", "tests", "noxfile.py")


@nox.session(python=PYTHON)
def images(session: nox.Session) -> None:
    """Build Docker images ahead of time: `-- VERSION...` for servers, `-- --bootstrap` with no registry."""
    _install(session)
    session.run("mlflow-compat", "images", *session.posargs)


@nox.session(python=PYTHON)
def gate(session: nox.Session) -> None:
    """May we bump MLflow to a candidate? `-- --candidate SPEC [--baseline V]`; exits 0 only if so."""
    _install(session)
    session.run("mlflow-compat", "gate", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The matrix (fork and cli server starts) against its floor and the naive way; ends `bench: wall=...`."""
    _install(session)
    session.run("python", "-m", "harness.bench", *session.posargs)


@nox.session(python=PYTHON)
def installability(session: nox.Session) -> None:
    """Which MLflow releases install and import under each resolution mode: a table and installability.json.

    The newest patch of each minor from 1.20 (`-- --since 2.0 --jobs 1 --out FILE --modes release`); ~150
    throwaway envs, 2 at a time, each deleted after its probe."""
    _install(session)
    session.run("python", "-m", "harness.installability", *session.posargs)


@nox.session(python=PYTHON)
def clean(session: nox.Session) -> None:
    """Remove what crashed runs left: containers, temp dirs, stray servers (never a live run's)."""
    _install(session)
    session.run("mlflow-compat", "clean")
