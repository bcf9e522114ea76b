"""Experiment lifecycle: create, rename, delete and restore one experiment; delete another and leave it
deleted. Both are read back by id in full: name, artifact location, lifecycle stage, tags and times."""

from common import Window, expected_experiment, snapshot_experiment

REQUIRES = ()


def write(ctx):
    window = Window()
    client = ctx.client
    kept = client.create_experiment(f"compat-life-{ctx.token}")
    client.rename_experiment(kept, f"compat-life-{ctx.token}-renamed")
    client.delete_experiment(kept)
    client.restore_experiment(kept)
    gone = client.create_experiment(f"compat-gone-{ctx.token}")
    client.delete_experiment(gone)
    sent = {
        kept: {
            "experiment_id": kept,
            "name": f"compat-life-{ctx.token}-renamed",
            "lifecycle_stage": "active",
        },
        gone: {"experiment_id": gone, "name": f"compat-gone-{ctx.token}", "lifecycle_stage": "deleted"},
    }
    experiments = {eid: expected_experiment(client, eid, window, s) for eid, s in sent.items()}
    return {"experiments": experiments, "window": window.close()}


def read(ctx, record):
    return {
        **record,
        "experiments": {eid: snapshot_experiment(ctx.client, eid) for eid in record["experiments"]},
    }
