"""item2item (embedding): an item → an item liked by the same users."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from numpy.random import Generator

from recfound.data import schema as S
from recfound.data.tasks.base import Fields, ItemInfo, ItemTaskBuilder, TaskContext

MIN_CO_LIKES = 2
TOP_PARTNERS = 10


def co_liked_partner(ctx: TaskContext, anchor_id: str, rng: np.random.Generator) -> str | None:
    """A seeded pick among the anchor's top co-liked items (:attr:`TaskContext.co_liked_counts`),
    weighted by count; None if none has at least ``MIN_CO_LIKES`` common fans."""
    counts, anchor = ctx.co_liked_counts, ctx.item_positions[anchor_id]
    start, end = counts.indptr[anchor], counts.indptr[anchor + 1]
    partners, weights = counts.indices[start:end], counts.data[start:end]
    keep = weights >= MIN_CO_LIKES
    partners, weights = partners[keep], weights[keep]
    if not len(partners):
        return None
    top = np.lexsort((partners, -weights))[:TOP_PARTNERS]
    chosen = rng.choice(top, p=weights[top] / weights[top].sum())
    return str(ctx.item_pool[partners[chosen]])


class CoLikedPairBuilder(ItemTaskBuilder):
    """A task about an anchor item and a co-liked partner (:func:`co_liked_partner`); an anchor
    without one makes no record. ``history_ids`` = [anchor] (excluded from ranking)."""

    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})

    @abstractmethod
    def pair_fields(
        self, ctx: TaskContext, anchor_id: str, partner_id: str, rng: Generator
    ) -> Fields:
        """The record's fields for the anchor and its partner (``history_ids`` is filled in)."""

    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        partner_id = co_liked_partner(ctx, item.item_id, rng)
        if partner_id is None:
            return None
        fields = self.pair_fields(ctx, item.item_id, partner_id, rng)
        return {**fields, "history_ids": [item.item_id]}


class Item2ItemBuilder(CoLikedPairBuilder):
    """Query = an anchor item's text; positive = a co-liked item's text (``item_id``). Anchors are
    split 80/10/10 by a seeded hash; ``history_ids`` = [anchor] (excluded from ranking)."""

    name = "item2item"
    kind = "embedding"
    derived = (
        "The source has no 'also liked' lists: pairs are items liked (rating at or above the "
        "threshold) by the same users in the training interactions."
    )

    def pair_fields(
        self, ctx: TaskContext, anchor_id: str, partner_id: str, rng: Generator
    ) -> Fields:
        return {
            "prompt": f"Find a {ctx.item_noun} liked by fans of this one.\n"
            f"{ctx.item_text(anchor_id)}",
            "target": ctx.item_text(partner_id),
            "item_id": partner_id,
        }
