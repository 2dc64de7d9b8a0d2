"""sequential_recommendation (generative): history → the title of the next item."""

from __future__ import annotations

from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import Fields, TaskContext, UserExample, UserTaskBuilder


def next_item_prompt(item_noun: str, sequence_text: str) -> str:
    """The prompt of a next-item request: the history as identifier tokens, oldest first (the
    ``recommend`` request writes the same prompt for a user, so it ranks as evaluation does)."""
    return f"Which {item_noun} will this user choose next? History, oldest first: {sequence_text}"


class SequentialRecommendationBuilder(UserTaskBuilder):
    """The prompt ends with the history as identifier tokens (the form behaviour pretraining
    reads), so the answer's first token, the next item's identifier, ranks the whole catalogue
    in one forward pass. ``candidates`` (the positive plus ``num_candidates - 1`` items the user
    never met) serve models without identifier tokens."""

    name = "sequential_recommendation"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_ITEM_TEXT})
    every_user = True

    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        return {
            "prompt": next_item_prompt(ctx.item_noun, ctx.sequence_text(example.sequence_ids)),
            "target": ctx.item_answer(example.target_id),
            "history_ids": example.sequence_ids,
            **ctx.candidates_for(rng, example, ctx.num_candidates),
        }
