"""query_rewriting (generative): a terse, jumbled search query → a clear, complete query."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext
from recfound.data.tasks.query2item import attribute_query


class QueryRewritingBuilder(TaskBuilder):
    """The clean query is :func:`attribute_query` of an item; the noisy input is its keywords,
    lower-cased, seeded-shuffled, with filler words dropped and years shortened (``'95``)."""

    name = "query_rewriting"
    answer_format = (
        r"[A-Za-z][\w'&/-]*( [\w'&/-]+){0,2}( and [A-Za-z][\w'&/-]*( [\w'&/-]+){0,2})? \w+s"
        r"( from (the )?\d{4}s?)?"
    )
    kind = "generative"
    needs = frozenset({S.SIGNAL_ITEM_TEXT, S.SIGNAL_ITEM_CATEGORIES})
    derived = (
        "The source has no query logs: the clean query is written from an item's real categories "
        "and year and the noisy query is its shuffled, shortened keywords."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        fillers = {"and", "from", "the"}
        records = []
        for item_id in ctx.item_pool:
            item = ctx.items[item_id]
            if not item.genres:
                continue
            clean = attribute_query(ctx, item, rng)
            words = [w.lower() for w in clean.split() if w not in fillers]
            words = [f"'{w[2:]}" if w.isdigit() and len(w) == 4 else w for w in words]
            noisy = " ".join(words[i] for i in rng.permutation(len(words)))
            records.append(
                self.record(
                    ctx.item_split(f"item:{item_id}"),
                    prompt=f"Rewrite this search query as a clear request: {noisy}",
                    target=clean,
                    item_id=item_id,
                )
            )
        return ctx.cap_records(records, rng)
