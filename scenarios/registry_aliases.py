"""Registered model aliases (2.3+): set, move and delete aliases; read them from the model and resolve
each alias to its version."""

REQUIRES = ("registry_aliases",)
STORE_REQUIRES = {"file": ("file_store_registry",)}


def write(ctx):
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
    return {"name": name, "aliases": {"champion": "3", "challenger": "2"}, "resolved": {"champion": "3",
            "challenger": "2"}}  # fmt: skip


def read(ctx, record):
    client = ctx.client
    name = record["name"]
    model = client.get_registered_model(name)
    return {
        "name": name,
        "aliases": {alias: str(version) for alias, version in model.aliases.items()},
        "resolved": {a: client.get_model_version_by_alias(name, a).version for a in record["aliases"]},
    }
