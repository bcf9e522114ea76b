"""The model registry: a registered model with a description and tags, two versions from a run, version
descriptions and tags, a stage transition, and search_model_versions. Every field of the model and its
versions is compared (status, source, run link, user id, stage, tags, aliases, timestamps)."""

from common import (
    Window,
    check_registry_times,
    expect,
    snapshot_model_version,
    snapshot_registered_model,
    version_entity,
)

REQUIRES = ()
# before 2.0 only database stores had one (file_to_sqlite: a file store until its upgrade migrates it)
STORE_REQUIRES = {"file": ("file_store_registry",), "file_to_sqlite": ("file_store_registry",)}


def _search(client, name):
    """search_model_versions by name: no order is documented, so a multiset (sorted by version)."""
    found = [version_entity(v) for v in client.search_model_versions(f"name = '{name}'")]
    return sorted(found, key=lambda v: int(v["version"]))


def _snapshot(client, name, numbers):
    return {
        "model": snapshot_registered_model(client, name),
        "versions": {n: snapshot_model_version(client, name, n) for n in numbers},
        "search": _search(client, name),
    }


def write(ctx):
    window = Window()
    client = ctx.client
    run = client.create_run(ctx.experiment("compat-registry"), tags=ctx.tags)
    run_id = run.info.run_id
    client.set_terminated(run_id)
    name = f"compat-model-{ctx.token}"
    client.create_registered_model(name, tags={"owner": "platform"}, description="a registered model")
    source = f"{run.info.artifact_uri}/model"
    sent = {}
    for number in (1, 2):
        client.create_model_version(name, source, run_id, tags={"n": str(number)}, description=f"v{number}")
        sent[str(number)] = {"name": name, "version": str(number), "run_id": run_id, "source": source,
                             "description": f"v{number}", "tags": {"n": str(number)},
                             "current_stage": "None"}  # fmt: skip
    client.update_model_version(name, "2", description="v2, updated")
    client.transition_model_version_stage(name, "1", "Staging")
    sent["2"]["description"] = "v2, updated"
    sent["1"]["current_stage"] = "Staging"
    snap = _snapshot(client, name, sorted(sent))
    check_registry_times(snap["model"], window)
    for v in snap["versions"].values():
        check_registry_times(v, window)
    snap["model"] = expect(snap["model"], {"name": name, "description": "a registered model",
                                           "tags": {"owner": "platform"}})  # fmt: skip
    snap["versions"] = {n: expect(v, sent[n]) for n, v in snap["versions"].items()}
    snap["search"] = [expect(v, sent[v["version"]]) for v in snap["search"]]
    return {"name": name, **snap, "window": window.close()}


def read(ctx, record):
    return {**record, **_snapshot(ctx.client, record["name"], sorted(record["versions"]))}
