from harness.plan import CellPlan, default_clients, default_matrix, default_paths, plan_cells
from harness.specs import parse_path, parse_spec


def test_default_matrix_is_data() -> None:
    smoke = default_matrix("smoke")
    assert smoke["backends"] == ["file", "sqlite", "postgres", "mysql"]
    labels = [":".join(s.label for s in p) for p in default_paths()]
    assert labels == ["1.30.1:2.22.5", "2.22.5:3.17.2", "1.30.1:3.17.2"]


def test_cells_are_backend_times_path_with_readable_ids() -> None:
    cells = plan_cells(["file", "sqlite"], default_paths(), None, "local")
    ids = [c.id for c in cells]
    assert len(ids) == 6 == len(set(ids))
    assert "sqlite:1.30.1->2.22.5" in ids
    cell = next(c for c in cells if c.id == "sqlite:1.30.1->2.22.5")
    assert [s.label for s in cell.clients] == ["1.30.1", "2.22.5"]
    assert cell.slug == "sqlite_1.30.1_to_2.22.5"


def test_custom_clients_show_in_id_and_duplicates_collapse() -> None:
    path = parse_path("1.30.1:2.22.5:3.17.2")
    clients = (parse_spec("2.22.5"),)
    cells = plan_cells(["sqlite", "sqlite"], [path, path], clients, "local")
    assert [c.id for c in cells] == ["sqlite:1.30.1->2.22.5->3.17.2[clients=2.22.5]"]


def test_scale_and_rolling_go_to_the_cells_they_mean_something_for_and_into_ids() -> None:
    path = parse_path("2.22.5:3.17.2")
    cells = {c.backend: c for c in plan_cells(["file", "sqlite", "postgres"], [path], None, "local",
                                               scale=20_000, rolling=True)}  # fmt: skip
    assert cells["file"].id == "file:2.22.5->3.17.2"  # no schema to seed, no database server to share
    assert cells["sqlite"].id == "sqlite:2.22.5->3.17.2[scale=20k]"
    assert cells["postgres"].id == "postgres:2.22.5->3.17.2[scale=20k][rolling]"
    back = CellPlan.from_json(cells["postgres"].to_json())
    assert (back.scale, back.rolling, back.seed, back.id) == (20_000, True, None, cells["postgres"].id)


def test_plan_roundtrip_pins_latest() -> None:
    cell = CellPlan("sqlite", parse_path("1.30.1:2.22.5"), (parse_spec("1.30.1"),), scripts=("/x/train.py",))
    data = cell.to_json()
    assert data["scenarios"][0] == "quickstart" and data["scripts"] == ["/x/train.py"]
    data["path"][1] = "latest"
    data["versions"]["latest"] = "3.17.2"
    back = CellPlan.from_json(data)
    assert [s.label for s in back.path] == ["1.30.1", "3.17.2"]
    assert back.scenarios == cell.scenarios and back.scripts == cell.scripts


def test_discovery_keeps_newest_patches_and_major_firsts_and_says_what_it_left_out() -> None:
    from packaging.specifiers import SpecifierSet

    from harness.index import Release
    from harness.plan import discover
    from harness.versions import MlflowVersion

    def rel(v: str, yanked: bool = False) -> Release:
        return Release(MlflowVersion.parse(v), yanked, SpecifierSet(">=3.8"))

    known = [rel(v) for v in ("1.29.0", "1.30.0", "1.30.1", "2.0.1", "2.1.0", "2.1.1", "3.0.0", "3.0.1")]
    known += [rel("2.0.0", yanked=True), rel("3.18.0"), rel("3.1.0rc1")]
    found, excluded = discover("newest-patch-per-minor", "1.30", known)
    assert [str(v) for v in found] == ["1.30.1", "2.0.1", "2.1.1", "3.0.0", "3.0.1"]
    assert sorted(excluded) == [
        "2.0.0: yanked on the index",
        "3.18.0: pins mlflow-skinny==3.18.0, which the index does not have: unresolvable",
    ]
    every, _ = discover("every-patch", "2.1", known)
    assert [str(v) for v in every] == ["2.1.0", "2.1.1", "3.0.0", "3.0.1"]


def test_shards_split_cells_deterministically_and_completely() -> None:
    from harness.run import take_shard

    cells = plan_cells(["file", "sqlite", "postgres"], default_paths(), None, "local")
    shards = [take_shard(list(reversed(cells)), (i, 4)) for i in range(1, 5)]
    ids = [c.id for shard in shards for c in shard]
    assert sorted(ids) == sorted(c.id for c in cells) and len(ids) == len(set(ids))
    assert [c.id for c in take_shard(cells, (2, 4))] == [c.id for c in shards[1]]  # order-independent


def test_cell_features_multiply_cells_name_them_and_choose_their_scenarios() -> None:
    """Auth and an S3 artifact store are cell features: each variant is a cell with its own id; an auth cell
    needs every server of its path to have the auth app (2.5+); a scenario that NEEDS a feature is part of
    only the cells that have it, and a plan that gives it to a cell without is a harness bug."""
    import pytest

    from harness import plan as plan_module

    old, new = parse_path("1.30.1:2.22.5"), parse_path("2.22.5:3.17.2")
    cells = plan_cells(["sqlite"], [old, new], None, "local", ("quickstart", "auth"),
                       auth=(False, True), artifact_stores=("local", "s3"))  # fmt: skip
    ids = [c.id for c in cells]
    assert ids == [
        "sqlite:1.30.1->2.22.5",
        "sqlite:1.30.1->2.22.5[artifacts=s3]",
        "sqlite:2.22.5->3.17.2",
        "sqlite:2.22.5->3.17.2[artifacts=s3]",
        "sqlite:2.22.5->3.17.2[auth]",
        "sqlite:2.22.5->3.17.2[artifacts=s3][auth]",
    ], "1.30.1 has no auth app: its path gets no auth cell"
    by_id = {c.id: c for c in cells}
    assert by_id["sqlite:2.22.5->3.17.2"].scenarios == ("quickstart",)
    assert by_id["sqlite:2.22.5->3.17.2[auth]"].scenarios == ("quickstart", "auth")
    assert by_id["sqlite:2.22.5->3.17.2[artifacts=s3][auth]"].features == {"auth", "s3"}
    again = CellPlan.from_json(by_id["sqlite:2.22.5->3.17.2[artifacts=s3][auth]"].to_json())
    assert again.auth and again.artifact_store == "s3"
    assert plan_module.auth_lacking(old) == "MLflow 1.30.1 has no auth_app (since 2.5.0)"
    assert plan_module.auth_lacking(new) is None
    assert plan_module.left_out(["sqlite"], [old, new], (False, True)) == {
        "1.30.1->2.22.5 [auth]": "MLflow 1.30.1 has no auth_app (since 2.5.0)"
    }
    with pytest.raises(ValueError, match="scenario auth needs a cell with auth"):
        CellPlan("sqlite", new, default_clients(new), scenarios=("auth",))


def test_every_profile_names_only_known_scenarios_stores_and_auth_variants() -> None:
    from harness.plan import ARTIFACT_STORES, profiles
    from harness.scenarios import all_names, default_names

    for name in profiles():
        profile = default_matrix(name)
        extra = profile.get("extra_scenarios", [])
        assert set(extra) <= set(all_names()) - set(default_names()), (name, extra)
        assert set(profile.get("artifact_stores", ["local"])) <= set(ARTIFACT_STORES), name
        assert set(profile.get("auth", [False])) <= {False, True}, name
    nightly = default_matrix("nightly")
    assert nightly["auth"] == [False, True] and nightly["artifact_stores"] == ["local", "s3"]
