"""explanation_generation (generative): user + item + rating → the user's own review as reason."""

from __future__ import annotations

import numpy as np
from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import (
    Fields,
    TaskContext,
    UserExample,
    UserTaskBuilder,
    format_rating,
)
from recfound.data.tasks.sentiment_analysis import has_review_text, review_of

MAX_EXPLANATION_CHARS = 300


class ExplanationGenerationBuilder(UserTaskBuilder):
    """Target = the user's review of the target item (title and text, cut at 300 characters);
    the review belongs to the interaction's leave-one-out split."""

    name = "explanation_generation"
    kind = "generative"
    needs = frozenset(
        {S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT, S.SIGNAL_REVIEW_TEXT}
    )

    def examples_where(self, ctx: TaskContext) -> np.ndarray | None:
        return has_review_text(ctx)

    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        title, text = review_of(ctx, example.row)
        explanation = f"{title}: {text}" if title else text
        top = format_rating(ctx.tables.info.rating_max)
        return {
            "prompt": f"A user's history: {ctx.history_text(example.history_ids)}. "
            f"They rated {ctx.item_text(example.target_id)} "
            f"{format_rating(example.rating)}/{top}. Explain why.",
            "target": explanation[:MAX_EXPLANATION_CHARS],
            "history_ids": example.history_ids,
            "label": example.rating,
        }
