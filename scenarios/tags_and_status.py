"""Tags and descriptions on experiments and runs, a tag overwritten and one deleted, and the three run
statuses a user sees: a run left running, one finished, one failed."""

from common import DESCRIPTION, user_tags

REQUIRES = ()


def write(ctx):
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
        tags = {**ctx.tags, DESCRIPTION: f"a {status.lower()} run", "stage": "final"}
        runs[run_id] = {"status": status, "ended": status != "RUNNING", "tags": tags}
    return {
        "experiment_id": experiment_id,
        "experiment_tags": {"team": "platform", DESCRIPTION: "experiment description, with unicode: é ✓"},
        "runs": runs,
    }


def read(ctx, record):
    client = ctx.client
    runs = {}
    for run_id in record["runs"]:
        run = client.get_run(run_id)
        runs[run_id] = {
            "status": run.info.status,
            "ended": run.info.end_time is not None,
            "tags": user_tags(run.data.tags),
        }
    return {
        "experiment_id": record["experiment_id"],
        "experiment_tags": user_tags(client.get_experiment(record["experiment_id"]).tags),
        "runs": runs,
    }
