"""A user's own MLflow script, run unmodified (`--scenario PATH`): in this client's venv, in a scratch
directory of its own, with MLFLOW_TRACKING_URI pointing at the cell's server.

What it wrote is learnt through the server: every run that exists after the script and did not before is
recorded in full with the same run snapshot as the built-in scenarios (scenarios/common.py: info, every tag,
params, metrics and their histories, inputs, artifact listing and bytes) plus its experiment's name, and
readers are held to that record. The run's generated times must fall inside the script's wall-clock window.
"""

import os
import subprocess
import sys

from mlflow.entities import ViewType

from common import Window, check_run_times, search_all_runs, snapshot_run

REQUIRES = ()


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
    snap = snapshot_run(client, run_id)
    return {"experiment": client.get_experiment(snap["info"]["experiment_id"]).name, "run": snap}


def write(ctx):
    script = ctx.options["script"]
    workdir = os.path.join(ctx.scratch, f"script-{ctx.token}")
    os.makedirs(workdir)
    before = _run_ids(ctx.client)
    window = Window()
    log = os.path.join(workdir, "script-output.log")
    with open(log, "wb") as out:
        code = subprocess.call([sys.executable, script], cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        with open(log, errors="replace") as fh:
            tail = fh.read()[-2000:]
        raise RuntimeError(f"{os.path.basename(script)} exited with code {code}:\n{tail}")
    new = sorted(_run_ids(ctx.client) - before)
    runs = {run_id: _view(ctx.client, run_id) for run_id in new}
    for view in runs.values():
        check_run_times(view["run"], window, ("metric_timestamps",))
    return {"script": os.path.basename(script), "runs": runs, "window": window.close()}


def read(ctx, record):
    runs = {run_id: _view(ctx.client, run_id) for run_id in record["runs"]}
    return {**record, "runs": runs}
