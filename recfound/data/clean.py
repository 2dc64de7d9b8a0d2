"""Source text made safe to show in a prompt: control tokens escaped, oversized fields cut.

A title such as ``"Great <item_50> </s> <pad>"`` would otherwise reach the tokenizer as the item
identifier, end-of-sequence and padding tokens (tokenizers match their added and special tokens
anywhere in a text). Every ``<...>`` span in a text field therefore has its angle brackets
replaced by the look-alike single guillemets ``‹...›``: a person still reads it, no tokenizer
matches it. A field longer than ``data.max_field_chars`` is cut to that many characters, the last
being ``…``, so that one 100 KB title cannot make every prompt that shows it too long to serve.

Ids are left alone (they are keys, not text shown as such). Each change is counted per table and
column in :attr:`SourceInfo.changes`, which the validate stage reports.
"""

from __future__ import annotations

import dataclasses
import re

import pandas as pd

from recfound.data import schema as S

# A span that could be a special or identifier token: <s>, </s>, <pad>, <item_50>, <|endoftext|>.
CONTROL_TOKEN = re.compile(r"<([^<>\n]{1,100})>")
ESCAPED = r"‹\1›"
ELLIPSIS = "…"

# Text columns a prompt may show, per table (a column absent from a source is skipped).
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "items": ("title", "description", "categories"),
    "interactions": ("review_title", "review_text"),
    "users": ("gender", "occupation"),
}


def _clean_column(values: pd.Series, max_chars: int) -> tuple[pd.Series, int, int]:
    """``(cleaned values, escaped count, cut count)``; missing values stay missing."""
    present = values.notna()
    if not present.any():
        return values, 0, 0
    text = values[present].astype(str)
    escaped = text.str.replace(CONTROL_TOKEN, ESCAPED, regex=True)
    n_escaped = int(escaped.ne(text).sum())
    too_long = escaped.str.len() > max_chars
    n_cut = int(too_long.sum())
    if not n_escaped and not n_cut:
        return values, 0, 0  # untouched: same values, same dtype
    cut = escaped.where(~too_long, escaped.str.slice(0, max_chars - 1) + ELLIPSIS)
    cleaned = values.copy()
    cleaned[present] = cut
    return cleaned, n_escaped, n_cut


def clean_text_fields(tables: S.Tables, max_chars: int) -> S.Tables:
    """Escape control tokens and cut fields longer than ``max_chars`` in every text column;
    the counts (``escaped_fields.<table>.<column>``, ``cut_fields.<table>.<column>``) are added
    to ``tables.info.changes``. Tables with nothing to change are returned as they are."""
    changes = dict(tables.info.changes)
    frames = {
        "items": tables.items,
        "interactions": tables.interactions,
        "users": tables.users,
    }
    for table, columns in TEXT_COLUMNS.items():
        frame = frames[table]
        for column in columns:
            if column not in frame.columns:
                continue
            cleaned, n_escaped, n_cut = _clean_column(frame[column], max_chars)
            if n_escaped:
                changes[f"escaped_fields.{table}.{column}"] = n_escaped
            if n_cut:
                changes[f"cut_fields.{table}.{column}"] = n_cut
            if n_escaped or n_cut:
                frame = frame.assign(**{column: cleaned})
        frames[table] = frame
    if changes == tables.info.changes:
        return tables
    return S.Tables(info=dataclasses.replace(tables.info, changes=changes), **frames)
