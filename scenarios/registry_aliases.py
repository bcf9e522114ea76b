"""Registered model aliases (2.3+): set, move and delete aliases; read them from the model (in full) and
resolve each alias to its version (in full)."""

from common import Window, check_registry_times, expect, snapshot_registered_model, version_entity

REQUIRES = ("registry_aliases",)
# before 2.0 only database stores had one (file_to_sqlite: a file store until its upgrade migrates it)
STORE_REQUIRES = {"file": ("file_store_registry",), "file_to_sqlite": ("file_store_registry",)}


def _snapshot(client, name, aliases):
    return {
        "model": snapshot_registered_model(client, name),
        "resolved": {a: version_entity(client.get_model_version_by_alias(name, a)) for a in aliases},
    }


def write(ctx):
    window = Window()
    client = ctx.client
    run = client.create_run(ctx.experiment("compat-registry"), tags=ctx.tags)
    client.set_terminated(run.info.run_id)
    name = f"compat-aliased-{ctx.token}"
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    client.set_registered_model_alias(name, "champion", "3")  # moved
    client.set_registered_model_alias(name, "retired", "1")
    client.delete_registered_model_alias(name, "retired")
    aliases = {"champion": "3", "challenger": "2"}
    snap = _snapshot(client, name, sorted(aliases))
    check_registry_times(snap["model"], window)
    snap["model"] = expect(snap["model"], {"name": name, "aliases": aliases})
    snap["resolved"] = {
        a: expect(v, {"version": aliases[a], "aliases": [a]}) for a, v in snap["resolved"].items()
    }
    return {"name": name, "aliases": aliases, **snap, "window": window.close()}


def read(ctx, record):
    return {**record, **_snapshot(ctx.client, record["name"], sorted(record["aliases"]))}
