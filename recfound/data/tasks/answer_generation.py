"""answer_generation (generative): an item's text + a question about it → the answer."""

from __future__ import annotations

from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.answerability_prediction import item_context, pick_question
from recfound.data.tasks.base import VALUE_FORMAT, Fields, ItemInfo, ItemTaskBuilder, TaskContext


class AnswerGenerationBuilder(ItemTaskBuilder):
    """Per item, a seeded question about one of its attributes, answered from its full text.
    Split by a seeded item hash."""

    name = "answer_generation"
    answer_format = VALUE_FORMAT
    kind = "generative"
    needs = frozenset({S.SIGNAL_ITEM_TEXT, S.SIGNAL_ITEM_CATEGORIES})
    derived = (
        "The source has no Q&A: questions ask for an item's real year or categories and the "
        "answer is that value, read from the item's text."
    )

    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        picked = pick_question(ctx, item, rng)
        if picked is None:
            return None
        _, question, answer = picked
        return {
            "prompt": f"Context: {item_context(ctx, item)}\nQuestion: {question}",
            "target": answer,
            "item_id": item.item_id,
        }
