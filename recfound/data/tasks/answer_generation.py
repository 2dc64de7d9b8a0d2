"""answer_generation (generative): an item's text + a question about it → the answer."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.answerability_prediction import item_context, item_questions
from recfound.data.tasks.base import VALUE_FORMAT, TaskBuilder, TaskContext


class AnswerGenerationBuilder(TaskBuilder):
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

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for item_id in ctx.item_pool:
            item = ctx.items[item_id]
            questions = item_questions(ctx, item)
            if not questions:
                continue
            question, answer = questions[sorted(questions)[int(rng.integers(len(questions)))]]
            records.append(
                self.record(
                    ctx.item_split(f"item:{item_id}"),
                    prompt=f"Context: {item_context(ctx, item)}\nQuestion: {question}",
                    target=answer,
                    item_id=str(item_id),
                )
            )
        return ctx.cap_records(records, rng)
