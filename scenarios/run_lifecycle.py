"""A run's life as users drive it: a run name and start time set at creation, renamed, terminated with an
explicit end time; a run deleted and restored; a run deleted and left deleted (still readable by id, and
found by a search for deleted runs only). Every run compared in full."""

from mlflow.entities import ViewType

from common import Window, expected_run, run_entity, snapshot_run

REQUIRES = ()

START = 1_700_000_000_000
END = START + 60_000


def write(ctx):
    window = Window()
    client = ctx.client
    experiment_id = client.create_experiment(f"compat-run-life-{ctx.token}")
    name = f"compat-named-{ctx.token}"
    named = client.create_run(experiment_id, start_time=START, tags=ctx.tags, run_name=name).info.run_id
    client.update_run(named, name=f"{name}-renamed")
    client.set_terminated(named, "FINISHED", end_time=END)
    restored = client.create_run(experiment_id, tags=ctx.tags).info.run_id
    client.set_terminated(restored)
    client.delete_run(restored)
    client.restore_run(restored)
    deleted = client.create_run(experiment_id, tags=ctx.tags).info.run_id
    client.set_terminated(deleted, "KILLED")
    client.delete_run(deleted)
    renamed = f"{name}-renamed"
    sent = {
        named: {
            "info": {"run_name": renamed, "start_time": START, "end_time": END, "status": "FINISHED"},
            "tags": {**ctx.tags, "mlflow.runName": renamed},
        },
        restored: {"info": {"lifecycle_stage": "active", "status": "FINISHED"}, "tags": ctx.tags},
        deleted: {"info": {"lifecycle_stage": "deleted", "status": "KILLED"}, "tags": ctx.tags},
    }
    runs = {}
    for run_id, explicit in sent.items():
        times = ("start_time", "end_time") if run_id == named else ()
        runs[run_id] = expected_run(client, run_id, window, explicit, explicit_times=times)
    return {
        "experiment_id": experiment_id,
        "runs": runs,
        "deleted_only": [deleted],
        "window": window.close(),
    }


def read(ctx, record):
    client = ctx.client
    found = client.search_runs([record["experiment_id"]], run_view_type=ViewType.DELETED_ONLY)
    return {
        **record,
        "runs": {run_id: snapshot_run(client, run_id) for run_id in record["runs"]},
        "deleted_only": sorted(run_entity(r)["info"]["run_id"] for r in found),
    }
