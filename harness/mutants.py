"""The mutation suite: broken candidate builds made from a real release's wheels, each of which the gate must
fail with `fail` (never `error`), and the untouched wheels, rebuilt the same way, which it must pass.

What lives here: the table of mutation kinds as data (`KINDS`: what each breaks in user terms, which layer of
MLflow it sits in, what kind of change it is, the file and exact source text it edits, and the scenarios that
exercise it), `build_candidate` (a release's wheels, downloaded from the index, with a list of source edits
applied: the one function other tests use to make a candidate dir), and the runner,
`python -m harness.mutants [--kinds a,b] [--base 3.17.2] [--baseline 2.22.5]`, which gates each mutant and
the control in a child `python -m harness.cli gate` and ends with one line
`mutations: caught=<n>/<m> control=pass|fail`. What does not live here: the gate itself (harness/cli.py),
and how checks compare records (harness/verify.py); this module only reads the gate's results.json.

Every edit is asserted to find its text exactly once in every wheel that ships the file, and the wheels that
ship it must be the ones the table names (mlflow, mlflow-skinny and mlflow-tracing 3.x ship overlapping
copies of the same modules; an installer keeps whichever it unpacks last, so every copy is changed alike).
Each wheel's RECORD is rewritten with the changed files' hashes and sizes, as a real build would.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock
from packaging.version import Version

from harness.paths import cache_root

FORMAT = 1  # bump when the way candidates are built changes (part of every cached candidate's name)
DOWNLOAD_TIMEOUT_S = 600
GATE_TIMEOUT_S = 1800

HANDLERS = "mlflow/server/handlers.py"
SQL_STORE = "mlflow/store/tracking/sqlalchemy_store.py"
REST_STORE = "mlflow/store/tracking/rest_store.py"
ARTIFACT_ROUTER = "mlflow/server/artifact_router.py"  # the proxied artifact routes in 3.x
MIGRATIONS = "mlflow/store/db_migrations/versions/"
# The 3.17.2 head revision and the one before it: stores from 1.30.1 and 2.22.5 (head 0584bdc529eb) both
# pass through them on `mlflow db upgrade` (or the server's own migration on start).
HEAD_MIGRATION = MIGRATIONS + "dc11669786a5_add_job_executor_persistence_model.py"
PREV_MIGRATION = MIGRATIONS + "75868b020152_add_sql_trace_analytics_schema.py"

SERVER_WHEELS = ("mlflow", "mlflow-skinny")  # mlflow/server/ is not in mlflow-tracing
ALL_WHEELS = ("mlflow", "mlflow-skinny", "mlflow-tracing")


class MutantError(Exception):
    """A mutation cannot be built as the table says (text not found once, file in other wheels, ...)."""


class Layer(StrEnum):
    SERVER = "server handler"
    STORE = "store"
    MIGRATION = "migration"
    CLIENT = "client library"


class Change(StrEnum):
    CHANGED = "value changed"
    DROPPED = "data dropped"
    REORDERED = "order reversed"
    DELAYED = "delayed"
    ERRORED = "errored (HTTP 500)"


@dataclass(frozen=True)
class Edit:
    """Replace ``find`` (which must occur exactly once) by ``replace`` in ``path``, in each of ``wheels``."""

    path: str
    find: str
    replace: str
    wheels: tuple[str, ...] = SERVER_WHEELS


@dataclass(frozen=True)
class Kind:
    id: str
    breaks: str  # what a user would see
    layer: Layer
    change: Change
    scenarios: tuple[str, ...]  # the smallest set that exercises the broken path
    edits: tuple[Edit, ...] = field(default=())

    def digest(self) -> str:
        data = json.dumps([FORMAT, [(e.path, e.find, e.replace, e.wheels) for e in self.edits]])
        return hashlib.sha256(data.encode()).hexdigest()[:12]


_LOG_METRIC = (
    "    metric = Metric(\n"
    "        request_message.key,\n"
    "        request_message.value,\n"
    "        request_message.timestamp,\n"
)
_SET_TAG = (
    "    tag = RunTag(request_message.key, request_message.value)\n"
    "    run_id = request_message.run_id or request_message.run_uuid\n"
    "    _get_tracking_store().set_tag(run_id, tag)\n"
)

KINDS: tuple[Kind, ...] = (
    Kind(
        "metric-value-float32",
        "every metric logged through the server is stored at float32 precision (0.95 reads 0.949999988)",
        Layer.SERVER,
        Change.CHANGED,
        ("quickstart",),
        (
            Edit(
                HANDLERS,
                _LOG_METRIC,
                _LOG_METRIC.replace(
                    "request_message.value,",
                    '__import__("struct").unpack("<f", __import__("struct").pack("<f", '
                    "request_message.value))[0],",
                ),
            ),
        ),
    ),
    Kind(
        "metric-timestamp-late",
        "every metric point is stored one second later than the client logged it (applied with a delay)",
        Layer.SERVER,
        Change.DELAYED,
        ("metric_history",),
        (
            Edit(
                HANDLERS,
                _LOG_METRIC,
                _LOG_METRIC.replace("request_message.timestamp,", "request_message.timestamp + 1000,"),
            ),
        ),
    ),
    Kind(
        "tag-overwrite-ignored",
        "set_tag on a key that already exists answers 200 but keeps the old value (first write wins)",
        Layer.SERVER,
        Change.DROPPED,
        ("tags_and_status",),
        (
            Edit(
                HANDLERS,
                _SET_TAG,
                _SET_TAG.replace(
                    "    _get_tracking_store().set_tag(run_id, tag)\n",
                    "    if tag.key not in _get_tracking_store().get_run(run_id).data.tags:\n"
                    "        _get_tracking_store().set_tag(run_id, tag)\n",
                ),
            ),
        ),
    ),
    Kind(
        "failed-run-finished",
        "a run terminated as FAILED (or KILLED) is stored as FINISHED",
        Layer.SERVER,
        Change.CHANGED,
        ("tags_and_status",),
        (
            Edit(
                HANDLERS,
                '    status = request_message.status if request_message.HasField("status") else None\n',
                "    status = min(request_message.status, 3)"
                ' if request_message.HasField("status") else None\n',
            ),
        ),
    ),
    Kind(
        "get-run-param-missing",
        "get_run of a run with several params leaves out its last param",
        Layer.SERVER,
        Change.DROPPED,
        ("quickstart",),
        (
            Edit(
                HANDLERS,
                "    response_message.run.MergeFrom(_get_tracking_store().get_run(run_id).to_proto())\n",
                "    response_message.run.MergeFrom(_get_tracking_store().get_run(run_id).to_proto())\n"
                "    if len(response_message.run.data.params) > 1:\n"
                "        del response_message.run.data.params[-1]\n",
            ),
        ),
    ),
    Kind(
        "search-runs-reversed",
        "search_runs returns each page in the reverse of the requested order",
        Layer.SERVER,
        Change.REORDERED,
        ("search",),
        (
            Edit(
                HANDLERS,
                "    response_message.runs.extend([r.to_proto() for r in run_entities])\n",
                "    response_message.runs.extend([r.to_proto() for r in reversed(run_entities)])\n",
            ),
        ),
    ),
    Kind(
        "search-runs-last-page-dropped",
        "search_runs pagination stops after the second page: later runs are never returned",
        Layer.SERVER,
        Change.DROPPED,
        ("search",),
        (
            Edit(
                HANDLERS,
                "    if run_entities.token:\n        response_message.next_page_token = run_entities.token\n",
                "    if run_entities.token and not request_message.page_token:\n"
                "        response_message.next_page_token = run_entities.token\n",
            ),
        ),
    ),
    Kind(
        "experiment-rename-ignored",
        "rename_experiment answers 200 but the experiment keeps its old name",
        Layer.SERVER,
        Change.DROPPED,
        ("experiment_lifecycle",),
        (Edit(HANDLERS, "    if request_message.new_name:\n", "    if not request_message.new_name:\n"),),
    ),
    Kind(
        "metric-history-500",
        "get_metric_history answers HTTP 500 (an AttributeError in the handler) for every run",
        Layer.SERVER,
        Change.ERRORED,
        ("metric_history",),
        (
            Edit(
                HANDLERS,
                "    if next_page_token := metric_entities.token:\n",
                "    if next_page_token := metric_entities.next_token:\n",
            ),
        ),
    ),
    Kind(
        "artifact-upload-crlf",
        "text artifacts uploaded through the server's artifact proxy are stored with CRLF line endings",
        Layer.SERVER,
        Change.CHANGED,
        ("quickstart",),
        (
            Edit(  # 3.x serves /mlflow-artifacts through FastAPI, not the Flask handler of the same name
                ARTIFACT_ROUTER,
                "            await artifact_repo.log_artifact_from_async_stream(\n"
                "                request.stream(),\n",
                "            await artifact_repo.log_artifact_from_async_stream(\n"
                '                (c.replace(b"\\n", b"\\r\\n") async for c in request.stream()),\n',
            ),
        ),
    ),
    Kind(
        "latest-metric-last-logged",
        "a run's latest metric is the last value logged, not the value at the highest step",
        Layer.STORE,
        Change.CHANGED,
        ("metric_history",),
        (
            Edit(
                SQL_STORE,
                "            return (metric_a.step, metric_a.timestamp, metric_a.value) > (\n",
                "            return True or (metric_a.step, metric_a.timestamp, metric_a.value) > (\n",
                ALL_WHEELS,
            ),
        ),
    ),
    Kind(
        "client-param-truncated",
        "the client library cuts param values to 250 characters before sending them",
        Layer.CLIENT,
        Change.CHANGED,
        ("long_values",),
        (
            Edit(
                REST_STORE,
                "LogParam(run_uuid=run_id, run_id=run_id, key=param.key, value=param.value)",
                "LogParam(run_uuid=run_id, run_id=run_id, key=param.key, value=param.value[:250])",
                ALL_WHEELS,
            ),
        ),
    ),
    Kind(
        "client-metric-timestamp-seconds",
        "the client library sends metric timestamps in seconds instead of milliseconds",
        Layer.CLIENT,
        Change.CHANGED,
        ("metric_history",),
        (
            Edit(
                REST_STORE,
                "                timestamp=metric.timestamp,\n                step=metric.step,\n",
                "                timestamp=metric.timestamp // 1000,\n                step=metric.step,\n",
                ALL_WHEELS,
            ),
        ),
    ),
    Kind(
        "client-history-drops-last",
        "the client library reads every metric history without its last point (an off-by-one)",
        Layer.CLIENT,
        Change.DROPPED,
        ("metric_history",),
        (
            Edit(
                REST_STORE,
                "        metric_history = [Metric.from_proto(metric) for metric in response_proto.metrics]\n",
                "        metric_history = [Metric.from_proto(metric) for metric in response_proto.metrics]"
                "[:-1]\n",
                ALL_WHEELS,
            ),
        ),
    ),
    Kind(
        "migration-params-truncated",
        "`mlflow db upgrade` cuts every stored param value to 250 characters (a column shrunk, data in it)",
        Layer.MIGRATION,
        Change.CHANGED,
        ("long_values",),
        (
            Edit(
                HEAD_MIGRATION,
                "    _cancel_non_terminal_jobs()\n",
                "    _cancel_non_terminal_jobs()\n"
                '    op.execute("UPDATE params SET value = substr(value, 1, 250)")\n',
                ALL_WHEELS,
            ),
        ),
    ),
    Kind(
        "migration-latest-metrics-lost",
        "`mlflow db upgrade` empties latest_metrics: runs logged before it show no metrics",
        Layer.MIGRATION,
        Change.DROPPED,
        ("quickstart",),
        (
            Edit(
                PREV_MIGRATION,
                "    _cleanup_legacy_analytics()\n    _drop_dimension_attributes()\n",
                "    _cleanup_legacy_analytics()\n"
                '    op.execute("DELETE FROM latest_metrics")\n'
                "    _drop_dimension_attributes()\n",
                ALL_WHEELS,
            ),
        ),
    ),
)

CONTROL = Kind("control", "nothing: the release's own wheels, rebuilt", Layer.SERVER, Change.CHANGED, ())


def kinds_by_id() -> dict[str, Kind]:
    return {k.id: k for k in KINDS}


# --- building candidates ---------------------------------------------------------------------------------


def wheel_names(base: str) -> tuple[str, ...]:
    """The distributions one MLflow build consists of: mlflow-tracing exists from 3.0 on."""
    return ALL_WHEELS if Version(base).major >= 3 else SERVER_WHEELS


def _dist(wheel: Path) -> str:
    return wheel.name.split("-")[0].replace("_", "-").lower()


def download_release(base: str, root: Path | None = None) -> Path:
    """The release's own wheels from the index (no dependencies), cached: a directory of .whl files."""
    root = root or cache_root() / "mutants"
    dest = root / "wheels" / base
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"wheels-{base}.lock")):
        if dest.is_dir() and sorted(_dist(w) for w in dest.glob("*.whl")) == sorted(wheel_names(base)):
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f"wheels-{base}-", dir=root))
        try:
            subprocess.run(
                [*_pip(base), "download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d", str(tmp)]
                + [f"{name}=={base}" for name in wheel_names(base)],
                check=True,
                timeout=DOWNLOAD_TIMEOUT_S,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _pip(base: str) -> list[str]:
    """A pip to download with: this interpreter's if it has one, else the base release's cached env's."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    from harness.envs import EnvCache
    from harness.specs import parse_spec

    cache = EnvCache()
    env = cache.ensure(parse_spec(base), cache.root / f"mutants-{base}.log")
    return [str(env.interpreter), "-m", "pip"]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def patch_wheel(src: Path, dst: Path, edits: Sequence[Edit]) -> list[str]:
    """Copy wheel ``src`` to ``dst`` with ``edits`` applied to the files it ships (each find text must occur
    exactly once) and RECORD updated to match; returns the paths changed. Entries keep their zip metadata, so
    the same edits give the same bytes every time."""
    dist = _dist(src)
    changed: dict[str, bytes] = {}
    with zipfile.ZipFile(src) as zin:
        names = set(zin.namelist())
        for edit in edits:
            if (edit.path in names) != (dist in edit.wheels):
                where = "ships" if edit.path in names else "does not ship"
                raise MutantError(f"{src.name} {where} {edit.path}; the table says {', '.join(edit.wheels)}")
            if edit.path not in names:
                continue
            text = changed[edit.path].decode() if edit.path in changed else zin.read(edit.path).decode()
            count = text.count(edit.find)
            if count != 1:
                raise MutantError(
                    f"{src.name}:{edit.path}: the text to replace occurs {count} times, not once"
                )
            changed[edit.path] = text.replace(edit.find, edit.replace).encode()
        records = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise MutantError(f"{src.name}: {len(records)} RECORD files")
        record = records[0]
        tmp = dst.with_name(dst.name + ".part")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
                for item in zin.infolist():
                    data = changed.get(item.filename)
                    if data is None:
                        data = zin.read(item)
                    if item.filename == record and changed:
                        data = _rewrite_record(data.decode(), changed).encode()
                    zout.writestr(item, data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    tmp.replace(dst)
    return sorted(changed)


def _rewrite_record(text: str, changed: dict[str, bytes]) -> str:
    lines = []
    for line in text.splitlines():
        path = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if path in changed:
            line = f"{path},{_record_hash(changed[path])},{len(changed[path])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def build_candidate(base: str, edits: Sequence[Edit], out: Path, *, wheels: Path | None = None) -> Path:
    """A candidate dir (for `gate --candidate DIR`): release ``base``'s wheels with ``edits`` applied. Every
    edit must change every wheel the table names; ``wheels`` is a dir of the release's wheels (default: the
    index's, downloaded and cached)."""
    source = wheels or download_release(base)
    out.mkdir(parents=True, exist_ok=True)
    touched: Counter[Edit] = Counter()
    for wheel in sorted(source.glob("*.whl")):
        done = patch_wheel(wheel, out / wheel.name, edits)
        touched.update(e for e in edits if e.path in done)
    for edit in edits:
        if touched[edit] != len(edit.wheels):
            raise MutantError(
                f"{edit.path}: changed in {touched[edit]} wheel(s), expected {len(edit.wheels)}"
            )
    return out


def candidate_for(kind: Kind, base: str, root: Path | None = None) -> Path:
    """The cached candidate dir of one kind (or the control) on one base release, built if missing."""
    root = root or cache_root() / "mutants"
    final = root / base / f"{kind.id}-{kind.digest()}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind.id}-", dir=final.parent))
    try:
        build_candidate(base, kind.edits, tmp)
        try:
            tmp.rename(final)
        except OSError:  # built meanwhile by another runner: theirs is the same bytes
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --- running the suite -----------------------------------------------------------------------------------


CheckKey = tuple[str, str, str, str, str, str]  # cell id, phase, check, scenario, client, server
Finding = tuple[CheckKey, str]  # one thing wrong in one check: the check, and its normalised text
BAD = ("fail", "error")


@dataclass
class Outcome:
    kind: str
    verdict: str  # caught, missed, error, pass (the control), fail (the control)
    line: str
    seconds: float
    bad: frozenset[Finding] = frozenset()  # what the run found wrong (the control's is subtracted)


@dataclass(frozen=True)
class Found:
    """One thing a gate run found wrong: a problem of a `fail`/`error` check (or the check's detail)."""

    key: CheckKey
    status: str  # the problem's own status (fail or error)
    text: str
    check: dict[str, Any]

    @property
    def finding(self) -> Finding:
        return (self.key, _normalise(self.text))


def _normalise(text: str) -> str:
    """What a difference says without the values that change from run to run (ids, names with a run's token,
    timestamps, ports, temp paths): the field and the kind of difference. Coarse on purpose: a mutant's
    finding that merely resembles one of the control's is not counted, never the other way round."""
    text = re.sub(r"/tmp/\S+", "<path>", text)
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "<s>", text)
    text = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", text)
    return re.sub(r"\d+", "<n>", text)


def _who(check: dict[str, Any]) -> str:
    parts = [check.get("scenario") or ""]
    if check.get("client") or check.get("server"):
        parts.append(f"(client {check.get('client') or '-'} server {check.get('server') or '-'})")
    return " ".join(p for p in parts if p)


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _key(cell: dict[str, Any], check: dict[str, Any]) -> CheckKey:
    return (str(cell.get("id", "")), check["phase"], check["name"], check.get("scenario") or "",
            check.get("client") or "", check.get("server") or "")  # fmt: skip


def found(results: dict[str, Any] | None) -> list[Found]:
    """Everything a run found wrong: each undeclared problem of each `fail`/`error` check, or the check's
    detail when it lists no problems."""
    out = []
    for cell in (results or {}).get("cells", []):
        for check in cell.get("checks", []):
            if check["status"] not in BAD:
                continue
            key = _key(cell, check)
            problems = [
                p for p in check.get("problems") or () if p["status"] in BAD and not p.get("expected")
            ]
            if problems:
                out += [Found(key, p["status"], p["text"], check) for p in problems]
            else:
                out.append(Found(key, check["status"], check.get("detail", ""), check))
    return out


def classify(
    code: int, results: dict[str, Any] | None, *, control: bool, control_bad: frozenset[Finding] = frozenset()
) -> tuple[str, str]:
    """(verdict, text) from the gate's exit code and results.json. A mutant is caught only when the gate
    exits 1 with a `fail` check holding a `fail` problem that the control run did not have too (same check,
    same difference); `error`s never count."""
    checks = [c for cell in (results or {}).get("cells", []) for c in cell.get("checks", [])]
    statuses = Counter(c["status"] for c in checks)
    summary = ", ".join(f"{s}={n}" for s, n in sorted(statuses.items())) or "no checks"
    wrong = found(results)
    fails = [f for f in wrong if f.status == "fail" and f.check["status"] == "fail"]
    new = [f for f in fails if f.finding not in control_bad]
    errors = [f for f in wrong if f.status == "error"]
    if results is None:
        return ("fail" if control else "error"), f"ERROR (the gate exited {code} without results.json)"
    if control:
        if code == 0:
            return "pass", f"pass (statuses: {summary})"
        if not wrong:
            return "fail", f"FAIL (gate exited {code}; statuses: {summary})"
        return "fail", f"FAIL: {_describe(wrong[0])} (+{len(wrong) - 1} more; statuses: {summary})"
    if code == 1 and new:
        more = f" (+{len(new) - 1} more)" if len(new) > 1 else ""
        return "caught", f"caught by {_describe(new[0], status=False)}{more}"
    if fails:
        return "missed", (
            f"MISSED (its only fails are ones the control has too, e.g. {_describe(fails[0])}; "
            f"statuses: {summary})"
        )
    if errors:
        return "error", f"ERROR (only infrastructure errors: {_describe(errors[0])}; statuses: {summary})"
    return "missed", f"MISSED (statuses: {summary}; gate exit {code})"


def _describe(f: Found, *, status: bool = True) -> str:
    c = f.check
    head = f"{f.status} " if status else ""
    return f"{head}{c['phase']}/{c['name']} {_who(c)}: {_one_line(f.text)}"


@dataclass(frozen=True)
class Options:
    """How each gate run of the suite is made: the release mutated, the gate's baseline and oldest version
    (None: the gate's own, harness/data/matrix.toml), where runs write."""

    results_dir: Path
    base: str = "3.17.2"
    baseline: str = "2.22.5"
    jobs: int = 2
    oldest: str | None = None


def gate_command(candidate: Path, kind: Kind, scenarios: Sequence[str], opts: Options) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "gate", "--candidate", str(candidate),
            "--baseline", opts.baseline, "--backend", "sqlite", "--runtime", "local",
            "--scenarios", ",".join(scenarios), "--results-dir", str(opts.results_dir / kind.id),
            "-n", str(opts.jobs), *(["--oldest", opts.oldest] if opts.oldest else [])]  # fmt: skip


def run_kind(
    kind: Kind,
    scenarios: Sequence[str],
    opts: Options,
    *,
    control: bool = False,
    control_bad: frozenset[Finding] = frozenset(),
) -> Outcome:
    """Build ``kind``'s candidate (cached), gate it in a child process, and classify what the gate said."""
    started = time.monotonic()
    try:
        candidate = candidate_for(kind, opts.base)
    except (MutantError, subprocess.SubprocessError, OSError) as exc:
        seconds = time.monotonic() - started
        return Outcome(kind.id, "fail" if control else "error", f"ERROR (cannot build: {exc})", seconds)
    log = opts.results_dir / f"{kind.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        try:
            code = subprocess.run(
                gate_command(candidate, kind, scenarios, opts),
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=GATE_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    results_file = opts.results_dir / kind.id / "latest" / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else None
    verdict, text = classify(code, results, control=control, control_bad=control_bad)
    bad = frozenset(f.finding for f in found(results))
    return Outcome(kind.id, verdict, text, time.monotonic() - started, bad)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", help="comma-separated kind ids (default: all); `--list` shows them")
    p.add_argument("--base", default="3.17.2", help="the release whose wheels are mutated (default 3.17.2)")
    p.add_argument("--baseline", default="2.22.5", help="the gate's --baseline (default 2.22.5)")
    p.add_argument("--oldest", help="the gate's --oldest (default: the gate's, the oldest supported)")
    p.add_argument("--results-dir", type=Path, help="where each gate run writes (default: a temp dir)")
    p.add_argument("-n", "--jobs", type=int, default=2, help="the gate's -n (default 2)")
    p.add_argument("--list", action="store_true", help="print the table and exit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    table = kinds_by_id()
    if args.list:
        for k in KINDS:
            files = ", ".join(sorted({e.path for e in k.edits}))
            print(
                f"{k.id}: [{k.layer.value}; {k.change.value}] {k.breaks} ({files}; {','.join(k.scenarios)})"
            )
        return 0
    wanted = [w.strip() for w in args.kinds.split(",") if w.strip()] if args.kinds else list(table)
    unknown = [w for w in wanted if w not in table]
    if unknown or not wanted:
        print(f"mutants: unknown kind(s) {', '.join(unknown) or '(none given)'}; see --list", file=sys.stderr)
        return 2
    try:
        Version(args.base)
    except ValueError:
        print(f"mutants: --base {args.base!r} is not a release version like 3.17.2", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"mutants: -n must be at least 1, not {args.jobs}", file=sys.stderr)
        return 2
    results_dir = args.results_dir or Path(tempfile.mkdtemp(prefix="mlflow-compat-mutants-"))
    opts = Options(results_dir.resolve(), args.base, args.baseline, args.jobs, args.oldest)
    print(
        f"mutants: base {opts.base}, baseline {opts.baseline}, results under {opts.results_dir}", flush=True
    )
    kinds = [table[w] for w in wanted]
    outcomes: list[Outcome] = []
    scenarios = sorted({s for k in kinds for s in k.scenarios})
    control = run_kind(CONTROL, scenarios, opts, control=True)
    print(f"control ({','.join(scenarios)}) {control.seconds:.0f}s: {control.line}", flush=True)
    for kind in kinds:
        outcome = run_kind(kind, kind.scenarios, opts, control_bad=control.bad)
        outcomes.append(outcome)
        print(f"{kind.id} [{kind.layer.value}; {kind.change.value}; {','.join(kind.scenarios)}] "
              f"{outcome.seconds:.0f}s: {outcome.line}", flush=True)  # fmt: skip
    caught = sum(o.verdict == "caught" for o in outcomes)
    control_ok = control.verdict == "pass"
    print(
        f"mutations: caught={caught}/{len(outcomes)} control={'pass' if control_ok else 'fail'}", flush=True
    )
    return 0 if caught == len(outcomes) and control_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
