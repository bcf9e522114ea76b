from harness.plan import CellPlan, default_matrix, default_paths, plan_cells
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


def test_plan_roundtrip_pins_latest() -> None:
    cell = CellPlan("sqlite", parse_path("1.30.1:2.22.5"), (parse_spec("1.30.1"),), scripts=("/x/train.py",))
    data = cell.to_json()
    assert data["scenarios"][0] == "quickstart" and data["scripts"] == ["/x/train.py"]
    data["path"][1] = "latest"
    data["versions"]["latest"] = "3.17.2"
    back = CellPlan.from_json(data)
    assert [s.label for s in back.path] == ["1.30.1", "3.17.2"]
    assert back.scenarios == cell.scenarios and back.scripts == cell.scripts
