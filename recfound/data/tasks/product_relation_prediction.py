"""product_relation_prediction (generative): are two items liked by the same users? (yes/no)"""

from __future__ import annotations

from numpy.random import Generator

from recfound.data.tasks.base import YES_NO, Fields, TaskContext
from recfound.data.tasks.item2item import CoLikedPairBuilder


class ProductRelationPredictionBuilder(CoLikedPairBuilder):
    """Per anchor item, one pair: with probability ½ a co-liked partner (yes, label 1.0), else a
    random item no user liked together with it (no, label 0.0). Split by a seeded hash of the
    anchor; ``history_ids`` = [anchor], ``item_id`` = the other item."""

    name = "product_relation_prediction"
    kind = "generative"
    derived = (
        "The source has no product-relation labels: 'related' means liked by at least two of the "
        "same users in the training interactions, 'unrelated' means never liked together."
    )

    def pair_fields(
        self, ctx: TaskContext, anchor_id: str, partner_id: str, rng: Generator
    ) -> Fields:
        item_id = anchor_id
        related = bool(rng.random() < 0.5)
        if related:
            other_id = partner_id
        else:
            counts, anchor = ctx.co_liked_counts, ctx.item_positions[item_id]
            row = slice(counts.indptr[anchor], counts.indptr[anchor + 1])
            together = set(ctx.item_pool[counts.indices[row]])
            other_id = ctx.sample_negatives(rng, together | {item_id}, 1)[0]
        return {
            "prompt": f"Item A: {ctx.item_text(item_id)}\nItem B: {ctx.item_text(other_id)}\n"
            "Are A and B liked by the same users? Answer yes or no.",
            "target": "yes" if related else "no",
            "item_id": other_id,
            "candidates": list(YES_NO),
            "label": 1.0 if related else 0.0,
        }
