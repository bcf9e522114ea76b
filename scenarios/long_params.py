"""A param above the old 500-character limit: 6000 characters, which clients since 2.8 send and servers
since 2.8 store. Against an older server the write is refused: real skew, reported as such."""

REQUIRES = ("param_value_6000",)

PARAM = ("0123456789" * 600)[:6000]


def write(ctx):
    client = ctx.client
    run_id = client.create_run(ctx.experiment("compat-long-params"), tags=ctx.tags).info.run_id
    client.log_param(run_id, "param_6000", PARAM)
    client.set_terminated(run_id)
    return {"run_id": run_id, "params": {"param_6000": PARAM}}


def read(ctx, record):
    return {"run_id": record["run_id"], "params": dict(ctx.client.get_run(record["run_id"]).data.params)}
