"""Assessments on traces (3.2+ against the open-source tracking server): a trace with a root and a child
span, a feedback from an LLM judge (a number, a rationale, metadata) overridden by a human's (the judge's is
then invalid), and an expectation (a JSON object) on the child span. Read back in full by every client that
has the API: each assessment's name, kind (feedback or expectation), value, source, rationale, metadata,
span, validity, what it overrides and its times, both from the trace (`get_trace(...).info.assessments`)
and one by one (`get_assessment`). Not a default scenario: `--scenarios assessments` runs it.

Before 3.2 the clients have `log_feedback`/`log_expectation` but refuse them off Databricks ("This API is
currently only available for Databricks Managed MLflow"), and servers before 3.2 have no assessments table:
the capability `assessments` (harness/data/versions.toml) keeps those clients out; a 3.2+ client on an older
server fails, and the declaration says so. The traces scenario covers spans; this one what assessments add.
"""

import json
import os

import mlflow
from mlflow.entities import AssessmentSource

from common import Window, expect, state_name, trace_id

REQUIRES = ("assessments",)
DEFAULT = False

JUDGE = {"source_type": "LLM_JUDGE", "source_id": "judge-v1"}
HUMAN = {"source_type": "HUMAN", "source_id": "alice@example.com"}




def _value(a):
    if getattr(a, "feedback", None) is not None:
        return "feedback", a.feedback.value
    return "expectation", a.expectation.value


def _assessment(a, span_names):
    kind, value = _value(a)
    return {
        "assessment_id": a.assessment_id,
        "name": a.name,
        "kind": kind,
        "value": json.loads(json.dumps(value)),
        "source": {"source_type": state_name(a.source.source_type), "source_id": a.source.source_id},
        "rationale": a.rationale,
        "metadata": dict(a.metadata or {}),
        "span": span_names.get(a.span_id) if a.span_id else None,
        "valid": a.valid,
        "overrides": a.overrides,
        "create_time_ms": a.create_time_ms,
        "last_update_time_ms": a.last_update_time_ms,
    }


def _snapshot(client, record):
    trace = client.get_trace(record["trace_id"])
    span_names = {s.span_id: s.name for s in trace.data.spans}
    on_trace = {}
    for a in trace.info.assessments or []:
        on_trace[a.assessment_id] = _assessment(a, span_names)
    by_id = {}
    for role, assessment_id in sorted(record["assessments"].items()):
        by_id[role] = _assessment(mlflow.get_assessment(record["trace_id"], assessment_id), span_names)
    roles = {v: k for k, v in record["assessments"].items()}
    return {
        "trace_id": trace_id(trace.info),
        "on_trace": {roles.get(k, k): v for k, v in sorted(on_trace.items())},
        "by_id": by_id,
    }


def write(ctx):
    # Synchronous trace export, as in the traces scenario (see there): the same store every run.
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    window = Window()
    client = ctx.client
    experiment_id = ctx.experiment(f"compat-assessments-{ctx.token}")
    root = client.start_trace(f"compat-assessed-{ctx.token}", inputs={"question": "why"},
                              experiment_id=experiment_id)  # fmt: skip
    tid = trace_id(root)
    child = client.start_span("retrieve", tid, root.span_id, inputs={"k": 3})
    client.end_span(tid, child.span_id, outputs={"docs": ["a", "b"]})
    client.end_trace(tid, outputs={"answer": "because"})
    mlflow.flush_trace_async_logging()
    judged = mlflow.log_feedback(trace_id=tid, name="relevance", value=0.75, rationale="mostly on topic",
                                 source=AssessmentSource(**JUDGE), metadata={"round": "1"})  # fmt: skip
    override = mlflow.override_feedback(trace_id=tid, assessment_id=judged.assessment_id, value=1.0,
                                        rationale="fully on topic",
                                        source=AssessmentSource(**HUMAN))  # fmt: skip
    expected = mlflow.log_expectation(trace_id=tid, name="expected_docs", value={"docs": ["a", "b"]},
                                      source=AssessmentSource(**HUMAN), span_id=child.span_id)  # fmt: skip
    ids = {"judged": judged.assessment_id, "override": override.assessment_id,
           "expected": expected.assessment_id}  # fmt: skip
    record = {"trace_id": tid, "experiment_id": experiment_id, "assessments": ids}
    snap = _snapshot(client, record)
    for role, a in snap["by_id"].items():
        window.check(f"assessment {role} create_time_ms", a["create_time_ms"])
        window.check(f"assessment {role} last_update_time_ms", a["last_update_time_ms"])
    common = {"rationale": None, "metadata": {}, "span": None, "overrides": None}
    sent = {
        "judged": {**common, "assessment_id": ids["judged"], "name": "relevance", "kind": "feedback",
                   "value": 0.75, "source": JUDGE, "rationale": "mostly on topic", "metadata": {"round": "1"},
                   "valid": False},
        "override": {**common, "assessment_id": ids["override"], "name": "relevance", "kind": "feedback",
                     "value": 1.0, "source": HUMAN, "rationale": "fully on topic", "valid": True,
                     "overrides": ids["judged"]},
        "expected": {**common, "assessment_id": ids["expected"], "name": "expected_docs",
                     "kind": "expectation", "value": {"docs": ["a", "b"]}, "source": HUMAN,
                     "span": "retrieve"},
    }  # fmt: skip
    # What was sent replaces each assessment whole (times excepted: the server's), on the trace and by id;
    # the trace carries exactly these three.
    times = ("create_time_ms", "last_update_time_ms")
    expected_by_role = {role: {**{t: snap["by_id"][role][t] for t in times}, **sent[role]} for role in sent}
    # valid: the expectation's validity is whatever the server keeps for it (not sent).
    expected_by_role["expected"]["valid"] = snap["by_id"]["expected"]["valid"]
    snap = expect(snap, {"trace_id": tid})
    snap["by_id"] = expected_by_role
    snap["on_trace"] = dict(expected_by_role)
    return {**record, **snap, "window": window.close()}


def read(ctx, record):
    return {**record, **_snapshot(ctx.client, record)}
