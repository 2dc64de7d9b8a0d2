"""sentiment_analysis (generative): a review's text → positive / neutral / negative."""

from __future__ import annotations

import numpy as np
from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import Fields, TaskContext, UserExample, UserTaskBuilder

SENTIMENTS = ["negative", "neutral", "positive"]


def has_review_text(ctx: TaskContext) -> np.ndarray:
    """Boolean mask over ``ctx.interactions`` rows: those with a non-empty review text."""
    text = ctx.interactions["review_text"]
    return (text.notna() & text.astype(str).str.strip().ne("")).to_numpy()


def review_of(ctx: TaskContext, row: int) -> tuple[str, str]:
    """(title, text) of the review at ``row`` of ``ctx.interactions``; missing parts are ''."""
    title, text = ctx.interactions.loc[row, ["review_title", "review_text"]]
    return ("" if title is None or title != title else str(title).strip(), str(text).strip())


class SentimentAnalysisBuilder(UserTaskBuilder):
    """The label comes from the review's own rating: at or above ``rating_threshold`` is positive,
    below the midpoint of [rating_min, rating_threshold] negative, else neutral. ``label`` is the
    index of the answer in ``candidates`` (0 negative, 1 neutral, 2 positive). Reviews follow the
    leave-one-out split of the interaction they belong to."""

    name = "sentiment_analysis"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_REVIEW_TEXT})
    min_history = 0

    def examples_where(self, ctx: TaskContext) -> np.ndarray | None:
        return has_review_text(ctx)

    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        info = ctx.tables.info
        title, text = review_of(ctx, example.row)
        if example.rating >= info.rating_threshold:
            label = 2
        elif example.rating < (info.rating_min + info.rating_threshold) / 2:
            label = 0
        else:
            label = 1
        review = f"{title}. {text}" if title else text
        return {
            "prompt": f"Review: {review}\n"
            "Is the sentiment of this review positive, neutral or negative?",
            "target": SENTIMENTS[label],
            "candidates": list(SENTIMENTS),
            "label": float(label),
        }
