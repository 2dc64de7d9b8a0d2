"""answer_generation (generative): an item's text + a question about it → the answer."""

from __future__ import annotations

from numpy.random import Generator

from recfound.data.tasks.answerability_prediction import QuestionTaskBuilder, item_context
from recfound.data.tasks.base import (
    VALUE_FORMAT,
    Fields,
    ItemInfo,
    TaskContext,
)


class AnswerGenerationBuilder(QuestionTaskBuilder):
    """Per item, a seeded question about one of its attributes, answered from its full text.
    Split by a seeded item hash."""

    name = "answer_generation"
    answer_format = VALUE_FORMAT
    kind = "generative"
    derived = (
        "The source has no Q&A: questions ask for an item's real year or categories and the "
        "answer is that value, read from the item's text."
    )

    def question_fields(
        self, ctx: TaskContext, item: ItemInfo, asked: tuple[str, str, str], rng: Generator
    ) -> Fields:
        _, question, answer = asked
        return {
            "prompt": f"Context: {item_context(ctx, item)}\nQuestion: {question}",
            "target": answer,
        }
