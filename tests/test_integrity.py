from harness.integrity import Snapshot, Table, compare, normalise


def snap(rows: dict, columns=("key", "run_uuid", "value"), key=("key", "run_uuid"), extra=None) -> Snapshot:
    tables = {"params": Table(list(columns), list(key), {tuple(r[k] for k in key): r for r in rows})}
    tables.update(extra or {})
    return Snapshot("rev", tables)


ROWS = [{"key": "lr", "run_uuid": "r1", "value": "0.01"}, {"key": "opt", "run_uuid": "r1", "value": "adam"}]


def test_unchanged_rows_with_new_columns_and_tables_are_kept() -> None:
    after_rows = [{**r, "extra": None} for r in ROWS]
    after = snap(
        after_rows,
        columns=("key", "run_uuid", "value", "extra"),
        extra={"datasets": Table(["id"], ["id"], {})},
    )
    report = compare(snap(ROWS), after)
    assert report.ok
    assert report.summary() == "all 2 rows kept; new tables datasets; new columns params.extra"


def test_lost_and_changed_rows_are_named() -> None:
    after = snap([{"key": "lr", "run_uuid": "r1", "value": "0.02"}])
    report = compare(snap(ROWS), after)
    assert report.differences == [
        "params row (key='lr', run_uuid='r1'): value '0.01' -> '0.02'",
        "params row (key='opt', run_uuid='r1') missing after the upgrade",
    ]
    assert report.summary().startswith("2 row difference(s): params row (key='lr'")


def test_dropped_tables_and_columns_are_differences() -> None:
    report = compare(snap(ROWS), Snapshot("rev2", {}))
    assert report.differences == ["table params with 2 rows is gone"]
    narrow = snap([{"key": r["key"], "run_uuid": r["run_uuid"]} for r in ROWS], columns=("key", "run_uuid"))
    assert compare(snap(ROWS), narrow).differences == [
        "params.value: column dropped, with the values of 2 row(s)"
    ]


def test_a_column_dropped_where_no_row_held_a_value_loses_nothing_and_is_said() -> None:
    """3.17's migration 75868b020152 drops spans.dimension_attributes on purpose: no data is lost where the
    table had no rows (or only NULLs in it); the summary says so instead of failing."""
    empty, narrow_empty = snap([]), snap([], columns=("key", "run_uuid"))
    report = compare(empty, narrow_empty)
    assert (
        report.ok and report.summary() == "all 0 rows kept; dropped columns that held no value: params.value"
    )
    nulls = [{**r, "value": None} for r in ROWS]
    narrow = snap([{"key": r["key"], "run_uuid": r["run_uuid"]} for r in ROWS], columns=("key", "run_uuid"))
    assert compare(snap(nulls), narrow).ok


def test_type_conversions_compare_equal() -> None:
    import datetime as dt
    import decimal

    assert normalise(True) == normalise(1)
    assert normalise(decimal.Decimal("0.95")) == normalise(0.95)
    assert normalise(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == normalise(dt.datetime(2026, 1, 1))
