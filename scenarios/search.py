"""Search: search_runs with a filter and an ordering, pagination past one page (page tokens), and
search_experiments by name. What the searches must return is known from what was written; each result is
compared in full as the search returns it (info, tags, params, latest metrics), in the order asked for."""

from common import Window, entity_view, expected_run, experiment_entity, num, run_entity, search_all_runs

REQUIRES = ("search_experiments",)

# Three pages (two full, one partial) exercise page tokens as well as 25 runs in pages of 10 did, with a
# third of the requests (the search scenario's writes were a third of all client time).
RUNS = 7
PAGE = 3
FILTER_FROM = 3  # metrics.score >= FILTER_FROM and params.group = 'even'


def _searches(client, record):
    ids = [record["experiment_id"]]
    filtered, _ = search_all_runs(
        client, ids, f"metrics.score >= {FILTER_FROM} and params.group = 'even'", ["metrics.score DESC"]
    )
    paged, pages = search_all_runs(client, ids, "", ["metrics.score ASC"], page_size=PAGE)
    found = client.search_experiments(filter_string=f"name = '{record['experiment']}'")
    return {
        "filtered": [run_entity(r) for r in filtered],
        "paged": [run_entity(r) for r in paged],
        "pages": pages,
        "experiments": [experiment_entity(e) for e in found],
    }


def write(ctx):
    window = Window()
    client = ctx.client
    name = f"compat-search-{ctx.token}"
    experiment_id = client.create_experiment(name)
    runs = []
    for i in range(RUNS):
        run_id = client.create_run(experiment_id, tags={**ctx.tags, "idx": str(i)}).info.run_id
        client.log_param(run_id, "group", "even" if i % 2 == 0 else "odd")
        client.log_metric(run_id, "score", float(i))
        client.set_terminated(run_id)
        runs.append(run_id)
    views = []
    for i, run_id in enumerate(runs):
        sent = {
            "info": {"status": "FINISHED"},
            "tags": {**ctx.tags, "idx": str(i)},
            "params": {"group": "even" if i % 2 == 0 else "odd"},
            "metrics": {"score": num(float(i))},
        }
        views.append(entity_view(expected_run(client, run_id, window, sent, artifacts=False)))
    filtered = [i for i in range(RUNS - 1, -1, -1) if i >= FILTER_FROM and i % 2 == 0]
    return {
        "experiment": name,
        "experiment_id": experiment_id,
        "filtered": [views[i] for i in filtered],
        "paged": views,
        "pages": -(-RUNS // PAGE),
        "experiments": [experiment_entity(client.get_experiment(experiment_id))],
        "window": window.close(),
    }


def read(ctx, record):
    return {**record, **_searches(ctx.client, record)}
