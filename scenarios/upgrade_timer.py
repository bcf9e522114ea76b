"""`mlflow db upgrade` (or any `mlflow` command) in-process, timed per alembic revision.

    python upgrade_timer.py EVENTS -- db upgrade URI

runs the `mlflow` console script's own click command (`mlflow.cli.cli`, standalone mode: the same exit
codes, the same output) and appends one JSON line to EVENTS per alembic "Running upgrade A -> B, desc"
record, with the wall time (`time.time()`, microseconds) at which alembic started that revision, flushed per
line so that a watcher can act on a revision as it starts; a first line when the command starts, one when
alembic's `command.upgrade` returns (the last revision's end) and a final line when the command ends (with
its exit code). With MLFLOW_COMPAT_PAUSE_IN_REVISION=REV it also writes a "paused" line after REV's first
SQL statement completed and waits there to be killed (the interrupted migration, harness/interrupted.py).
harness/migration.py reads the file; nothing else lives here.

Logging: alembic logs the revisions at INFO on the "alembic.runtime.migration" logger. Some MLflow versions
let INFO through on "alembic" (1.x, 2.x: alembic.ini's fileConfig), others cut it at WARNING (3.x). The
migration logger gets level INFO and our handler, and stops propagating; a forwarding handler hands its
records on to the ancestors' handlers only at the level the ancestors would have let through, so what the
command prints is what it prints without the timer. A later fileConfig/dictConfig (MLflow's env.py, its
logger setup) resets descendants of the loggers it configures, so the setup is re-applied after each.
Runs inside each MLflow version's venv: Python 3.8+, mlflow and the standard library only.
"""

import json
import logging
import logging.config
import os
import re
import sys
import time

MIGRATION_LOGGER = "alembic.runtime.migration"
# The interrupted migration (harness/interrupted.py): inside this revision, after its first SQL statement has
# completed, write a "paused" line and wait there to be killed, so that the kill always lands with the
# revision half-applied (not before its first statement, nor after its last) whatever the timing.
PAUSE_IN = "MLFLOW_COMPAT_PAUSE_IN_REVISION"
PAUSE_LIMIT_S = 600.0  # never wait forever: without a kill, the upgrade goes on
RUNNING = re.compile(r"^Running upgrade (?P<src>.*?) -> (?P<dst>[^,\s]+)(?:, (?P<desc>.*))?$", re.S)


class Events:
    def __init__(self, path):
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's whole life

    def write(self, **fields):
        fields.setdefault("t", time.time())
        fields.setdefault("pid", os.getpid())
        self.fh.write(json.dumps(fields, sort_keys=True) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


class RevisionHandler(logging.Handler):
    """One line per revision alembic starts."""

    def __init__(self, events):
        logging.Handler.__init__(self, level=logging.INFO)
        self.events = events
        self.current = None  # the revision alembic is running

    def emit(self, record):
        try:
            match = RUNNING.match(record.getMessage())
            if match is None:
                return
            fields = {
                "from": match.group("src").strip(),
                "to": match.group("dst"),
                "description": (match.group("desc") or "").strip(),
            }
            self.current = fields["to"]
            self.events.write(event="revision", t=record.created, **fields)
        except Exception:  # a broken events file must not change the command's outcome
            self.handleError(record)


class Forward(logging.Handler):
    """Propagation as it was: the ancestors' handlers see a record only at the level they would have."""

    def __init__(self, logger):
        logging.Handler.__init__(self)
        self.logger = logger

    def emit(self, record):
        parent = self.logger.parent
        if parent is not None and record.levelno >= parent.getEffectiveLevel():
            parent.callHandlers(record)


def install(events):
    logger = logging.getLogger(MIGRATION_LOGGER)
    mine = RevisionHandler(events)

    def setup():
        logger.handlers = [h for h in logger.handlers if not isinstance(h, (RevisionHandler, Forward))]
        logger.addHandler(mine)
        logger.addHandler(Forward(logger))
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.disabled = False

    def again(configure):
        def wrapped(*args, **kwargs):
            try:
                return configure(*args, **kwargs)
            finally:
                setup()

        return wrapped

    logging.config.fileConfig = again(logging.config.fileConfig)
    logging.config.dictConfig = again(logging.config.dictConfig)
    setup()

    # The last revision ends when alembic's upgrade returns (what MLflow does after it is not a revision).
    from alembic import command

    upgrade = command.upgrade

    def timed_upgrade(*args, **kwargs):
        result = upgrade(*args, **kwargs)
        events.write(event="upgraded")
        return result

    command.upgrade = timed_upgrade
    if os.environ.get(PAUSE_IN):
        pause_in(events, mine, os.environ[PAUSE_IN])


def pause_in(events, revisions, revision):
    """After the first statement of ``revision`` completes, say so and wait (to be killed)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    done = []

    def after_execute(conn, cursor, statement, parameters, context, executemany):
        if revisions.current != revision or done:
            return
        done.append(True)
        events.write(event="paused", revision=revision, statement=" ".join(str(statement).split())[:200])
        deadline = time.time() + PAUSE_LIMIT_S
        while time.time() < deadline:
            time.sleep(0.5)

    event.listen(Engine, "after_cursor_execute", after_execute)


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: upgrade_timer.py EVENTS -- MLFLOW-ARGS...\n")
        return 2
    events = Events(argv[0])
    events.write(event="start", args=[a for a in argv[2:] if "://" not in a])
    code = 1
    try:
        import mlflow.cli  # after the start line: the import is not part of any revision

        install(events)
        events.write(event="command")
        try:
            mlflow.cli.cli.main(args=argv[2:], prog_name="mlflow", standalone_mode=True)
            code = 0
        except SystemExit as exc:  # standalone mode always ends here: keep its code exactly
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            raise
    finally:
        events.write(event="end", exit=code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
