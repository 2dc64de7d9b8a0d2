"""user2item (embedding): a user's recent history → the next item they interact with."""

from __future__ import annotations

from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import Fields, TaskContext, UserExample, UserTaskBuilder


def user_query(item_noun: str, sequence_text: str) -> str:
    """The query of a user: an instruction line, then the history as identifier tokens (what
    embeddings pool over; the ``recommend`` request's embedding path sends the same)."""
    return f"Find the {item_noun} this user chooses next.\n{sequence_text}"


class User2ItemBuilder(UserTaskBuilder):
    """Query = an instruction line, then the user's last ``sequence_length`` items as identifier
    tokens (the content embeddings pool over); positive = the next item's text."""

    name = "user2item"
    kind = "embedding"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_ITEM_TEXT})
    every_user = True

    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        history = example.sequence_ids
        return {
            "prompt": user_query(ctx.item_noun, ctx.sequence_text(history)),
            "target": ctx.item_text(example.target_id),
            "history_ids": history,
        }
