"""The model registry: a registered model with a description and tags, two versions from a run, version
descriptions and tags, a stage transition, and search_model_versions."""

from common import user_tags

REQUIRES = ()
STORE_REQUIRES = {"file": ("file_store_registry",)}  # before 2.0 only database stores had one


def _version(client, name, number):
    v = client.get_model_version(name, str(number))
    return {
        "run_id": v.run_id,
        "source": v.source,
        "description": v.description or "",
        "tags": user_tags(v.tags),
        "stage": v.current_stage,
    }


def write(ctx):
    client = ctx.client
    run = client.create_run(ctx.experiment("compat-registry"), tags=ctx.tags)
    run_id = run.info.run_id
    client.set_terminated(run_id)
    name = f"compat-model-{ctx.token}"
    client.create_registered_model(name, tags={"owner": "platform"}, description="a registered model")
    source = f"{run.info.artifact_uri}/model"
    versions = {}
    for number in (1, 2):
        client.create_model_version(name, source, run_id, tags={"n": str(number)}, description=f"v{number}")
        versions[str(number)] = {"run_id": run_id, "source": source, "description": f"v{number}",
                                 "tags": {"n": str(number)}, "stage": "None"}  # fmt: skip
    client.update_model_version(name, "2", description="v2, updated")
    client.transition_model_version_stage(name, "1", "Staging")
    versions["2"]["description"] = "v2, updated"
    versions["1"]["stage"] = "Staging"
    return {
        "name": name,
        "description": "a registered model",
        "tags": {"owner": "platform"},
        "versions": versions,
        "search": ["1", "2"],
    }


def read(ctx, record):
    client = ctx.client
    name = record["name"]
    model = client.get_registered_model(name)
    found = client.search_model_versions(f"name = '{name}'")
    return {
        "name": model.name,
        "description": model.description or "",
        "tags": user_tags(model.tags),
        "versions": {number: _version(client, name, number) for number in record["versions"]},
        "search": sorted(v.version for v in found),
    }
