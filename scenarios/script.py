"""A user's own MLflow script, run unmodified (`--scenario PATH`): in this client's venv, in a scratch
directory of its own, with MLFLOW_TRACKING_URI pointing at the cell's server.

What it wrote is learnt through the server: every run that exists after the script and did not before is
recorded in full (experiment, status, params, every metric's history, user tags, artifact files and bytes),
and readers are held to that record.
"""

import os
import subprocess
import sys

from mlflow.entities import ViewType

from common import artifact_tree, metric_history, search_all_runs, user_tags

REQUIRES = ()

KEPT_SYSTEM_TAGS = ("mlflow.runName", "mlflow.parentRunId")


def _experiments(client):
    if hasattr(client, "search_experiments"):
        return client.search_experiments(view_type=ViewType.ALL)
    return client.list_experiments(view_type=ViewType.ALL)


def _run_ids(client):
    ids = set()
    for experiment in _experiments(client):
        ids_of = [experiment.experiment_id]
        runs, _ = search_all_runs(client, ids_of, run_view_type=ViewType.ALL, page_size=1000)
        ids.update(r.info.run_id for r in runs)
    return ids


def _view(client, run_id):
    run = client.get_run(run_id)
    tags = user_tags(run.data.tags)
    tags.update({k: run.data.tags[k] for k in KEPT_SYSTEM_TAGS if k in run.data.tags})
    return {
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "status": run.info.status,
        "params": dict(run.data.params),
        "metrics": {key: metric_history(client, run_id, key) for key in run.data.metrics},
        "tags": tags,
        "artifacts": artifact_tree(client, run_id),
    }


def write(ctx):
    script = ctx.options["script"]
    workdir = os.path.join(ctx.scratch, f"script-{ctx.token}")
    os.makedirs(workdir)
    before = _run_ids(ctx.client)
    log = os.path.join(workdir, "script-output.log")
    with open(log, "wb") as out:
        code = subprocess.call([sys.executable, script], cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        with open(log, errors="replace") as fh:
            tail = fh.read()[-2000:]
        raise RuntimeError(f"{os.path.basename(script)} exited with code {code}:\n{tail}")
    new = sorted(_run_ids(ctx.client) - before)
    return {"script": os.path.basename(script), "runs": {run_id: _view(ctx.client, run_id) for run_id in new}}


def read(ctx, record):
    runs = {run_id: _view(ctx.client, run_id) for run_id in record["runs"]}
    return {"script": record["script"], "runs": runs}
