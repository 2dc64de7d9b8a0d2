"""conversational_rec (generative): a short dialogue of stated preferences → a recommendation."""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import Fields, TaskContext, UserExample, UserTaskBuilder

STATED_GENRES = 2


class ConversationalRecBuilder(UserTaskBuilder):
    """The user's side of the dialogue lists what they watched (identifiers, oldest first, as
    next-item prompts show behaviour), states their most frequent genres among the items they
    liked before the target and names the last one they liked; the answer is the liked target."""

    name = "conversational_rec"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})
    derived = (
        "The source has no dialogues: each dialogue is templated from the user's real history "
        "(what they watched, top liked genres, last liked item) and answered with the next item "
        "they liked."
    )

    def examples_where(self, ctx: TaskContext) -> np.ndarray | None:
        return ctx.liked_mask()

    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        return {
            "prompt": self._dialogue(ctx, example),
            "target": ctx.item_answer(example.target_id),
            "history_ids": example.history_ids,
            **ctx.candidates_for(rng, example, ctx.num_candidates),
        }

    def _dialogue(self, ctx: TaskContext, example: UserExample) -> str:
        history = example.history_ids
        liked = [
            i
            for i, r in zip(history, example.history_ratings, strict=True)
            if r >= ctx.rating_threshold
        ] or history
        counts = Counter(g for i in liked for g in ctx.items[i].genres)
        top = [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        likes = f"I like {' and '.join(top[:STATED_GENRES])}; " if top else ""
        watched = ctx.sequence_text(example.sequence_ids)
        return (
            f"User: Can you recommend a {ctx.item_noun}?\n"
            f"Assistant: Sure! What have you watched, oldest first?\n"
            f"User: {watched}. {likes}recently I enjoyed {ctx.item_ref(liked[-1])}.\n"
            f"Assistant: Which {ctx.item_noun} would you recommend?"
        )
