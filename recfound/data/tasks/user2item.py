"""user2item (embedding): a user's recent history → the next item they interact with."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext


class User2ItemBuilder(TaskBuilder):
    """Query = the user's last ``history_length`` items; positive = the next item's text."""

    name = "user2item"
    kind = "embedding"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_ITEM_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split, every_user=True):
                history = example.history_ids
                records.append(
                    self.record(
                        split,
                        prompt=f"A user recently chose: {ctx.history_text(history)}. "
                        f"Find the {ctx.item_noun} they choose next.",
                        target=ctx.item_text(example.target_id),
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=history,
                    )
                )
        return records
