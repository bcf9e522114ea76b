"""Tags and descriptions on experiments and runs, a tag overwritten and one deleted, and the three run
statuses a user sees: a run left running, one finished, one failed. Experiment and runs compared in full."""

from common import (
    ABSENT,
    DESCRIPTION,
    Window,
    expected_experiment,
    expected_run,
    snapshot_experiment,
    snapshot_run,
)

REQUIRES = ()


def write(ctx):
    window = Window()
    client = ctx.client
    experiment_id = client.create_experiment(f"compat-tags-{ctx.token}")
    client.set_experiment_tag(experiment_id, "team", "platform")
    client.set_experiment_tag(experiment_id, DESCRIPTION, "experiment description, with unicode: é ✓")
    runs = {}
    for status in ("RUNNING", "FINISHED", "FAILED"):
        run_id = client.create_run(experiment_id, tags=ctx.tags).info.run_id
        client.set_tag(run_id, DESCRIPTION, f"a {status.lower()} run")
        client.set_tag(run_id, "stage", "draft")
        client.set_tag(run_id, "stage", "final")  # overwritten: the last value wins
        client.set_tag(run_id, "scratch", "to be deleted")
        client.delete_tag(run_id, "scratch")
        if status != "RUNNING":
            client.set_terminated(run_id, status=status)
        tags = {**ctx.tags, DESCRIPTION: f"a {status.lower()} run", "stage": "final", "scratch": ABSENT}
        info = {"status": status, "experiment_id": experiment_id}
        if status == "RUNNING":
            info["end_time"] = None
        runs[run_id] = expected_run(client, run_id, window, {"info": info, "tags": tags})
    experiment_tags = {"team": "platform", DESCRIPTION: "experiment description, with unicode: é ✓"}
    experiment = expected_experiment(client, experiment_id, window, {"tags": experiment_tags})
    return {"experiment_id": experiment_id, "experiment": experiment, "runs": runs, "window": window.close()}


def read(ctx, record):
    client = ctx.client
    return {
        **record,
        "experiment": snapshot_experiment(client, record["experiment_id"]),
        "runs": {run_id: snapshot_run(client, run_id) for run_id in record["runs"]},
    }
