"""attribute_value_extraction (generative): an item's listing text → one attribute's value."""

from __future__ import annotations

from numpy.random import Generator

from recfound.data.tasks.base import (
    VALUE_FORMAT,
    Fields,
    ItemAttributeTaskBuilder,
    ItemInfo,
    TaskContext,
)


class AttributeValueExtractionBuilder(ItemAttributeTaskBuilder):
    """Per item, a seeded choice of an attribute it has (its categories, or its year) is asked
    for; the answer is the real value as it appears in the listing. Split by item hash."""

    name = "attribute_value_extraction"
    answer_format = VALUE_FORMAT
    kind = "generative"
    derived = (
        "The source has no annotated attribute spans: the listing is the item's own text and "
        "the value is its real category list or release year."
    )

    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        values = {}
        if item.genres:
            values[ctx.category_word] = ", ".join(item.genres)
        if item.year is not None:
            values["release year"] = str(item.year)
        if not values:
            return None
        attribute = sorted(values)[int(rng.integers(len(values)))]
        return {
            "prompt": f"Listing: {ctx.item_text(item.item_id)}\n"
            f"Extract the {attribute} of this {ctx.item_noun}.",
            "target": values[attribute],
            "item_id": item.item_id,
        }
