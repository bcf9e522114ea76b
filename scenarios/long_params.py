"""A param above the old 500-character limit: 6000 characters, which clients since 2.8 send and servers
since 2.8 store. Against an older server the write is refused: real skew, reported as such."""

from common import Window, expected_run, snapshot_run

REQUIRES = ("param_value_6000",)

PARAM = ("0123456789" * 600)[:6000]


def write(ctx):
    window = Window()
    client = ctx.client
    run_id = client.create_run(ctx.experiment("compat-long-params"), tags=ctx.tags).info.run_id
    client.log_param(run_id, "param_6000", PARAM)
    client.set_terminated(run_id)
    explicit = {"info": {"status": "FINISHED"}, "params": {"param_6000": PARAM}, "tags": ctx.tags}
    return {"run_id": run_id, "run": expected_run(client, run_id, window, explicit), "window": window.close()}


def read(ctx, record):
    return {**record, "run": snapshot_run(ctx.client, record["run_id"])}
