"""answerability_prediction (generative): can a question about an item be answered from a text?"""

from __future__ import annotations

from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import Fields, ItemInfo, ItemTaskBuilder, TaskContext

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


def pick_question(ctx: TaskContext, item: ItemInfo, rng: Generator) -> tuple[str, str, str] | None:
    """A seeded (attribute, question, answer) of :func:`item_questions`; None if it has none."""
    questions = item_questions(ctx, item)
    if not questions:
        return None
    attribute = sorted(questions)[int(rng.integers(len(questions)))]
    return attribute, *questions[attribute]


def item_context(ctx: TaskContext, item: ItemInfo, omit: str | None = None) -> str:
    """The item's text, without its year or its categories when ``omit`` names one."""
    parts = [item.title if omit == "year" or item.year is None else ctx.item_title(item.item_id)]
    if item.genres and omit != "genres":
        parts.append(f"{ctx.category_word}: {', '.join(item.genres)}")
    if item.description:
        parts.append(item.description[:300])
    return " — ".join(parts)


class AnswerabilityPredictionBuilder(ItemTaskBuilder):
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

    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        picked = pick_question(ctx, item, rng)
        if picked is None:
            return None
        attribute, question, _ = picked
        answerable = bool(rng.random() < 0.5)
        context = item_context(ctx, item, omit=None if answerable else attribute)
        return {
            "prompt": f"Context: {context}\nQuestion: {question}\n"
            "Can the question be answered from the context?",
            "target": ANSWERABILITY[0] if answerable else ANSWERABILITY[1],
            "item_id": item.item_id,
            "candidates": list(ANSWERABILITY),
            "label": 1.0 if answerable else 0.0,
        }
