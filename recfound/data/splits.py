"""Which interactions train, validate and test every task, and which items stay cold.

Two decisions are made here, once, for all tasks:

- **cold items** (:func:`choose_cold_items`): a seeded share of items whose interactions are kept
  out of every training input; only the ``zero_shot`` task evaluates on them.
- **chronological leave-one-out** (:func:`split_leave_one_out`): per user, the last interaction is
  the test target, the second-to-last the validation target, everything earlier is training data.
  Evaluating on each user's *future* is what keeps a test target out of every training input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT_COLUMN = "split"
MIN_INTERACTIONS_FOR_HOLDOUT = 3


def choose_cold_items(interactions: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    """A seeded choice of ``round(fraction × #items)`` items to hold out of all training.

    Only items with at least 2 interactions are eligible, so every cold item can give at least one
    evaluation example with a user who also has other (warm) history. The choice depends only on
    the set of item ids, the fraction and the seed, not on row order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"cold item fraction must lie in [0, 1), got {fraction}")
    counts = interactions["item_id"].astype(str).value_counts()
    eligible = np.array(sorted(counts.index[counts >= 2]), dtype=object)
    wanted = min(int(round(fraction * counts.size)), eligible.size)
    if wanted == 0:
        return set()
    rng = np.random.default_rng(seed)
    return {str(i) for i in rng.choice(eligible, size=wanted, replace=False)}


def split_leave_one_out(interactions: pd.DataFrame) -> pd.DataFrame:
    """Add a ``split`` column (train/valid/test) by per-user chronological leave-one-out.

    Each user's interactions are ordered by timestamp, ties kept in their original row order; the
    last is ``test``, the second-to-last ``valid``, the rest ``train``. Users with fewer than 3
    interactions cannot give both held-out targets and stay entirely in ``train``.

    Returns a new frame sorted by (user_id, chronology) with a fresh RangeIndex; the input is not
    modified.
    """
    frame = interactions.assign(_row=np.arange(len(interactions)))
    frame = frame.sort_values(["user_id", "timestamp", "_row"], kind="mergesort")
    from_end = frame.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    size = frame.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    split = np.where(from_end == 0, "test", np.where(from_end == 1, "valid", "train"))
    split = np.where(size < MIN_INTERACTIONS_FOR_HOLDOUT, "train", split)
    frame[SPLIT_COLUMN] = split.astype(object)
    return frame.drop(columns="_row").reset_index(drop=True)
