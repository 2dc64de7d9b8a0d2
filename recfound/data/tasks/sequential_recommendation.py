"""sequential_recommendation (generative): history → the title of the next item."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext


class SequentialRecommendationBuilder(TaskBuilder):
    """The prompt lists the history only; ``candidates`` (the positive plus ``num_candidates - 1``
    items the user never met) let evaluation score the generated title as a ranking."""

    name = "sequential_recommendation"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_ITEM_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split, every_user=True):
                candidate_ids = ctx.candidates_for(rng, example, ctx.num_candidates)
                records.append(
                    self.record(
                        split,
                        prompt=f"A user's history, oldest first: "
                        f"{ctx.history_text(example.history_ids)}. "
                        f"Which {ctx.item_noun} will they choose next?",
                        target=ctx.item_title(example.target_id),
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=example.history_ids,
                        candidates=[ctx.item_title(i) for i in candidate_ids],
                        candidate_ids=candidate_ids,
                    )
                )
        return records
