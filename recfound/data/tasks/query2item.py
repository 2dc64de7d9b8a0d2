"""query2item (embedding): a search query → the item it asks for."""

from __future__ import annotations

from abc import abstractmethod

from numpy.random import Generator

from recfound.data.tasks.base import (
    Fields,
    ItemAttributeTaskBuilder,
    ItemInfo,
    TaskContext,
    TaskRecord,
)

# draws of attribute_query tried for each further query of a training item (an item with one
# category and a year has only two distinct queries)
QUERY_DRAWS = 20


def attribute_query(ctx: TaskContext, item: ItemInfo, rng: Generator) -> str:
    """A plain-language query from an item's real attributes: up to two of its categories and, in
    one of two phrasings, its year or decade (e.g. ``"Comedy and Romance movies from 1995"``)."""
    count = min(len(item.genres), int(rng.integers(1, 3)))
    picked = [item.genres[i] for i in sorted(rng.choice(len(item.genres), count, replace=False))]
    query = f"{' and '.join(picked)} {ctx.item_noun}s"
    if item.year is not None:
        if rng.random() < 0.5:
            query += f" from {item.year}"
        else:
            query += f" from the {item.year // 10 * 10}s"
    return query


class QueryTaskBuilder(ItemAttributeTaskBuilder):
    """A task about a search query written from an item's categories and year
    (:func:`attribute_query`); an item without categories makes no record."""

    @abstractmethod
    def query_fields(self, ctx: TaskContext, item: ItemInfo, query: str, rng: Generator) -> Fields:
        """The record's fields for ``query`` about ``item``; ``item_id`` is filled in."""

    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        if not item.genres:
            return None
        query = attribute_query(ctx, item, rng)
        return {**self.query_fields(ctx, item, query, rng), "item_id": item.item_id}


class Query2ItemBuilder(QueryTaskBuilder):
    """Items are split 80/10/10 by a seeded hash; the positive document is the item's text.

    Each training item may be asked for in ``ctx.queries_per_train_item`` distinct ways (its
    categories and year picked and phrased differently), so the embedding sees which words of a
    query match which words of an item, not one phrasing per item. The further queries come after
    the one-per-item records, from a generator of their own: the first query of every item, and
    so every validation and test record, is the same whatever the setting."""

    name = "query2item"
    kind = "embedding"
    derived = (
        "The source has no search queries: each query is written from the item's real categories "
        "and year, and its positive is that item."
    )

    def query_fields(self, ctx: TaskContext, item: ItemInfo, query: str, rng: Generator) -> Fields:
        return {
            "prompt": f"Find the {ctx.item_noun} this search asks for.\n{query}",
            "target": ctx.item_text(item.item_id),
        }

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        records = super().build(ctx)
        if ctx.queries_per_train_item <= 1:
            return records
        rng = ctx.rng(f"{self.name}:further queries")
        further = []
        for record in records:
            if record.split != "train":
                continue
            item = ctx.items[record.item_id]
            seen = {record.prompt}
            for _ in range(QUERY_DRAWS):
                if len(seen) >= ctx.queries_per_train_item:
                    break
                fields = self.query_fields(ctx, item, attribute_query(ctx, item, rng), rng)
                if fields["prompt"] not in seen:
                    seen.add(fields["prompt"])
                    further.append(self.record("train", item_id=record.item_id, **fields))
        return records + further
