"""sentiment_analysis (generative): a review's text → positive / neutral / negative."""

from __future__ import annotations

import numpy as np

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext

SENTIMENTS = ["negative", "neutral", "positive"]


def has_review_text(ctx: TaskContext) -> np.ndarray:
    """Boolean mask over ``ctx.interactions`` rows: those with a non-empty review text."""
    text = ctx.interactions["review_text"]
    return (text.notna() & text.astype(str).str.strip().ne("")).to_numpy()


def review_of(ctx: TaskContext, row: int) -> tuple[str, str]:
    """(title, text) of the review at ``row`` of ``ctx.interactions``; missing parts are ''."""
    title, text = ctx.interactions.loc[row, ["review_title", "review_text"]]
    return ("" if title is None or title != title else str(title).strip(), str(text).strip())


class SentimentAnalysisBuilder(TaskBuilder):
    """The label comes from the review's own rating: at or above ``rating_threshold`` is positive,
    below the midpoint of [rating_min, rating_threshold] negative, else neutral. ``label`` is the
    index of the answer in ``candidates`` (0 negative, 1 neutral, 2 positive). Reviews follow the
    leave-one-out split of the interaction they belong to."""

    name = "sentiment_analysis"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_REVIEW_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        info = ctx.tables.info
        negative_below = (info.rating_min + info.rating_threshold) / 2
        reviewed = has_review_text(ctx)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split, min_history=0, where=reviewed):
                title, text = review_of(ctx, example.row)
                if example.rating >= info.rating_threshold:
                    label = 2
                elif example.rating < negative_below:
                    label = 0
                else:
                    label = 1
                review = f"{title}. {text}" if title else text
                records.append(
                    self.record(
                        split,
                        prompt=f"Review: {review}\n"
                        "Is the sentiment of this review positive, neutral or negative?",
                        target=SENTIMENTS[label],
                        user_id=example.user_id,
                        item_id=example.target_id,
                        candidates=list(SENTIMENTS),
                        label=float(label),
                    )
                )
        return records
