"""Search: search_runs with a filter and an ordering, pagination past one page (page tokens), and
search_experiments by name. What the searches must return is known from what was written."""

from common import search_all_runs

REQUIRES = ("search_experiments",)

# Three pages (two full, one partial) exercise page tokens as well as 25 runs in pages of 10 did, with a
# third of the requests (the search scenario's writes were a third of all client time).
RUNS = 7
PAGE = 3
FILTER_FROM = 3  # metrics.score >= FILTER_FROM and params.group = 'even'


def write(ctx):
    client = ctx.client
    name = f"compat-search-{ctx.token}"
    experiment_id = client.create_experiment(name)
    for i in range(RUNS):
        run_id = client.create_run(experiment_id, tags={**ctx.tags, "idx": str(i)}).info.run_id
        client.log_param(run_id, "group", "even" if i % 2 == 0 else "odd")
        client.log_metric(run_id, "score", float(i))
        client.set_terminated(run_id)
    return {
        "experiment": name,
        "experiment_id": experiment_id,
        "filtered": [i for i in range(RUNS - 1, -1, -1) if i >= FILTER_FROM and i % 2 == 0],
        "paged": list(range(RUNS)),
        "pages": -(-RUNS // PAGE),
        "experiments": [name],
    }


def read(ctx, record):
    client = ctx.client
    ids = [record["experiment_id"]]
    filtered, _ = search_all_runs(
        client, ids, f"metrics.score >= {FILTER_FROM} and params.group = 'even'", ["metrics.score DESC"]
    )
    paged, pages = search_all_runs(client, ids, "", ["metrics.score ASC"], page_size=PAGE)
    found = client.search_experiments(filter_string=f"name = '{record['experiment']}'")
    return {
        "experiment": record["experiment"],
        "experiment_id": record["experiment_id"],
        "filtered": [int(r.data.tags["idx"]) for r in filtered],
        "paged": [int(r.data.tags["idx"]) for r in paged],
        "pages": pages,
        "experiments": [e.name for e in found],
    }
