"""Logged models (3.0+): a model created in an experiment with params, tags and a metric, linked to its
source run, finalized as READY; read back by id in full (params, metrics, tags, status, model type,
artifact location, times) and found again by search_logged_models."""

from mlflow.entities import LoggedModelStatus

from common import Window, check_registry_times, expect, num, snapshot_logged_model, snapshot_run

REQUIRES = ("logged_models",)
TIMESTAMP = 1_700_000_000_000


def _snapshot(client, record):
    found = client.search_logged_models(experiment_ids=[record["experiment_id"]])
    return {
        "model": snapshot_logged_model(client.get_logged_model(record["model_id"])),
        "found_by_search": any(m.model_id == record["model_id"] for m in found),
        "source_run": snapshot_run(client, record["source_run_id"]),
    }


def write(ctx):
    window = Window()
    client = ctx.client
    experiment_id = ctx.experiment("compat-logged-models")
    run = client.create_run(experiment_id, tags=ctx.tags)
    run_id = run.info.run_id
    name = f"compat-lm-{ctx.token}"
    model = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=run_id,
        tags={"owner": "platform"},
        params={"alpha": "0.5", "layers": "3"},
        model_type="compat-test",
    )
    client.log_metric(run_id, "rmse", 0.25, timestamp=TIMESTAMP, step=1, model_id=model.model_id)
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.set_terminated(run_id)
    record = {"model_id": model.model_id, "experiment_id": experiment_id, "source_run_id": run_id}
    snap = _snapshot(client, record)
    check_registry_times(snap["model"], window)
    sent = {
        "model_id": model.model_id,
        "experiment_id": experiment_id,
        "name": name,
        "source_run_id": run_id,
        "model_type": "compat-test",
        "params": {"alpha": "0.5", "layers": "3"},
        "tags": {"owner": "platform"},
        "status": "READY",
        "metrics": [["rmse", 1, TIMESTAMP, num(0.25), run_id]],
    }
    snap["model"] = expect(snap["model"], sent)
    snap["found_by_search"] = True
    run_sent = {"info": {"status": "FINISHED"}, "tags": ctx.tags, "metrics": {"rmse": num(0.25)},
                "metric_history": {"rmse": [[1, TIMESTAMP, num(0.25)]]}}  # fmt: skip
    snap["source_run"] = expect(snap["source_run"], run_sent)
    window.check("source run start", snap["source_run"]["info"].get("start_time"))
    return {**record, "name": name, **snap, "window": window.close()}


def read(ctx, record):
    return {**record, **_snapshot(ctx.client, record)}
