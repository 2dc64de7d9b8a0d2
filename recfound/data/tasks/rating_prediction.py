"""rating_prediction (generative): rated history + a target item → the user's rating."""

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


class RatingPredictionBuilder(UserTaskBuilder):
    """Target = the real rating as text; ``label`` = the rating as a number (for RMSE/MAE)."""

    name = "rating_prediction"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})

    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        info = ctx.tables.info
        note = ctx.item_rating_note(example.target_id, example.user_id)
        return {
            "prompt": f"{ctx.rated_intro(example)}. How would they rate "
            f"{ctx.item_text(example.target_id)} ({note})? "
            f"Answer with a rating out of {format_rating(info.rating_max)}.",
            "target": format_rating(example.rating),
            "history_ids": example.history_ids,
            "candidates": [
                format_rating(r) for r in np.arange(info.rating_min, info.rating_max + 1)
            ],
            "label": example.rating,
        }
