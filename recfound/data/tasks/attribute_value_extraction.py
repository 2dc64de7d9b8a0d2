"""attribute_value_extraction (generative): an item's listing text → one attribute's value."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import VALUE_FORMAT, TaskBuilder, TaskContext


class AttributeValueExtractionBuilder(TaskBuilder):
    """Per item, a seeded choice of an attribute it has (its categories, or its year) is asked
    for; the answer is the real value as it appears in the listing. Split by item hash."""

    name = "attribute_value_extraction"
    answer_format = VALUE_FORMAT
    kind = "generative"
    needs = frozenset({S.SIGNAL_ITEM_TEXT, S.SIGNAL_ITEM_CATEGORIES})
    derived = (
        "The source has no annotated attribute spans: the listing is the item's own text and "
        "the value is its real category list or release year."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for item_id in ctx.item_pool:
            item = ctx.items[item_id]
            values = {}
            if item.genres:
                values[ctx.category_word] = ", ".join(item.genres)
            if item.year is not None:
                values["release year"] = str(item.year)
            if not values:
                continue
            attribute = sorted(values)[int(rng.integers(len(values)))]
            records.append(
                self.record(
                    ctx.item_split(f"item:{item_id}"),
                    prompt=f"Listing: {ctx.item_text(item_id)}\n"
                    f"Extract the {attribute} of this {ctx.item_noun}.",
                    target=values[attribute],
                    item_id=item_id,
                )
            )
        return ctx.cap_records(records, rng)
