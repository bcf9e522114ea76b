"""Fields absent by rule (harness/fields.py): a rule removes exactly the field it names, only for the versions
and backends it names, on both sides, with a note; a wrong table is an error. Pure units."""

import pytest

from harness import fields
from harness.fields import FieldsTableError, normalise, parse
from harness.verify import diff
from harness.versions import MlflowVersion as V

OLD, MID, NEW = V.parse("1.30.1"), V.parse("2.22.5"), V.parse("3.17.2")


def _run(**extra: object) -> dict:
    return {
        "_kind": "run",
        "info": {"run_id": "abc", "run_name": "r", "status": "FINISHED"},
        "tags": {"mlflow.user": "me", "team": "a"},
        **extra,
    }


def _normalise(expected: dict, observed: dict, rules: list, reader=OLD, writer=NEW, backend="sqlite"):  # type: ignore[no-untyped-def]
    return normalise(expected, observed, writer_client=writer, writer_server=writer, reader_client=reader,
                     reader_server=reader, backend=backend, rules=rules)  # fmt: skip


def test_a_rule_removes_its_field_on_both_sides_for_the_versions_it_names() -> None:
    rules = parse(
        '[[absent]]\nfield = "run.inputs"\nreader_client = "<2.4"\nreason = "old clients lack it"\n'
    )
    expected = {"run": _run(inputs={"datasets": []})}
    observed = {"run": _run()}
    assert diff(expected, observed)  # without the rule: a difference
    e, o, notes = _normalise(expected, observed, rules, reader=OLD)
    assert diff(e, o) == [] and "inputs" not in e["run"]
    assert notes == ["run.inputs not compared (1 removed): old clients lack it"]
    assert expected["run"]["inputs"] == {"datasets": []}, "the caller's records are not changed"
    # A reader the rule does not name: nothing removed, the difference stays.
    e, o, notes = _normalise(expected, observed, rules, reader=NEW)
    assert diff(e, o) == ["run.inputs: missing (expected {'datasets': []})"] and notes == []


def test_a_rule_removes_only_the_field_it_names() -> None:
    rules = parse('[[absent]]\nfield = "run.tags[mlflow.user]"\nreader_client = "<2.0"\nreason = "r"\n')
    expected = {"run": _run()}
    observed = {"run": _run(tags={"mlflow.user": "other", "team": "b"})}
    e, o, _ = _normalise(expected, observed, rules)
    assert diff(e, o) == ["run.tags.team: 'b', expected 'a'"]  # a sibling of the removed field still compared


def test_a_rule_applies_only_to_entities_of_its_kind_wherever_they_are() -> None:
    rules = parse('[[absent]]\nfield = "model_version.aliases"\nwriter_client = "<2.3"\nreason = "r"\n')
    version = {"_kind": "model_version", "version": "1", "aliases": []}
    not_a_version = {"_kind": "registered_model", "name": "m", "aliases": {"a": "1"}}
    record = {
        "model": {**not_a_version, "latest_versions": [dict(version)]},
        "versions": {"1": dict(version)},
    }
    e, _, notes = normalise(record, record, writer_client=OLD, writer_server=OLD, reader_client=NEW,
                            reader_server=NEW, backend="file", rules=rules)  # fmt: skip
    assert "aliases" in e["model"], "a registered model's aliases are another rule's business"
    assert "aliases" not in e["model"]["latest_versions"][0] and "aliases" not in e["versions"]["1"]
    assert notes == ["model_version.aliases not compared (4 removed): r"]  # 2 places, both sides


def test_every_condition_of_a_rule_must_hold() -> None:
    rules = parse(
        '[[absent]]\nfield = "experiment.creation_time"\nwriter_server = "<2.0"\n'
        'backend = ["file"]\nreason = "r"\n'
    )
    record = {"e": {"_kind": "experiment", "name": "x", "creation_time": 1}}
    on = {"writer_client": NEW, "writer_server": OLD, "reader_client": NEW, "reader_server": NEW}
    e, _, _ = normalise(record, record, **on, backend="file", rules=rules)
    assert "creation_time" not in e["e"]
    e, _, _ = normalise(record, record, **on, backend="sqlite", rules=rules)
    assert "creation_time" in e["e"], "another backend"
    e, _, _ = normalise(record, record, **{**on, "writer_server": MID}, backend="file", rules=rules)
    assert "creation_time" in e["e"], "another server version"


def test_list_elements_are_addressed_with_brackets() -> None:
    rules = parse(
        '[[absent]]\nfield = "run.inputs.datasets[].dataset.profile"\nreader_client = "<3"\nreason = "r"\n'
    )
    datasets = [{"dataset": {"name": "d", "profile": "p"}, "tags": {}}]
    e, o, _ = _normalise(
        {"r": _run(inputs={"datasets": datasets})}, {"r": _run(inputs={"datasets": [datasets[0]]})}, rules
    )
    assert e["r"]["inputs"]["datasets"] == [{"dataset": {"name": "d"}, "tags": {}}]
    assert o["r"]["inputs"]["datasets"] == [{"dataset": {"name": "d"}, "tags": {}}]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[[absent]]\nfield = "run.info.no_such_field"\nreader_client = "<2"\nreason = "r"\n',
            "unknown field",
        ),
        ('[[absent]]\nfield = "runz.info.run_name"\nreader_client = "<2"\nreason = "r"\n', "unknown field"),
        ('[[absent]]\nfield = "run.params[x].deeper"\nreader_client = "<2"\nreason = "r"\n', "below a leaf"),
        ('[[absent]]\nfield = "run.info.run_name"\nreader_client = "<2"\n', "needs a reason"),
        ('[[absent]]\nfield = "run.info.run_name"\nreason = "always"\n', "would drop always"),
        ('[[absent]]\nfield = "run.info.run_name"\nreader_clinet = "<2"\nreason = "r"\n', "unknown key"),
        (
            '[[absent]]\nfield = "run.info.run_name"\nreader_client = "2.x"\nreason = "r"\n',
            "not a version range",
        ),
        ('[[absent]]\nfield = "run.info.run_name"\nbackend = ["oracle"]\nreason = "r"\n', "unknown backend"),
        ('[[absnt]]\nfield = "run.info.run_name"\n', "unknown section"),
    ],
)
def test_a_wrong_table_is_an_error(table: str, message: str) -> None:
    with pytest.raises(FieldsTableError, match=message):
        parse(table)


def test_the_shipped_table_loads_and_every_rule_has_a_condition_and_a_reason() -> None:
    rules = fields.table()
    assert rules, "the shipped table has rules"
    assert all(r.reason and (r.versions or r.backends) for r in rules)
    # Nothing is removed when the versions and backend match no rule's conditions.
    record = {"r": _run(inputs={"datasets": []}, outputs={"models": []})}
    e, _, notes = normalise(record, record, writer_client=NEW, writer_server=NEW, reader_client=NEW,
                            reader_server=NEW, backend="sqlite")  # fmt: skip
    assert e == record and notes == []


def test_the_shipped_rules_drop_what_a_1x_client_lacks_and_nothing_it_has() -> None:
    """A 3.17.2 client's record read by a 1.30.1 client: inputs and outputs (which 1.x clients have no
    attribute for) are not compared; a changed status or tag still is."""
    written = {"run": _run(inputs={"datasets": [], "models": []}, outputs={"models": []})}
    read = {"run": _run(tags={"mlflow.user": "me", "team": "changed"})}
    read["run"]["info"]["status"] = "FAILED"
    e, o, notes = normalise(written, read, writer_client=NEW, writer_server=OLD, reader_client=OLD,
                            reader_server=OLD, backend="sqlite")  # fmt: skip
    assert sorted(diff(e, o)) == [
        "run.info.status: 'FAILED', expected 'FINISHED'",
        "run.tags.team: 'changed', expected 'a'",
    ]
    assert [n.split(" (")[0] for n in notes] == ["run.inputs not compared", "run.outputs not compared"]


def test_the_shipped_rules_for_clients_and_servers_before_1_30() -> None:
    """Experiment times exist in clients from 1.29, RunInfo.run_name is sent by servers from 1.30: a 3.17.2
    record written through a 1.29.0 server and read after the upgrade compares neither the empty run_name the
    old server gave nor the experiment times a 1.20.2 reader lacks, but still the run's mlflow.runName tag."""
    pre_29, v29 = V.parse("1.20.2"), V.parse("1.29.0")
    experiment = {
        "_kind": "experiment",
        "experiment_id": "1",
        "name": "e",
        "creation_time": 5,
        "last_update_time": 6,
    }
    bare = {k: v for k, v in experiment.items() if not k.endswith("_time")}
    e, o, notes = normalise({"experiment": experiment}, {"experiment": bare}, writer_client=NEW,
                            writer_server=NEW, reader_client=pre_29, reader_server=NEW,
                            backend="sqlite")  # fmt: skip
    assert diff(e, o) == [] and len(notes) == 2
    e, o, _ = normalise({"experiment": experiment}, {"experiment": bare}, writer_client=NEW,
                        writer_server=NEW, reader_client=v29, reader_server=NEW,
                        backend="sqlite")  # fmt: skip
    assert sorted(diff(e, o)) == ["experiment.creation_time: missing (expected 5)",
                                  "experiment.last_update_time: missing (expected 6)"]  # fmt: skip
    written = {"run": _run(tags={"mlflow.user": "me", "team": "a", "mlflow.runName": "named"})}
    written["run"]["info"]["run_name"] = ""
    read = {"run": _run(tags={"mlflow.user": "me", "team": "a", "mlflow.runName": "generated-name-1"})}
    read["run"]["info"]["run_name"] = "generated-name-1"
    e, o, notes = normalise(written, read, writer_client=NEW, writer_server=v29, reader_client=NEW,
                            reader_server=NEW, backend="sqlite")  # fmt: skip
    assert diff(e, o) == ["run.tags['mlflow.runName']: 'generated-name-1', expected 'named'"]
    # Written and read through 1.30.1 or later: run_name is compared.
    e, o, _ = normalise(written, read, writer_client=NEW, writer_server=OLD, reader_client=NEW,
                        reader_server=NEW, backend="sqlite")  # fmt: skip
    assert "run.info.run_name: 'generated-name-1', expected ''" in diff(e, o)
