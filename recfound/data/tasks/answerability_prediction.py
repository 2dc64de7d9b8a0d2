"""answerability_prediction (generative): can a question about an item be answered from a text?"""

from __future__ import annotations

from abc import abstractmethod

from numpy.random import Generator

from recfound.data.tasks.base import Fields, ItemAttributeTaskBuilder, ItemInfo, TaskContext

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


class QuestionTaskBuilder(ItemAttributeTaskBuilder):
    """A task about a seeded question on one of an item's attributes (:func:`item_questions`);
    an item without any makes no record."""

    @abstractmethod
    def question_fields(
        self, ctx: TaskContext, item: ItemInfo, asked: tuple[str, str, str], rng: Generator
    ) -> Fields:
        """The record's fields for ``asked`` = (attribute, question, answer); ``item_id`` is
        filled in."""

    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        questions = item_questions(ctx, item)
        if not questions:
            return None
        attribute = sorted(questions)[int(rng.integers(len(questions)))]
        asked = (attribute, *questions[attribute])
        return {**self.question_fields(ctx, item, asked, rng), "item_id": item.item_id}


class AnswerabilityPredictionBuilder(QuestionTaskBuilder):
    """Per item, a seeded question about one of its attributes; with probability ½ the context
    is the item's full text (answerable, label 1.0), else the text with that attribute removed
    (unanswerable, label 0.0). Split by a seeded item hash."""

    name = "answerability_prediction"
    kind = "generative"
    derived = (
        "The source has no Q&A: questions ask for an item's real year or categories, and the "
        "context is its text with or without that attribute."
    )

    def question_fields(
        self, ctx: TaskContext, item: ItemInfo, asked: tuple[str, str, str], rng: Generator
    ) -> Fields:
        attribute, question, _ = asked
        answerable = bool(rng.random() < 0.5)
        context = item_context(ctx, item, omit=None if answerable else attribute)
        return {
            "prompt": f"Context: {context}\nQuestion: {question}\n"
            "Can the question be answered from the context?",
            "target": ANSWERABILITY[0] if answerable else ANSWERABILITY[1],
            "candidates": list(ANSWERABILITY),
            "label": 1.0 if answerable else 0.0,
        }
