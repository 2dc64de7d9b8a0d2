"""query_rewriting (generative): a terse, jumbled search query → a clear, complete query."""

from __future__ import annotations

from numpy.random import Generator

from recfound.data.tasks.base import Fields, ItemInfo, TaskContext
from recfound.data.tasks.query2item import QueryTaskBuilder

FILLERS = frozenset({"and", "from", "the"})


class QueryRewritingBuilder(QueryTaskBuilder):
    """The clean query is :func:`attribute_query` of an item; the noisy input is its keywords,
    lower-cased, seeded-shuffled, with filler words dropped and years shortened (``'95``)."""

    name = "query_rewriting"
    answer_format = (
        r"[A-Za-z][\w'&/-]*( [\w'&/-]+){0,2}( and [A-Za-z][\w'&/-]*( [\w'&/-]+){0,2})? \w+s"
        r"( from (the )?\d{4}s?)?"
    )
    kind = "generative"
    derived = (
        "The source has no query logs: the clean query is written from an item's real categories "
        "and year and the noisy query is its shuffled, shortened keywords."
    )

    def query_fields(self, ctx: TaskContext, item: ItemInfo, clean: str, rng: Generator) -> Fields:
        words = [w.lower() for w in clean.split() if w not in FILLERS]
        words = [f"'{w[2:]}" if w.isdigit() and len(w) == 4 else w for w in words]
        noisy = " ".join(words[i] for i in rng.permutation(len(words)))
        return {
            "prompt": f"Rewrite this search query as a clear request: {noisy}",
            "target": clean,
        }
