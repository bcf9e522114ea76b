"""Experiment lifecycle: create, rename, delete and restore one experiment; delete another and leave it
deleted. Both are read back by id: name and lifecycle stage."""

REQUIRES = ()


def write(ctx):
    client = ctx.client
    kept = client.create_experiment(f"compat-life-{ctx.token}")
    client.rename_experiment(kept, f"compat-life-{ctx.token}-renamed")
    client.delete_experiment(kept)
    client.restore_experiment(kept)
    gone = client.create_experiment(f"compat-gone-{ctx.token}")
    client.delete_experiment(gone)
    return {
        "experiments": {
            kept: {"name": f"compat-life-{ctx.token}-renamed", "stage": "active"},
            gone: {"name": f"compat-gone-{ctx.token}", "stage": "deleted"},
        }
    }


def read(ctx, record):
    seen = {}
    for experiment_id in record["experiments"]:
        experiment = ctx.client.get_experiment(experiment_id)
        seen[experiment_id] = {"name": experiment.name, "stage": experiment.lifecycle_stage}
    return {"experiments": seen}
