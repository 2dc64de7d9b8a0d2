"""What we expect of the data, as Great Expectations suites built from plain values.

Two groups of assets are checked:

- the normalized tables (``interactions``, ``items``, ``users``; see :mod:`recfound.data.schema`);
- the task datasets, all tasks and splits concatenated into one ``task_records`` frame (one GX
  validation instead of one per file keeps validation fast).

Checks that relate rows to *other* data (an interaction's item must exist in ``items``; a train
record must not show its user's held-out target or a cold item) are computed here as *derived
columns* of the checked frame, whose values are null when a row is fine and name the offending ids
otherwise; the suites expect them to be null. The suite stays small (no value sets of every item
id), and the offending ids appear in the same GX report as every other failure.

Every expectation carries ``meta = {"column": ..., "problem": ...}``: the column a person should
look at and a phrase for the failure summary ("values outside [1.0, 5.0]").
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import great_expectations as gx
import numpy as np
import pandas as pd

from recfound.data.schema import SIGNAL_TIMESTAMPS, TASK_RECORD_COLUMNS, SourceInfo

# 1990-01-01T00:00:00Z: no recommender log we ingest is older; an earlier value is a unit error.
TIMESTAMP_MIN = 631_152_000
# Clocks of log producers drift a little; a day of slack avoids failing on fresh data.
TIMESTAMP_FUTURE_SLACK_S = 86_400

TASK_KINDS = ("embedding", "generative")
HELD_OUT_SPLITS = ("valid", "test")

# Derived columns (see the module docstring).
UNKNOWN_ITEM_ID = "unknown_item_id"
UNKNOWN_USER_ID = "unknown_user_id"
SHORT_TIMESTAMP = "short_timestamp"
FILE_TASK = "file_task"
FILE_SPLIT = "file_split"
MISSING_COLUMNS = "missing_columns"
LEAKED_HELD_OUT_IDS = "leaked_held_out_ids"
LEAKED_COLD_IDS = "leaked_cold_ids"

# Columns holding item ids in a task record: all of them are "training input" for a train record.
RECORD_ID_COLUMNS = ("item_id", "history_ids", "candidate_ids")
# The scalar columns of the combined task frame that GX checks (list columns are summarized by the
# derived leakage columns, so they are left out of the batch).
TASK_FRAME_COLUMNS = (
    FILE_TASK,
    FILE_SPLIT,
    "task",
    "kind",
    "split",
    "prompt",
    "target",
    "user_id",
    "item_id",
    MISSING_COLUMNS,
    LEAKED_HELD_OUT_IDS,
    LEAKED_COLD_IDS,
)

NOT_BLANK_REGEX = r"\S"


def _meta(column: str, problem: str) -> dict[str, str]:
    return {"column": column, "problem": problem}


def _not_null(column: str) -> gx.expectations.Expectation:
    return gx.expectations.ExpectColumnValuesToNotBeNull(
        column=column, meta=_meta(column, "values are null")
    )


def _unique(column: str) -> gx.expectations.Expectation:
    return gx.expectations.ExpectColumnValuesToBeUnique(
        column=column, meta=_meta(column, "values are duplicated")
    )


def _not_blank(column: str) -> gx.expectations.Expectation:
    return gx.expectations.ExpectColumnValuesToMatchRegex(
        column=column, regex=NOT_BLANK_REGEX, meta=_meta(column, "values are empty or blank")
    )


def _all_null(derived: str, column: str, problem: str) -> gx.expectations.Expectation:
    return gx.expectations.ExpectColumnValuesToBeNull(column=derived, meta=_meta(column, problem))


def _not_empty_table() -> gx.expectations.Expectation:
    return gx.expectations.ExpectTableRowCountToBeBetween(
        min_value=1, meta=_meta("", "rows, expected at least 1")
    )


# --- normalized tables ------------------------------------------------------------------------


def interactions_suite(
    info: SourceInfo, *, now: float | None = None, columns: Iterable[str] | None = None
) -> gx.ExpectationSuite:
    """Ids present and known, ratings inside the source's range, plausible Unix-second times.

    The time range applies only where the source has real timestamps: a source without time
    stores each user's event order (0..n) in ``timestamp``. Where the source declares timestamps
    the column must exist (``columns``, the checked frame's columns, leaves out the value checks
    of a missing one), and an out-of-range time with fewer digits than the others is named as a
    truncated line. ``now`` (Unix seconds, default the current time) fixes the upper bound for
    reproducible tests. Expects the frame produced by :func:`interactions_frame`.
    """
    now = time.time() if now is None else now
    rating_range = f"[{info.rating_min}, {info.rating_max}]"
    declared = SIGNAL_TIMESTAMPS in info.signals
    has_time = columns is None or "timestamp" in set(columns)
    expectations = [
        _not_empty_table(),
        _not_null("user_id"),
        _not_blank("user_id"),
        _not_null("item_id"),
        _not_blank("item_id"),
        _not_null("rating"),
        gx.expectations.ExpectColumnValuesToBeBetween(
            column="rating",
            min_value=info.rating_min,
            max_value=info.rating_max,
            meta=_meta("rating", f"values outside {rating_range}"),
        ),
        _all_null(UNKNOWN_ITEM_ID, "item_id", "values are not an item_id of the items table"),
        _all_null(UNKNOWN_USER_ID, "user_id", "values are not a user_id of the users table"),
    ]
    missing_time = (
        "column is missing, but the source declares timestamps (source.json signals)"
        if declared
        else "column is missing (a source without time stores each user's event order in it)"
    )
    expectations.append(
        gx.expectations.ExpectColumnToExist(
            column="timestamp", meta=_meta("timestamp", missing_time)
        )
    )
    if not has_time:
        return gx.ExpectationSuite(name="interactions", expectations=expectations)
    expectations.append(_not_null("timestamp"))
    if declared:
        expectations.append(
            _all_null(
                SHORT_TIMESTAMP,
                "timestamp",
                "values are before 1990 with fewer digits than the other times: a line cut "
                "short, the source file looks truncated",
            )
        )
        latest = int(now) + TIMESTAMP_FUTURE_SLACK_S
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="timestamp",
                min_value=TIMESTAMP_MIN,
                max_value=latest,
                meta=_meta(
                    "timestamp",
                    f"values outside [{TIMESTAMP_MIN}, {latest}] "
                    "(1990-01-01 to tomorrow, Unix seconds)",
                ),
            )
        )
    return gx.ExpectationSuite(name="interactions", expectations=expectations)


def items_suite() -> gx.ExpectationSuite:
    """Every item has one unique id and a title a prompt can show."""
    return gx.ExpectationSuite(
        name="items",
        expectations=[
            _not_empty_table(),
            _not_null("item_id"),
            _unique("item_id"),
            _not_null("title"),
            _not_blank("title"),
        ],
    )


def users_suite() -> gx.ExpectationSuite:
    """Every user has one unique id."""
    return gx.ExpectationSuite(
        name="users",
        expectations=[
            _not_empty_table(),
            _not_null("user_id"),
            _not_blank("user_id"),
            _unique("user_id"),
        ],
    )


def _unknown_ids(values: pd.Series, known: pd.Series) -> pd.Series:
    """``values`` where they are not in ``known`` (as an object column), else null."""
    unknown = values.notna() & ~values.isin(set(known.dropna()))
    return values.astype(object).where(unknown, None)


def interactions_frame(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame
) -> pd.DataFrame:
    """``interactions`` plus the derived columns :func:`interactions_suite` expects to be null."""
    frame = interactions.copy()
    frame[UNKNOWN_ITEM_ID] = _unknown_ids(frame["item_id"], items["item_id"])
    frame[UNKNOWN_USER_ID] = _unknown_ids(frame["user_id"], users["user_id"])
    if "timestamp" in frame.columns:
        frame[SHORT_TIMESTAMP] = _short_timestamps(frame["timestamp"])
    return frame


def _short_timestamps(values: pd.Series) -> pd.Series:
    """Times before :data:`TIMESTAMP_MIN` with fewer digits than most (a line cut short), else
    null; a unit error (milliseconds) has more digits, not fewer. Only where most values look
    like Unix times."""
    numbers = pd.to_numeric(values, errors="coerce")
    digits = numbers.abs().round().astype("Int64").astype(str).str.len().where(numbers.notna())
    if digits.notna().sum() == 0:
        return pd.Series(None, index=values.index, dtype=object)
    usual = digits.mode().iloc[0]
    if usual < len(str(TIMESTAMP_MIN)):  # most values are not times (e.g. file order 0..n)
        return pd.Series(None, index=values.index, dtype=object)
    short = (digits < usual) & (numbers < TIMESTAMP_MIN)
    return values.astype(object).where(short.fillna(False), None)


# --- task datasets ----------------------------------------------------------------------------


def task_records_suite(enabled_tasks: Sequence[str]) -> gx.ExpectationSuite:
    """Every record complete and in the right file; no train record leaks evaluation data.

    Expects the frame produced by :func:`task_records_frame`.
    """
    tasks = sorted(set(enabled_tasks))
    return gx.ExpectationSuite(
        name="task_records",
        expectations=[
            _not_empty_table(),
            _all_null(
                MISSING_COLUMNS, "columns", "records lack TaskRecord columns (see values: files)"
            ),
            _not_null("prompt"),
            _not_blank("prompt"),
            _not_null("target"),
            _not_blank("target"),
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="task",
                value_set=tasks,
                meta=_meta("task", f"values are not an enabled task ({len(tasks)} enabled)"),
            ),
            gx.expectations.ExpectColumnPairValuesToBeEqual(
                column_A="task",
                column_B=FILE_TASK,
                meta=_meta("task", "records differ from the task of their file"),
            ),
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="kind",
                value_set=list(TASK_KINDS),
                meta=_meta("kind", f"values are not one of {list(TASK_KINDS)}"),
            ),
            gx.expectations.ExpectColumnPairValuesToBeEqual(
                column_A="split",
                column_B=FILE_SPLIT,
                meta=_meta("split", "records differ from the split of their file"),
            ),
            _all_null(
                LEAKED_HELD_OUT_IDS,
                "/".join(RECORD_ID_COLUMNS),
                "records are train records showing their user's valid/test target item",
            ),
            _all_null(
                LEAKED_COLD_IDS,
                "/".join(RECORD_ID_COLUMNS),
                "records are train records showing a cold (held-out) item",
            ),
        ],
    )


def _ids(value: object) -> list[str]:
    """The item ids in one cell of an id column: a scalar id, a list/array of ids, or missing."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Iterable):
        return [str(v) for v in value if v is not None and str(v)]
    if value is None or pd.isna(value):
        return []
    return [str(value)]


def _held_out_targets(held_out: pd.DataFrame) -> dict[str, set[str]]:
    """Per user, the target items of their valid/test records (user-based tasks only)."""
    targets: dict[str, set[str]] = defaultdict(set)
    for user_id, item_id in held_out[["user_id", "item_id"]].itertuples(index=False, name=None):
        user, items = _ids(user_id), _ids(item_id)
        if user and items:
            targets[user[0]].update(items)
    return targets


def _leak_label(task: object, user: str, leaked: set[str]) -> str:
    who = f", user {user}" if user else ""
    return f"{task}{who}: {', '.join(sorted(leaked))}"


def task_records_frame(
    frames: Mapping[str, Mapping[str, pd.DataFrame]], cold_items: Iterable[str]
) -> pd.DataFrame:
    """All task files (``frames[task][split]``) as one frame of :data:`TASK_FRAME_COLUMNS`.

    Adds the file's task and split, and the derived columns :func:`task_records_suite` expects to
    be null: ``missing_columns`` (TaskRecord columns a file lacks), ``leaked_held_out_ids`` (for a
    train record with a user: ids in its item_id/history_ids/candidate_ids that are the item_id
    of one of that user's valid/test records) and ``leaked_cold_ids`` (cold items in any train
    record). The leakage values read ``"<task>, user <id>: <ids>"``.
    """
    cold = {str(item) for item in cold_items}
    parts = []
    for task, splits in sorted(frames.items()):
        for split, frame in sorted(splits.items()):
            missing = sorted(set(TASK_RECORD_COLUMNS) - set(frame.columns))
            part = frame.reindex(columns=list(TASK_RECORD_COLUMNS)).astype(object)
            part.insert(0, FILE_TASK, task)
            part.insert(1, FILE_SPLIT, split)
            part[MISSING_COLUMNS] = f"{task}/{split}: {', '.join(missing)}" if missing else None
            parts.append(part)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TASK_FRAME_COLUMNS})
    records = pd.concat(parts, ignore_index=True)

    held_out = _held_out_targets(records[records[FILE_SPLIT].isin(HELD_OUT_SPLITS)])
    leaked_held_out: list[str | None] = [None] * len(records)
    leaked_cold: list[str | None] = [None] * len(records)
    train_rows = np.flatnonzero(records[FILE_SPLIT].to_numpy() == "train")
    columns = ["task", "user_id", *RECORD_ID_COLUMNS]
    train = records[columns].iloc[train_rows].itertuples(index=False, name=None)
    for row, (task, user_id, *id_cells) in zip(train_rows, train, strict=True):
        shown = {item for cell in id_cells for item in _ids(cell)}
        user = (_ids(user_id) or [""])[0]
        if leaked := shown & held_out.get(user, set()):
            leaked_held_out[row] = _leak_label(task, user, leaked)
        if leaked := shown & cold:
            leaked_cold[row] = _leak_label(task, user, leaked)
    records[LEAKED_HELD_OUT_IDS] = pd.Series(leaked_held_out, dtype=object)
    records[LEAKED_COLD_IDS] = pd.Series(leaked_cold, dtype=object)
    return records[list(TASK_FRAME_COLUMNS)]
