"""Great Expectations validation: real ml-100k passes; each kind of corruption fails, by name."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recfound.data.schema import Tables, TaskRecord, records_to_frame
from recfound.data.sources import load_ml100k
from recfound.validation.validate import (
    DataValidationError,
    ExpectationFailure,
    ValidationReport,
    raise_for_failures,
    validate_tables,
    validate_task_datasets,
)

TASKS = ["sequential_recommendation", "user2item", "item2item"]


@pytest.fixture(scope="module")
def ml100k() -> Tables:
    return load_ml100k()


def _only_failure(report: ValidationReport) -> ExpectationFailure:
    assert not report.success
    assert len(report.failures) == 1, report.summary()
    return report.failures[0]


def test_real_ml100k_tables_pass_and_reports_are_written(ml100k: Tables, tmp_path: Path) -> None:
    report = validate_tables(ml100k, tmp_path)

    assert report.success, report.summary()
    assert report.failures == []
    assert report.statistics["rows.interactions"] == 100_000
    assert report.statistics["unsuccessful_expectations"] == 0
    raise_for_failures(report)  # no exception
    saved = json.loads((tmp_path / "tables.json").read_text())
    assert saved["success"] is True
    assert set(saved["results"]) == {"interactions", "items", "users"}
    assert (tmp_path / "data_docs" / "index.html").is_file()
    assert (tmp_path / "data_docs" / "tables" / "index.html").is_file()
    assert "passed" in report.summary()


def _with_value(table: str, row: int, column: str, value: object) -> Callable[[Tables], Tables]:
    """A corruption: ``value`` written into ``column`` of ``row`` of one table."""

    def corrupt(t: Tables) -> Tables:
        frame = getattr(t, table).copy()
        frame.loc[row, column] = value
        return dataclasses.replace(t, **{table: frame})

    return corrupt


def _with_duplicated_item(t: Tables) -> Tables:
    items = pd.concat([t.items, t.items.iloc[[4]]], ignore_index=True)
    return dataclasses.replace(t, items=items)


_with_rating_7 = _with_value("interactions", 10, "rating", 7.0)
_with_unknown_item = _with_value("interactions", 10, "item_id", "999999")
_with_empty_title = _with_value("items", 0, "title", "")
_with_null_user = _with_value("interactions", 10, "user_id", None)


@pytest.mark.parametrize(
    ("corrupt", "asset", "expectation", "column", "words"),
    [
        (_with_rating_7, "interactions", "expect_column_values_to_be_between", "rating",
         ["rating: 1 of 100000", "outside [1.0, 5.0]", "7.0"]),
        (_with_unknown_item, "interactions", "expect_column_values_to_be_null", "item_id",
         ["item_id: 1 of 100000", "not an item_id of the items table", "999999"]),
        (_with_duplicated_item, "items", "expect_column_values_to_be_unique", "item_id",
         ["item_id: 2 of 1683", "duplicated", "['5']"]),
        (_with_empty_title, "items", "expect_column_values_to_match_regex", "title",
         ["title: 1 of 1682", "empty or blank"]),
        (_with_null_user, "interactions", "expect_column_values_to_not_be_null", "user_id",
         ["user_id: 1 of 100000", "null"]),
    ],
)  # fmt: skip
def test_corrupted_tables_fail_naming_the_problem(
    ml100k: Tables,
    tmp_path: Path,
    corrupt: Callable[[Tables], Tables],
    asset: str,
    expectation: str,
    column: str,
    words: list[str],
) -> None:
    report = validate_tables(corrupt(ml100k), tmp_path)

    failure = _only_failure(report)
    assert (failure.asset, failure.expectation_type, failure.column) == (asset, expectation, column)
    summary = report.summary()
    for word in words:
        assert word in failure.summary and word in summary
    with pytest.raises(DataValidationError) as raised:
        raise_for_failures(report)
    assert str(raised.value) == summary
    assert raised.value.report is report
    saved = json.loads((tmp_path / "tables.json").read_text())
    assert saved["success"] is False
    assert saved["failures"][0]["expectation_type"] == expectation
    assert (tmp_path / "data_docs" / "index.html").is_file()


def test_timestamp_range_applies_only_to_sources_with_time(ml100k: Tables, tmp_path: Path) -> None:
    inter = ml100k.interactions.copy()
    inter["timestamp"] = range(len(inter))  # order indices, as a source without time stores
    untimed = dataclasses.replace(ml100k, interactions=inter)
    without_time = dataclasses.replace(
        ml100k.info, signals=tuple(s for s in ml100k.info.signals if s != "timestamps")
    )

    assert validate_tables(dataclasses.replace(untimed, info=without_time), tmp_path).success
    failure = _only_failure(validate_tables(untimed, tmp_path))
    assert failure.column == "timestamp"


# --- task datasets ------------------------------------------------------------------------------


def _record(task: str, split: str, **fields: object) -> TaskRecord:
    kind = "embedding" if task in ("user2item", "item2item") else "generative"
    return TaskRecord(task=task, kind=kind, split=split, prompt="A user's history: …",
                      target="Toy Story (1995)", **fields)  # fmt: skip


def _task_frames(**overrides: list[TaskRecord]) -> dict[str, dict[str, pd.DataFrame]]:
    """Clean frames for three tasks; ``task__split=[records]`` replaces one file's records.

    User "1" holds out item "30" (valid) and "31" (test); user "2" holds out "40" and "41".
    """
    seq = "sequential_recommendation"
    records = {
        (seq, "train"): [
            _record(seq, "train", user_id="1", item_id="12", history_ids=["10", "11"]),
            _record(seq, "train", user_id="2", item_id="22", history_ids=["20", "30"]),
        ],
        (seq, "valid"): [
            _record(seq, "valid", user_id="1", item_id="30", history_ids=["10", "11", "12"]),
            _record(seq, "valid", user_id="2", item_id="40", history_ids=["20", "22"]),
        ],
        (seq, "test"): [
            _record(seq, "test", user_id="1", item_id="31", history_ids=["11", "12", "30"]),
            _record(seq, "test", user_id="2", item_id="41", history_ids=["22", "40"]),
        ],
        ("user2item", "train"): [
            _record("user2item", "train", user_id="1", item_id="11", history_ids=["10"]),
        ],
        ("user2item", "valid"): [_record("user2item", "valid", user_id="1", item_id="30")],
        ("user2item", "test"): [_record("user2item", "test", user_id="1", item_id="31")],
        # item-level: a user's held-out item may appear (no user), a cold item may not.
        ("item2item", "train"): [_record("item2item", "train", item_id="31")],
        ("item2item", "valid"): [_record("item2item", "valid", item_id="12")],
        ("item2item", "test"): [_record("item2item", "test", item_id="22")],
    }
    for key, replacement in overrides.items():
        task, split = key.split("__")
        records[(task, split)] = replacement
    frames: dict[str, dict[str, pd.DataFrame]] = {}
    for (task, split), task_records in records.items():
        frames.setdefault(task, {})[split] = records_to_frame(task_records)
    return frames


COLD = ["99"]


def test_clean_task_datasets_pass(tmp_path: Path) -> None:
    report = validate_task_datasets(_task_frames(), TASKS, COLD, tmp_path)

    assert report.success, report.summary()
    assert report.statistics["rows.task_records"] == 12
    assert json.loads((tmp_path / "tasks.json").read_text())["success"] is True
    assert (tmp_path / "data_docs" / "tasks" / "index.html").is_file()
    assert (tmp_path / "data_docs" / "index.html").is_file()


def test_empty_prompt_fails(tmp_path: Path) -> None:
    bad = _record("user2item", "test", user_id="1", item_id="31")
    bad.prompt = ""
    report = validate_task_datasets(_task_frames(user2item__test=[bad]), TASKS, COLD, tmp_path)

    failure = _only_failure(report)
    assert failure.column == "prompt"
    assert "empty or blank" in failure.summary
    assert "user2item/test" in report.summary()


def test_unknown_task_name_fails(tmp_path: Path) -> None:
    frames = _task_frames()
    frames["made_up_task"] = {"test": records_to_frame([_record("made_up_task", "test")])}
    report = validate_task_datasets(frames, TASKS, COLD, tmp_path)

    failure = _only_failure(report)
    assert (failure.column, failure.expectation_type) == (
        "task",
        "expect_column_values_to_be_in_set",
    )
    assert "made_up_task" in report.summary()


def test_train_history_with_the_users_test_target_fails_the_leakage_check(tmp_path: Path) -> None:
    seq = "sequential_recommendation"
    leaking = _record(seq, "train", user_id="1", item_id="12", history_ids=["10", "31"])
    report = validate_task_datasets(
        _task_frames(sequential_recommendation__train=[leaking]), TASKS, COLD, tmp_path
    )

    failure = _only_failure(report)
    assert failure.expectation_type == "expect_column_values_to_be_null"
    assert "valid/test target item" in failure.summary
    assert failure.examples == [f"{seq}, user 1: 31"]
    assert f"{seq}/train" in report.summary()
    saved = json.loads((tmp_path / "tasks.json").read_text())
    assert saved["success"] is False


def test_another_users_held_out_item_in_train_is_not_leakage(tmp_path: Path) -> None:
    # user 2's train history shows "30", which only *user 1* holds out: allowed.
    assert validate_task_datasets(_task_frames(), TASKS, COLD, tmp_path).success


def test_cold_item_in_a_train_record_fails(tmp_path: Path) -> None:
    with_cold = _record("item2item", "train", item_id="12", candidate_ids=["13", "99"])
    report = validate_task_datasets(
        _task_frames(item2item__train=[with_cold]), TASKS, COLD, tmp_path
    )

    failure = _only_failure(report)
    assert "cold" in failure.summary
    assert failure.examples == ["item2item: 99"]
    with pytest.raises(DataValidationError, match="cold"):
        raise_for_failures(report)


# --- issue 15: what ingest now refuses is also caught here (interim tables written elsewhere) --


def test_missing_timestamp_column_fails_where_the_source_declares_times(
    ml100k: Tables, tmp_path: Path
) -> None:
    dropped = dataclasses.replace(
        ml100k, interactions=ml100k.interactions.drop(columns="timestamp")
    )
    failure = _only_failure(validate_tables(dropped, tmp_path))
    assert (failure.expectation_type, failure.column) == ("expect_column_to_exist", "timestamp")
    assert "column is missing, but the source declares timestamps" in failure.summary
    undeclared = dataclasses.replace(
        ml100k.info, signals=tuple(s for s in ml100k.info.signals if s != "timestamps")
    )
    failure = _only_failure(
        validate_tables(dataclasses.replace(dropped, info=undeclared), tmp_path)
    )
    assert failure.column == "timestamp"
    assert "column is missing (a source without time" in failure.summary


def test_blank_user_id_fails_by_name(ml100k: Tables, tmp_path: Path) -> None:
    inter = ml100k.interactions.copy()
    inter.loc[10, "user_id"] = " "
    report = validate_tables(dataclasses.replace(ml100k, interactions=inter), tmp_path)
    summaries = [f.summary for f in report.failures]
    assert "user_id: 1 of 100000 values are empty or blank" in summaries[0], summaries


def test_truncated_last_line_is_named_as_truncation(ml100k: Tables, tmp_path: Path) -> None:
    inter = ml100k.interactions.copy()
    last = len(inter) - 1
    inter.loc[last, "timestamp"] = int(str(inter.loc[last, "timestamp"])[:5])  # cut mid-field
    report = validate_tables(dataclasses.replace(ml100k, interactions=inter), tmp_path)
    assert not report.success
    assert any(
        f.column == "timestamp" and "source file looks truncated" in f.summary
        for f in report.failures
    ), report.summary()


# --- reliability (issue 24, item 6): degenerate sources and ingest's changes are named ---------


def _one_rating(t: Tables) -> Tables:
    return dataclasses.replace(t, interactions=t.interactions.assign(rating=3.0))


def _all_likes(t: Tables) -> Tables:
    inter = t.interactions.assign(rating=t.interactions["rating"].clip(lower=4.0))
    return dataclasses.replace(t, interactions=inter)


def _equal_times(t: Tables) -> Tables:
    return dataclasses.replace(t, interactions=t.interactions.assign(timestamp=881_250_949))


def _ingest_changed(t: Tables) -> Tables:
    changes = {"duplicate_rows": 7, "escaped_fields.items.title": 2, "cut_fields.items.title": 1}
    return dataclasses.replace(t, info=dataclasses.replace(t.info, changes=changes))


@pytest.mark.parametrize(
    ("degrade", "words"),
    [
        (_one_rating, ["interactions.rating: all", "ratings are 3:", "ctr_prediction a single"]),
        (_all_likes, ["are at or above data.rating_threshold (4)", "ctr_prediction has a single"]),
        (_equal_times, ["interactions.timestamp: all", "same time (881250949)", "file"]),
        (
            _ingest_changed,
            [
                "ingest: 7 duplicated (user_id, item_id, timestamp) rows were dropped before",
                "ingest: 2 fields contained control-token text",
                "ingest: 1 fields were longer than data.max_field_chars",
            ],
        ),
    ],
)
def test_degenerate_source_passes_with_a_named_warning(
    mini_atomic: Path, tmp_path: Path, degrade: Callable[[Tables], Tables], words: list[str]
) -> None:
    from recfound.data.sources import load_recbole_atomic

    tables = degrade(load_recbole_atomic(mini_atomic, "mini"))
    report = validate_tables(tables, tmp_path)

    assert report.success, report.summary()  # a warning, not a failure: the run goes on
    text = "\n".join(report.warnings)
    for phrase in words:
        assert phrase in text
    assert "warning: " in report.summary()
    saved = json.loads((tmp_path / "tables.json").read_text())
    assert saved["warnings"] == report.warnings


def test_ingest_change_counts_are_report_statistics(mini_atomic: Path, tmp_path: Path) -> None:
    from recfound.data.sources import load_recbole_atomic

    clean = validate_tables(load_recbole_atomic(mini_atomic, "mini"), tmp_path / "clean")
    assert clean.warnings == []
    assert {k: v for k, v in clean.statistics.items() if k.startswith("ingest.")} == {
        "ingest.duplicate_rows": 0,
        "ingest.escaped_fields": 0,
        "ingest.cut_fields": 0,
    }
    changed = validate_tables(
        _ingest_changed(load_recbole_atomic(mini_atomic, "mini")), tmp_path / "changed"
    )
    assert changed.statistics["ingest.duplicate_rows"] == 7
    assert changed.statistics["ingest.escaped_fields"] == 2
    assert changed.statistics["ingest.cut_fields"] == 1
