"""Warnings about a source that is valid but degenerate, and about what ingest changed in it.

None of these stops the pipeline (the tables meet every expectation), but each silently changes
what the model learns, so the validation report names them:

- one rating value: ``rating_prediction`` has one answer and ``ctr_prediction`` one class;
- every rating on one side of ``data.rating_threshold``: ``ctr_prediction`` has one class;
- every timestamp equal: each user's order of events is the file's order;
- what ingest changed (``source.json`` ``changes``): duplicated rows dropped before k-core,
  control tokens escaped, oversized fields cut.
"""

from __future__ import annotations

import pandas as pd

from recfound.data.schema import SIGNAL_RATINGS, SIGNAL_TIMESTAMPS, Tables

CHANGE_TEXT = {
    "duplicate_rows": "duplicated (user_id, item_id, timestamp) rows were dropped before k-core "
    "filtering",
    "escaped_fields": "fields contained control-token text like '<item_50>' or '</s>'; its angle "
    "brackets were written as '‹ ›' so it never becomes a special or item token",
    "cut_fields": "fields were longer than data.max_field_chars and were cut to it (ending in '…')",
}


def _column(interactions: pd.DataFrame, column: str) -> pd.Series:
    """The column's numbers (a missing column is empty: its expectation reports it)."""
    if column not in interactions.columns:
        return pd.Series(dtype="float64")
    return pd.to_numeric(interactions[column], errors="coerce").dropna()


def _ratings(interactions: pd.DataFrame, threshold: float) -> list[str]:
    ratings = _column(interactions, "rating")
    if ratings.empty:
        return []
    if ratings.nunique() == 1:
        return [
            f"interactions.rating: all {len(ratings)} ratings are {ratings.iloc[0]:g}: "
            "rating_prediction has a single answer and ctr_prediction a single class; they "
            "teach and measure nothing. Use a source with varied ratings, or disable those tasks"
        ]
    likes = int((ratings >= threshold).sum())
    if likes in (0, len(ratings)):
        side = "at or above" if likes else "below"
        return [
            f"interactions.rating: all {len(ratings)} ratings are {side} data.rating_threshold "
            f"({threshold:g}): ctr_prediction has a single class. Set data.rating_threshold "
            "inside the ratings' range, or disable ctr_prediction"
        ]
    return []


def _timestamps(interactions: pd.DataFrame) -> list[str]:
    times = _column(interactions, "timestamp")
    if len(times) > 1 and times.nunique() == 1:
        return [
            f"interactions.timestamp: all {len(times)} events have the same time "
            f"({int(times.iloc[0])}): each user's events are ordered as in the source file, and "
            "the held-out (latest) item is the user's last row. Supply real event times, or set "
            "data.timestamps: false to declare file order"
        ]
    return []


def source_warnings(tables: Tables) -> list[str]:
    """One line per degenerate property of ``tables`` and per kind of change ingest made."""
    info = tables.info
    lines: list[str] = []
    if SIGNAL_RATINGS in info.signals:
        lines += _ratings(tables.interactions, info.rating_threshold)
    if SIGNAL_TIMESTAMPS in info.signals:
        lines += _timestamps(tables.interactions)
    for change, count in sorted(info.changes.items()):
        kind, _, where = change.partition(".")
        text = CHANGE_TEXT.get(kind, "rows or fields were changed")
        lines.append(f"ingest: {count} {text}" + (f" ({where})" if where else ""))
    return lines


def change_statistics(tables: Tables) -> dict[str, int]:
    """``ingest.<change>`` counts for the report's statistics (0 for kinds that did not occur,
    so the keys are the same for every source)."""
    stats = {f"ingest.{kind}": 0 for kind in CHANGE_TEXT}
    for change, count in tables.info.changes.items():
        kind = change.partition(".")[0]
        stats[f"ingest.{kind}"] = stats.get(f"ingest.{kind}", 0) + count
    return stats
