"""rating_prediction (generative): rated history + a target item → the user's rating."""

from __future__ import annotations

import numpy as np

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext, format_rating


class RatingPredictionBuilder(TaskBuilder):
    """Target = the real rating as text; ``label`` = the rating as a number (for RMSE/MAE)."""

    name = "rating_prediction"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        info = ctx.tables.info
        scale = [format_rating(r) for r in np.arange(info.rating_min, info.rating_max + 1)]
        top = format_rating(info.rating_max)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split):
                note = ctx.item_rating_note(example.target_id, example.user_id)
                records.append(
                    self.record(
                        split,
                        prompt=f"{ctx.rated_intro(example)}. How would they rate "
                        f"{ctx.item_text(example.target_id)} ({note})? "
                        f"Answer with a rating out of {top}.",
                        target=format_rating(example.rating),
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=example.history_ids,
                        candidates=scale,
                        label=example.rating,
                    )
                )
        return records
