"""An MLflow version's interpreter with its server imported once; each server start is two fresh forks of it.

    python serverfork.py        (in the version's venv; the harness talks to it over stdin/stdout)

`mlflow server` is two interpreters one after the other: the CLI process (imports mlflow.cli and
mlflow.server, checks the store, then execs the web server through mlflow.server._exec_cmd) and the web
server it execs (gunicorn, whose worker imports `mlflow.server:app`; in 3.x `python -m uvicorn` with one
worker, which imports `mlflow.server.fastapi_app:app` in-process). Each import costs 1.5-5 s. This process
imports, in the real order, what those two processes import (3.x: uvicorn.main, then
mlflow.server.fastapi_app; older: gunicorn.app.wsgiapp, then mlflow.server), plus mlflow.cli and the store
modules the CLI imports lazily, and never creates a store, an engine or a thread. Per start:

  fork A  the real click command (mlflow.cli.cli, the arguments of `mlflow server ...`) with
          mlflow.server._exec_cmd replaced by a function that reports the command line and environment it
          would have exec'd, then ends. Argument parsing, initialize_backend_stores, the schema check and a
          refusal (logged, then sys.exit(1)) all run as in the real CLI, into the same log.
  fork B  from this untouched process: exactly that environment, that working directory, and the server's
          own entry point with that argv, run as the exec'd interpreter would run it (`python -m uvicorn`:
          the module's __main__; the `gunicorn` console script: that file), in-process; the app import
          resolves from sys.modules, as with gunicorn's --preload. A command it does not recognise, or an
          environment that differs from this process's on a variable the server reads at import
          (IMPORT_TIME), is exec'd for real instead.
What differs from a real start, by design: the web server's import-time output (deprecation warnings) went
to this process's stderr once, not to each start's log; the CLI part flushes its output before handing over
(a real CLI's buffered lines reach the log when it exits); the CLI part ends at the handover instead of
waiting for the web server (3.x's CLI only forwards signals to it meanwhile).

The same process runs other scripts of the version (the revision timer for `mlflow db upgrade`) as a fork.
A refusal, a crash, a port taken: the log says it as the CLI would, and A's or B's exit code is reported.

Protocol, one JSON object per line (the harness side is harness/serverfork.py):
  -> {"ready": true, "version": V, "pid": P, "imported": [...], "import_time": {NAME: VALUE|null}}
  <- {"id": N, "op": "server", "argv": [...], "env": {...}, "cwd": DIR, "log": FILE}
  <- {"id": N, "op": "script", "path": FILE, "argv": [...], "env": {...}, "cwd": DIR, "log": FILE}
  -> {"id": N, "cli_pid": A}                         a server start: its CLI part runs as A (at once)
  -> {"id": N, "pid": PID, "how": "fork"|"exec", "why": WHY_EXEC, "import_time": {NAME: VALUE|null},
      "cli_pid": A, "cli_seconds": S}                A handed over: the web server runs as PID
  -> {"id": N, "pid": PID}                           a script runs as PID
  -> {"id": N, "exited": CODE, "stage": "cli"|"server"|"script"}   it ended (A: only without a handover)
  -> {"id": N, "error": TEXT}                        refused before forking (a thread, a failed fork)
Every child is the leader of its own process group (the harness stops it by that group). EOF on stdin ends
this process and kills every child still running.
"""

import contextlib
import errno
import gc
import importlib
import json
import os
import runpy
import select
import shutil
import signal
import sys
import threading
import time
import traceback

try:
    from importlib.metadata import version as _dist_version
except ImportError:  # Python < 3.8 has no importlib.metadata; mlflow's own attribute then
    _dist_version = None

# Read by the server at import time (so fixed in this process): a start whose exec'd environment differs on
# one of them is exec'd for real. Facts: shared/mlflow-facts.md, "Where a server start goes".
IMPORT_TIME = (
    "_MLFLOW_STATIC_PREFIX",
    "prometheus_multiproc_dir",
    "MLFLOW_SERVER_ALLOWED_HOSTS",
    "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",
    "MLFLOW_SERVER_X_FRAME_OPTIONS",
    "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
    "_MLFLOW_SUPPORTED_JOB_FUNCTION_LIST",
    "_MLFLOW_ALLOWED_JOB_NAME_LIST",
)

# What the CLI imports lazily on its way to _exec_cmd (absent modules are fine: not in this version).
CLI_LAZY = (
    "mlflow.server.handlers",
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.tracking.file_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.model_registry.file_store",
    "mlflow.store.artifact.local_artifact_repo",
    "mlflow.store.artifact.s3_artifact_repo",
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.mysql",
    "psycopg2",
    "pymysql",
)


def mlflow_version():
    if _dist_version is not None:
        return _dist_version("mlflow")
    import mlflow.version

    return mlflow.version.VERSION


def preimport(version):
    """Import what the two real processes import, web server first (as its process does), and return the
    names imported. Nothing here may start a thread or create an engine (checked before every fork)."""
    major = int(version.split(".")[0])
    if major >= 3:
        order = ["uvicorn.main", "mlflow.server.fastapi_app"]
    else:
        order = ["gunicorn.app.wsgiapp", "mlflow.server"]
    order += ["mlflow.cli"]
    done = []
    for name in order:
        importlib.import_module(name)  # the server's own modules: a failure here is a failed fork server
        done.append(name)
    for name in CLI_LAZY:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
            done.append(name)
    return done


def forkable(full=False):
    """Why this process must not fork now (None: it may): a thread or a database engine would be copied
    half-alive into every child. Threads are counted before every fork; engines are looked for (a scan of
    every object: 0.1-0.2 s) once, after the imports: from then on this process runs no MLflow code, only
    its loop (select, read, fork), so none can appear."""
    if threading.active_count() != 1:
        return f"the server fork server has {threading.active_count()} threads"
    engine = sys.modules.get("sqlalchemy.engine")
    if full and engine is not None and any(isinstance(o, engine.Engine) for o in gc.get_objects()):
        return "the server fork server holds a SQLAlchemy engine"
    return None


def become(request, protocol_fds):
    """In a fresh child: its own process group, the request's log on stdout and stderr, its environment and
    working directory. The protocol's descriptors are closed: the child cannot talk for this process."""
    os.setpgid(0, 0)
    for fd in protocol_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND),
    ):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.dup2(1, 2)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(code):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run_child(main):
    """Run ``main()`` as the whole life of a forked child, its exit code as the process's."""
    code = 1
    try:
        result = main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:
        traceback.print_exc()
    finish(code)


def cli_child(request, report_fd, protocol_fds):
    """Fork A: the real `mlflow server` click command, up to the exec of the web server."""
    become(request, protocol_fds)
    import mlflow.server

    def report_exec(cmd, *args, **kwargs):
        env = kwargs.get("env")
        extra = kwargs.get("extra_env")
        environ = dict(env) if env is not None else dict(os.environ)
        environ.update(extra or {})
        message = {"argv": [str(c) for c in cmd], "env": environ, "cwd": os.getcwd()}
        sys.stdout.flush()  # what the CLI printed is in the log before the web server writes there
        sys.stderr.flush()
        with os.fdopen(report_fd, "w") as fh:
            fh.write(json.dumps(message))
        finish(0)  # the CLI's part ends where it would have handed over to the web server

    mlflow.server._exec_cmd = report_exec
    import mlflow.cli

    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    sys.argv = [mlflow_bin, *request["argv"]]
    run_child(lambda: mlflow.cli.cli.main(args=request["argv"], prog_name="mlflow"))


# The web servers this process runs in-process (each pre-imported in the version's real order).
WEB_SERVERS = ("uvicorn", "gunicorn")


def recognised(argv, environ):
    """How fork B runs ``argv`` in-process, exactly as the exec'd interpreter would run it: ("module", NAME)
    for `python -m NAME` with this interpreter, ("script", PATH) for a console script of this venv (its
    shebang is this interpreter); None: anything else, exec'd for real."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2] in WEB_SERVERS:
        return ("module", argv[2]) if argv[2] in sys.modules else None
    if argv and os.path.basename(argv[0]) in WEB_SERVERS and os.path.basename(argv[0]) in sys.modules:
        found = shutil.which(argv[0], path=environ.get("PATH", ""))
        if found:
            with open(found, "rb") as fh:
                shebang = fh.readline().decode(errors="replace").strip()
            if shebang == "#!" + sys.executable:
                return "script", found
    return None


def differs_at_import(environ, import_time):
    return [name for name in IMPORT_TIME if environ.get(name) != import_time.get(name)]


def server_child(request, exec_request, how, protocol_fds):
    """Fork B: the web server with the environment the CLI would have exec'd it with."""
    become(dict(request, env=exec_request["env"], cwd=exec_request["cwd"]), protocol_fds)
    argv = exec_request["argv"]
    if how is None:
        try:
            os.execvpe(argv[0], argv, os.environ)
        except OSError as exc:
            sys.stderr.write(f"could not exec {argv[0]}: {exc}\n")
            finish(127)
    kind, target = how
    if kind == "module":  # what `python -m NAME` does: the working directory first, NAME's __main__ run
        sys.argv = [target, *argv[3:]]
        sys.path[0] = os.getcwd()
        run_child(lambda: runpy.run_module(target, run_name="__main__", alter_sys=True))
    else:  # what running the console script does: its directory first, the file run as __main__
        sys.argv = [target, *argv[1:]]
        sys.path[0] = os.path.dirname(target)
        run_child(lambda: runpy.run_path(target, run_name="__main__"))


def script_child(request, protocol_fds):
    become(request, protocol_fds)
    sys.argv = [request["path"], *request["argv"]]
    sys.path[0] = os.path.dirname(os.path.abspath(request["path"]))
    run_child(lambda: runpy.run_path(request["path"], run_name="__main__"))


class Server:
    def __init__(self, proto_in, proto_out, import_time):
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.import_time = import_time
        self.children = {}  # pid -> (request id, stage)
        self.pending = {}  # report fd -> (request, cli pid, started, chunks)
        self.reported = set()  # pids of CLI forks whose exec request was read

    def say(self, message):
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.proto_out, data) :]

    def fork(self, request, target, *args):
        why = forkable()
        if why is not None:
            self.say({"id": request["id"], "error": why})
            return None
        pid = os.fork()
        if pid == 0:
            try:
                target(request, *args)
            finally:
                os._exit(70)  # target never returns; if it did, this child must not become a second server
        return pid

    def protocol_fds(self, *more):
        return (self.proto_in, self.proto_out, *self.pending, *more)

    def start_server(self, request):
        read_fd, write_fd = os.pipe()
        started = time.monotonic()
        pid = self.fork(request, cli_child, write_fd, self.protocol_fds(read_fd))
        os.close(write_fd)
        if pid is None:
            os.close(read_fd)
            return
        self.children[pid] = (request["id"], "cli")
        self.pending[read_fd] = (request, pid, started, [])
        self.say({"id": request["id"], "cli_pid": pid})

    def cli_report(self, read_fd):
        """A's report pipe is readable: gather it; at EOF (A has reported and is ending, or it died without
        a report: a refusal, a crash) fork B or report A's exit."""
        request, cli_pid, started, chunks = self.pending[read_fd]
        chunk = os.read(read_fd, 65536)
        if chunk:
            chunks.append(chunk)
            return
        del self.pending[read_fd]
        os.close(read_fd)
        if not chunks:  # no report: A's exit code, when it is reaped, is the start's outcome
            return
        self.reported.add(cli_pid)
        exec_request = json.loads(b"".join(chunks).decode())
        how = recognised(exec_request["argv"], exec_request["env"])
        argv = exec_request["argv"]
        why = "" if how is not None else f"not a server command it runs in-process: {argv[:3]}"
        changed = differs_at_import(exec_request["env"], self.import_time)
        if how is not None and changed:
            how, why = None, f"read at import, and not as when this process imported: {', '.join(changed)}"
        pid = self.fork(request, server_child, exec_request, how, self.protocol_fds())
        if pid is None:
            return
        self.children[pid] = (request["id"], "server")
        self.say({"id": request["id"], "pid": pid, "how": "exec" if how is None else "fork", "why": why,
                  "import_time": {name: exec_request["env"].get(name) for name in IMPORT_TIME},
                  "cli_pid": cli_pid, "cli_seconds": round(time.monotonic() - started, 3)})  # fmt: skip

    def start_script(self, request):
        pid = self.fork(request, script_child, self.protocol_fds())
        if pid is None:
            return
        self.children[pid] = (request["id"], "script")
        self.say({"id": request["id"], "pid": pid})

    def reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            request_id, stage = self.children.pop(pid, (None, None))
            if request_id is None:
                continue
            if stage == "cli":
                for fd in [fd for fd, p in self.pending.items() if p[1] == pid]:
                    while fd in self.pending:  # what it wrote before it ended
                        self.cli_report(fd)
                if pid in self.reported:
                    self.reported.discard(pid)
                    continue  # it handed over: B runs (or the fork was refused, and that was said)
            self.say({"id": request_id, "exited": code, "stage": stage})

    def kill_children(self):
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def serve(self):
        buffer = b""
        while True:
            watched = [self.proto_in, *self.pending]
            try:
                readable, _, _ = select.select(watched, [], [], 0.05)
            except InterruptedError:
                readable = []
            for fd in readable:
                if fd in self.pending:
                    self.cli_report(fd)
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:  # the harness is gone: nobody stops what we started
                    self.kill_children()
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self.handle(json.loads(line))
            self.reap()

    def handle(self, request):
        try:
            if request["op"] == "server":
                self.start_server(request)
            elif request["op"] == "script":
                self.start_script(request)
            else:
                self.say({"id": request.get("id"), "error": f"unknown op {request.get('op')!r}"})
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ENOMEM):
                self.say({"id": request.get("id"), "error": f"fork failed: {exc}"})
            else:
                raise


def main():
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # anything printed on import goes where startup errors go, not into the protocol
    version = mlflow_version()
    imported = preimport(version)
    import_time = {name: os.environ.get(name) for name in IMPORT_TIME}
    why = forkable(full=True)
    server = Server(proto_in, proto_out, import_time)
    if why is not None:
        server.say({"ready": False, "error": why})
        return 1
    server.say({"ready": True, "version": version, "pid": os.getpid(), "imported": imported,
                "import_time": import_time})  # fmt: skip
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
