"""The normalized tables every source is turned into, and the one record schema of all tasks.

Normalized tables (parquet under ``data/interim/``):

- ``interactions``: user_id (str), item_id (str), rating (float), timestamp (int64, Unix seconds),
  review_title (str | null), review_text (str | null).
- ``items``: item_id (str, unique), title (str, non-empty), description (str, may be empty),
  categories (str, ``|``-separated, may be empty), year (Int64 | null).
- ``users``: user_id (str, unique) and optional attributes age (Int64 | null), gender, occupation
  (str | null). A source without user attributes writes only user_id.

``source.json`` beside them says which source produced them, the rating range and which *signals*
the source carries; task builders declare the signals they need.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

# Signals a source can carry; each task builder names the ones it needs.
SIGNAL_INTERACTIONS = "interactions"
SIGNAL_TIMESTAMPS = "timestamps"
SIGNAL_RATINGS = "ratings"
SIGNAL_ITEM_TEXT = "item_text"
SIGNAL_ITEM_CATEGORIES = "item_categories"
SIGNAL_USER_ATTRIBUTES = "user_attributes"
SIGNAL_REVIEW_TEXT = "review_text"

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "review_title", "review_text")
ITEM_COLUMNS = ("item_id", "title", "description", "categories", "year")
USER_ATTRIBUTE_COLUMNS = ("age", "gender", "occupation")

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SourceInfo:
    """What ``ingest`` learnt about the source; written as ``source.json``."""

    name: str
    rating_min: float
    rating_max: float
    rating_threshold: float
    signals: tuple[str, ...]
    changes: dict[str, int] = field(default_factory=dict)
    """What ingest changed in the source, by kind (e.g. ``escaped_fields.items.title``,
    ``cut_fields.items.description``, ``duplicate_rows``); only kinds that occurred. The validate
    stage reports them."""

    def to_dict(self) -> dict:
        raw = {**asdict(self), "signals": list(self.signals)}
        if not self.changes:  # a source ingest left as it was keeps its source.json unchanged
            del raw["changes"]
        return raw

    @classmethod
    def from_dict(cls, raw: dict) -> SourceInfo:
        return cls(
            name=raw["name"],
            rating_min=float(raw["rating_min"]),
            rating_max=float(raw["rating_max"]),
            rating_threshold=float(raw["rating_threshold"]),
            signals=tuple(raw["signals"]),
            changes={str(k): int(v) for k, v in (raw.get("changes") or {}).items()},
        )


@dataclass(frozen=True)
class Tables:
    """The three normalized tables of one source."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    info: SourceInfo


TaskKind = Literal["embedding", "generative"]


@dataclass
class TaskRecord:
    """One example of any task; every task's parquet files have exactly these columns.

    - ``prompt``: the model input (for embedding tasks, the query side).
    - ``target``: the expected answer (for embedding tasks, the positive document's text).
    - ``candidates``: answer options (ranking, classification labels) or empty.
    - ``user_id``/``item_id``: who and what the example is about (``item_id`` is the target item
      for retrieval tasks, so evaluation can rank all items); ``history_ids`` are the user's items
      visible in the prompt (excluded from full ranking); ``candidate_ids`` are the item ids of
      ``candidates`` where they are items.
    - ``label``: a number for regression/classification tasks (rating, like = 1.0), else NaN.
    """

    task: str
    kind: TaskKind
    split: str
    prompt: str
    target: str
    user_id: str = ""
    item_id: str = ""
    history_ids: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    candidate_ids: list[str] = field(default_factory=list)
    label: float = float("nan")


TASK_RECORD_COLUMNS = tuple(TaskRecord.__dataclass_fields__)


def records_to_frame(records: list[TaskRecord]) -> pd.DataFrame:
    """Records → a DataFrame with the fixed column order (an empty list gives the empty schema)."""
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TASK_RECORD_COLUMNS})
    frame = pd.DataFrame([asdict(r) for r in records], columns=list(TASK_RECORD_COLUMNS))
    frame["label"] = frame["label"].astype(float)
    return frame
