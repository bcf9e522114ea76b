"""A run's life as users drive it: a run name and start time set at creation, renamed, terminated with an
explicit end time; a run deleted and restored; a run deleted and left deleted (still readable by id, and
found by a search for deleted runs only). Every run compared in full.

A client without a run name API (capability `run_name_api`, harness/data/versions.toml: create_run(run_name=)
and update_run(name=) arrived in 1.30) names and renames the run the way those versions did, through its
`mlflow.runName` tag; the tag is then what every reader must read back (RunInfo.run_name does not exist in
such a client, and fields.toml removes it from its records by rule)."""

import inspect

from mlflow.entities import ViewType

from common import Window, expected_run, run_entity, snapshot_run

REQUIRES = ()

START = 1_700_000_000_000
END = START + 60_000


def has_run_name_api(client):
    """Whether this client has MlflowClient.create_run(run_name=...) (capability run_name_api)."""
    return "run_name" in inspect.signature(client.create_run).parameters


def write(ctx):
    window = Window()
    client = ctx.client
    experiment_id = client.create_experiment(f"compat-run-life-{ctx.token}")
    name = f"compat-named-{ctx.token}"
    renamed = f"{name}-renamed"
    if has_run_name_api(client):
        named = client.create_run(experiment_id, start_time=START, tags=ctx.tags, run_name=name).info.run_id
        client.update_run(named, name=renamed)
        named_info = {"run_name": renamed}
    else:  # before 1.30: a run's name is its mlflow.runName tag
        named = client.create_run(experiment_id, start_time=START, tags={**ctx.tags, "mlflow.runName": name})
        named = named.info.run_id
        client.set_tag(named, "mlflow.runName", renamed)
        named_info = {}
    client.set_terminated(named, "FINISHED", end_time=END)
    restored = client.create_run(experiment_id, tags=ctx.tags).info.run_id
    client.set_terminated(restored)
    client.delete_run(restored)
    client.restore_run(restored)
    deleted = client.create_run(experiment_id, tags=ctx.tags).info.run_id
    client.set_terminated(deleted, "KILLED")
    client.delete_run(deleted)
    sent = {
        named: {
            "info": {**named_info, "start_time": START, "end_time": END, "status": "FINISHED"},
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
