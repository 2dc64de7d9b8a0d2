"""user2item (embedding): a user's recent history → the next item they interact with."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext


def user_query(item_noun: str, sequence_text: str) -> str:
    """The query of a user: an instruction line, then the history as identifier tokens (what
    embeddings pool over; the ``recommend`` request's embedding path sends the same)."""
    return f"Find the {item_noun} this user chooses next.\n{sequence_text}"


class User2ItemBuilder(TaskBuilder):
    """Query = an instruction line, then the user's last ``sequence_length`` items as identifier
    tokens (the content embeddings pool over); positive = the next item's text."""

    name = "user2item"
    kind = "embedding"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_ITEM_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split, every_user=True):
                history = example.sequence_ids
                records.append(
                    self.record(
                        split,
                        prompt=user_query(ctx.item_noun, ctx.sequence_text(history)),
                        target=ctx.item_text(example.target_id),
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=history,
                    )
                )
        return records
