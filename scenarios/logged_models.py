"""Logged models (3.0+): a model created in an experiment with params and tags, linked to its source run,
finalized as READY; read back by id and found again by search_logged_models."""

from mlflow.entities import LoggedModelStatus

from common import user_tags

REQUIRES = ("logged_models",)


def _status(status):
    return getattr(status, "name", None) or str(status)


def write(ctx):
    client = ctx.client
    experiment_id = ctx.experiment("compat-logged-models")
    run = client.create_run(experiment_id, tags=ctx.tags)
    model = client.create_logged_model(
        experiment_id,
        name=f"compat-lm-{ctx.token}",
        source_run_id=run.info.run_id,
        tags={"owner": "platform"},
        params={"alpha": "0.5", "layers": "3"},
    )
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.set_terminated(run.info.run_id)
    return {
        "model_id": model.model_id,
        "experiment_id": experiment_id,
        "name": f"compat-lm-{ctx.token}",
        "source_run_id": run.info.run_id,
        "params": {"alpha": "0.5", "layers": "3"},
        "tags": {"owner": "platform"},
        "status": "READY",
        "found_by_search": True,
    }


def read(ctx, record):
    client = ctx.client
    model = client.get_logged_model(record["model_id"])
    found = client.search_logged_models(experiment_ids=[record["experiment_id"]])
    return {
        "model_id": model.model_id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "source_run_id": model.source_run_id,
        "params": dict(model.params),
        "tags": user_tags(model.tags),
        "status": _status(model.status),
        "found_by_search": any(m.model_id == record["model_id"] for m in found),
    }
