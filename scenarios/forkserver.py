"""A client version's interpreter with mlflow imported once; every client step is a fresh fork of it.

    python forkserver.py        (in the client's venv; the harness talks to it over stdin/stdout)

Importing mlflow costs 1.5-5 s per process, more than most steps' own work. This process pays it once,
then forks a child per step: the child is a new process (own pid, own process group, own output file)
that starts from the state right after the imports, as a fresh `python driver.py` would reach it, and
runs driver.main. Nothing a step does reaches the next one.

Protocol, one JSON object per line:
    -> {"ready": true, "client_version": V, "pid": P}                        once, after the imports
    <- {"argv": [...], "env": {K: V}, "cwd": DIR, "log": FILE}               one step
    -> {"pid": CHILD}                                                         at once
    -> {"pid": CHILD, "code": N}                                              when the child exits
The harness kills a child that overruns its timeout by its process group (the child's pid). EOF on stdin
ends the server, and kills a step still running (the harness that would time it out is gone).
"""

import contextlib
import importlib
import json
import os
import select
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import driver  # imports mlflow and common
import mlflow

# What the first MLflow call of a step would otherwise import, paid once here (absent modules are fine).
WARM = (
    "mlflow.tracking",
    "mlflow.store.tracking.rest_store",
    "mlflow.store.model_registry.rest_store",
    "mlflow.store.artifact.http_artifact_repo",
    "mlflow.store.artifact.local_artifact_repo",
    "mlflow.utils.rest_utils",
    "requests",
)


def warm():
    for name in WARM:
        # A module this version lacks, or one that fails to import: the step that needs it will say so.
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def child(request):
    """In the forked child: become the step's own process, run the driver, never return."""
    code = 1
    try:
        os.setpgid(0, 0)
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND),
        ):
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        os.dup2(1, 2)
        os.environ.update(request.get("env", {}))
        os.chdir(request["cwd"])
        sys.argv = [driver.__file__, *request["argv"]]
        code = driver.main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def requests(fd):
    """Request lines from ``fd`` (unbuffered, so that select() sees an EOF while a step runs)."""
    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer += chunk


def wait(pid, fd):
    """The step's exit code; if the harness goes away meanwhile (EOF on ``fd``), the step is killed too."""
    # A pidfd wakes select() the moment the step exits (Linux 5.3, Python 3.9); else poll every 50 ms.
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            watched = [fd] if pidfd is None else [fd, pidfd]
            readable, _, _ = select.select(watched, [], [], 0.05 if pidfd is None else None)
            if fd in readable and not os.read(fd, 65536):  # the harness died: nobody reaps or times this
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                sys.exit(0)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def serve(fd, stdout):
    def say(message):
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    say({"ready": True, "client_version": mlflow.__version__, "pid": os.getpid()})
    for request in requests(fd):
        pid = os.fork()
        if pid == 0:
            child(request)
        say({"pid": pid})
        say({"pid": pid, "code": wait(pid, fd)})


if __name__ == "__main__":
    warm()
    serve(sys.stdin.fileno(), sys.stdout)
