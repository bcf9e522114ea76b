"""Logged models (3.0+): a model created in an experiment with params, tags and two metrics linked to it (one
of them also to a dataset the source run took as input), linked to its source run, finalized as READY; read
back by id in full (params, metrics with the run, model and dataset each is linked to, tags, status, model
type, artifact location, times), found again by search_logged_models, and found by a search for the models
evaluated on that dataset with a metric filter."""

from mlflow.entities import Dataset, DatasetInput, LoggedModelStatus

from common import Window, check_registry_times, expect, num, snapshot_logged_model, snapshot_run

REQUIRES = ("logged_models",)
TIMESTAMP = 1_700_000_000_000
DATASET = {"name": "compat-eval", "digest": "d1g3st01", "source_type": "local",
           "source": '{"uri": "eval.csv"}'}  # fmt: skip


def _metric_links(model):
    """Each metric of a logged model with everything it is linked to: [key, step, value, run, model, dataset
    name, dataset digest], a multiset."""
    links = []
    for m in model.metrics or []:
        links.append([m.key, m.step, num(m.value), m.run_id, m.model_id, m.dataset_name, m.dataset_digest])
    return sorted(links, key=lambda p: (p[0], p[1], repr(p)))


def _snapshot(client, record):
    model = client.get_logged_model(record["model_id"])
    found = client.search_logged_models(experiment_ids=[record["experiment_id"]])
    # The experiment is shared by every client's records: each search is asked only about this record's model.
    on_dataset = [{"dataset_name": DATASET["name"], "dataset_digest": DATASET["digest"]}]
    experiments = [record["experiment_id"]]
    above, beyond = (
        client.search_logged_models(experiment_ids=experiments, filter_string=f, datasets=on_dataset)
        for f in ("metrics.accuracy > 0.5", "metrics.accuracy > 0.9")
    )
    return {
        "model": snapshot_logged_model(model),
        "metric_links": _metric_links(model),
        "found_by_search": any(m.model_id == record["model_id"] for m in found),
        # Found by its metric on the dataset; not found when the filter excludes its value.
        "found_by_dataset_metric": [
            any(m.model_id == record["model_id"] for m in r) for r in (above, beyond)
        ],
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
    client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**DATASET), tags=[])])
    client.log_metric(run_id, "accuracy", 0.875, timestamp=TIMESTAMP + 1, step=2, model_id=model.model_id,
                      dataset_name=DATASET["name"], dataset_digest=DATASET["digest"])  # fmt: skip
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
        "metrics": [
            ["accuracy", 2, TIMESTAMP + 1, num(0.875), run_id],
            ["rmse", 1, TIMESTAMP, num(0.25), run_id],
        ],
    }
    snap["model"] = expect(snap["model"], sent)
    mid = model.model_id
    snap["metric_links"] = [["accuracy", 2, num(0.875), run_id, mid, DATASET["name"], DATASET["digest"]],
                            ["rmse", 1, num(0.25), run_id, mid, None, None]]  # fmt: skip
    snap["found_by_search"] = True
    snap["found_by_dataset_metric"] = [True, False]
    run_sent = {"info": {"status": "FINISHED"}, "tags": ctx.tags,
                "metrics": {"rmse": num(0.25), "accuracy": num(0.875)},
                "metric_history": {"rmse": [[1, TIMESTAMP, num(0.25)]],
                                   "accuracy": [[2, TIMESTAMP + 1, num(0.875)]]}}  # fmt: skip
    snap["source_run"] = expect(snap["source_run"], run_sent)
    window.check("source run start", snap["source_run"]["info"].get("start_time"))
    return {**record, "name": name, **snap, "window": window.close()}


def read(ctx, record):
    return {**record, **_snapshot(ctx.client, record)}
