"""ctr_prediction (generative): rated history + a target item → will the user like it (yes/no)."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import YES_NO, TaskBuilder, TaskContext


class CTRPredictionBuilder(TaskBuilder):
    """A *like* is a rating at or above the source's ``rating_threshold``; ``label`` is 1.0 for a
    like and 0.0 otherwise (for AUC)."""

    name = "ctr_prediction"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split):
                liked = example.rating >= ctx.rating_threshold
                note = ctx.item_rating_note(example.target_id, example.user_id)
                records.append(
                    self.record(
                        split,
                        prompt=f"{ctx.rated_intro(example)}. Will they like "
                        f"{ctx.item_text(example.target_id)} ({note})? Answer yes or no.",
                        target="yes" if liked else "no",
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=example.history_ids,
                        candidates=list(YES_NO),
                        label=1.0 if liked else 0.0,
                    )
                )
        return records
