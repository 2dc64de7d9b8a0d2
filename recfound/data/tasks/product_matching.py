"""product_matching (generative): do two differently written descriptions name the same item?"""

from __future__ import annotations

import re

import numpy as np

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import YES_NO, TaskBuilder, TaskContext

_TRAILING_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>The|A|An|Les|La|Le|Il|Das|Der|Die)$")


def rewritten_description(ctx: TaskContext, item_id: str) -> str:
    """A second rendering of an item: a trailing article moved to the front ("Usual Suspects,
    The" → "The Usual Suspects"), lower case, with its year and categories as prose."""
    item = ctx.items[item_id]
    match = _TRAILING_ARTICLE.match(item.title)
    title = f"{match['article']} {match['rest']}" if match else item.title
    parts = [title.lower()]
    if item.year is not None:
        parts.append(f"released {item.year}")
    if item.genres:
        parts.append("/".join(g.lower() for g in item.genres))
    return ", ".join(parts)


class ProductMatchingBuilder(TaskBuilder):
    """Description A is ``item_title``; B is :func:`rewritten_description` of the same item (yes,
    label 1.0) or, with probability ½, of a different item sharing a category where possible
    (no, label 0.0). Split by a seeded hash of A's item; ``history_ids`` = [A], ``item_id`` = B."""

    name = "product_matching"
    kind = "generative"
    needs = frozenset({S.SIGNAL_ITEM_TEXT})
    derived = (
        "The source has no duplicate-listing labels: matches are two renderings of the same "
        "item's real title/year/categories, non-matches a rendering of a different item."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        by_genre: dict[str, list[str]] = {}
        for item_id in ctx.item_pool:
            for genre in ctx.items[item_id].genres:
                by_genre.setdefault(genre, []).append(str(item_id))
        records = []
        for item_id in ctx.item_pool:
            item_id = str(item_id)
            same = bool(rng.random() < 0.5)
            other_id = item_id if same else self._different(ctx, item_id, by_genre, rng)
            records.append(
                self.record(
                    ctx.item_split(f"item:{item_id}"),
                    prompt=f"Description A: {ctx.item_title(item_id)}\n"
                    f"Description B: {rewritten_description(ctx, other_id)}\n"
                    f"Do A and B describe the same {ctx.item_noun}? Answer yes or no.",
                    target="yes" if same else "no",
                    item_id=other_id,
                    history_ids=[item_id],
                    candidates=list(YES_NO),
                    label=1.0 if same else 0.0,
                )
            )
        return ctx.cap_records(records, rng)

    @staticmethod
    def _different(
        ctx: TaskContext,
        item_id: str,
        by_genre: dict[str, list[str]],
        rng: np.random.Generator,
    ) -> str:
        """A hard negative: another item sharing a category, with a different title."""
        title = ctx.items[item_id].title
        genres = ctx.items[item_id].genres
        pool = by_genre[genres[int(rng.integers(len(genres)))]] if genres else []
        for _ in range(10):
            if not pool:
                break
            other = pool[int(rng.integers(len(pool)))]
            if ctx.items[other].title != title:
                return other
        while True:
            other = str(ctx.item_pool[int(rng.integers(len(ctx.item_pool)))])
            if ctx.items[other].title != title:
                return other
