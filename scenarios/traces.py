"""Traces (2.14+): a trace with a root span and a nested child span, each with inputs, outputs and attributes,
and a trace tag, logged through MlflowClient to the tracking server; read back by id in full (the trace's
id, experiment, status and user tags; every span's name, parent, inputs, outputs, user attributes and
status) and found again by search_traces. Not a default scenario: `--scenarios traces` (or a cell of its
own in the tests) runs it.

Traces are exported synchronously (MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false, a documented setting; clients
without it ignore it): with the default background export, a 3.17 client sends a trace's spans
(`log_spans`, kept in the spans table) and its info (`start_trace`, then the traces.json artifact unless the
server already holds the spans) in whatever order its export threads run, so whether an older client can
read the trace changed from one run to the next. Synchronously the spans always go first: the same store
every time."""

import os

import mlflow

from common import expect, state_name, trace_id, user_tags

REQUIRES = ("tracing",)
DEFAULT = False




def _spans(trace):
    by_id = {s.span_id: s.name for s in trace.data.spans}
    spans = {}
    for s in trace.data.spans:
        spans[s.name] = {
            "parent": by_id.get(s.parent_id),
            "inputs": s.inputs,
            "outputs": s.outputs,
            "attributes": {k: v for k, v in (s.attributes or {}).items() if not k.startswith("mlflow.")},
            "status": state_name(s.status.status_code),
        }
    return spans


def _snapshot(client, record):
    trace = client.get_trace(record["trace_id"])
    info = trace.info
    status = getattr(info, "state", None) or getattr(info, "status", None)
    found = client.search_traces(experiment_ids=[record["experiment_id"]])
    return {
        "trace": {
            "trace_id": trace_id(info),
            "experiment_id": str(info.experiment_id),
            "status": state_name(status),
            "tags": user_tags(dict(info.tags)),
        },
        "spans": _spans(trace),
        "found_by_search": any(trace_id(t.info) == record["trace_id"] for t in found),
    }


def sync_export():
    """Export traces in the calling thread (read when the process's exporter is made, at its first trace)."""
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"


def write(ctx):
    sync_export()
    client = ctx.client
    # One experiment per trace: search_traces loads every trace it finds, and a client that cannot load one
    # (a 2.x client, a trace written by 3.x) would fail on a record that is not its own.
    experiment_id = ctx.experiment(f"compat-traces-{ctx.token}")
    name = f"compat-trace-{ctx.token}"
    root = client.start_trace(name, inputs={"question": "why"}, attributes={"team": "platform"},
                              tags={"owner": "ml"}, experiment_id=experiment_id)  # fmt: skip
    tid = trace_id(root)
    child = client.start_span("retrieve", tid, root.span_id, inputs={"k": 3},
                              attributes={"index": "docs"})  # fmt: skip
    client.end_span(tid, child.span_id, outputs={"docs": ["a", "b"]})
    client.end_trace(tid, outputs={"answer": "because"})
    if hasattr(mlflow, "flush_trace_async_logging"):  # 3.x exports traces in the background
        mlflow.flush_trace_async_logging()
    record = {"trace_id": tid, "experiment_id": experiment_id}
    snap = _snapshot(client, record)
    sent = {
        "trace": {"trace_id": tid, "experiment_id": str(experiment_id), "status": "OK",
                  "tags": {"owner": "ml"}},
        "spans": {
            name: {"parent": None, "inputs": {"question": "why"}, "outputs": {"answer": "because"},
                   "attributes": {"team": "platform"}, "status": "OK"},
            "retrieve": {"parent": name, "inputs": {"k": 3}, "outputs": {"docs": ["a", "b"]},
                         "attributes": {"index": "docs"}, "status": "OK"},
        },
        "found_by_search": True,
    }  # fmt: skip
    # The spans are exactly these two: the whole dict is what was sent, not laid over what came back.
    snap = expect({k: v for k, v in snap.items() if k != "spans"}, sent)
    return {**record, "name": name, **snap}


def read(ctx, record):
    return {**record, "name": record["name"], **_snapshot(ctx.client, record)}
