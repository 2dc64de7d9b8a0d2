"""answerability_prediction (generative): can a question about an item be answered from a text?"""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import ItemInfo, TaskBuilder, TaskContext

ANSWERABILITY = ["answerable", "unanswerable"]


def item_questions(ctx: TaskContext, item: ItemInfo) -> dict[str, tuple[str, str]]:
    """Per attribute the item has: (question, answer) from its real values."""
    questions = {}
    if item.year is not None:
        questions["year"] = (f"In which year was this {ctx.item_noun} released?", str(item.year))
    if item.genres:
        questions["genres"] = (
            f"Which {ctx.category_word} does this {ctx.item_noun} belong to?",
            ", ".join(item.genres),
        )
    return questions


def item_context(ctx: TaskContext, item: ItemInfo, omit: str | None = None) -> str:
    """The item's text, without its year or its categories when ``omit`` names one."""
    parts = [item.title if omit == "year" or item.year is None else ctx.item_title(item.item_id)]
    if item.genres and omit != "genres":
        parts.append(f"{ctx.category_word}: {', '.join(item.genres)}")
    if item.description:
        parts.append(item.description[:300])
    return " — ".join(parts)


class AnswerabilityPredictionBuilder(TaskBuilder):
    """Per item, a seeded question about one of its attributes; with probability ½ the context
    is the item's full text (answerable, label 1.0), else the text with that attribute removed
    (unanswerable, label 0.0). Split by a seeded item hash."""

    name = "answerability_prediction"
    kind = "generative"
    needs = frozenset({S.SIGNAL_ITEM_TEXT, S.SIGNAL_ITEM_CATEGORIES})
    derived = (
        "The source has no Q&A: questions ask for an item's real year or categories, and the "
        "context is its text with or without that attribute."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for item_id in ctx.item_pool:
            item = ctx.items[item_id]
            questions = item_questions(ctx, item)
            if not questions:
                continue
            attribute = sorted(questions)[int(rng.integers(len(questions)))]
            answerable = bool(rng.random() < 0.5)
            context = item_context(ctx, item, omit=None if answerable else attribute)
            records.append(
                self.record(
                    ctx.item_split(f"item:{item_id}"),
                    prompt=f"Context: {context}\nQuestion: {questions[attribute][0]}\n"
                    "Can the question be answered from the context?",
                    target=ANSWERABILITY[0] if answerable else ANSWERABILITY[1],
                    item_id=str(item_id),
                    candidates=list(ANSWERABILITY),
                    label=1.0 if answerable else 0.0,
                )
            )
        return ctx.cap_records(records, rng)
