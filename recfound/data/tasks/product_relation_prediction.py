"""product_relation_prediction (generative): are two items liked by the same users? (yes/no)"""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import YES_NO, TaskBuilder, TaskContext
from recfound.data.tasks.item2item import co_liked_counts, co_liked_partner


class ProductRelationPredictionBuilder(TaskBuilder):
    """Per anchor item, one pair: with probability ½ a co-liked partner (yes, label 1.0), else a
    random item no user liked together with it (no, label 0.0). Split by a seeded hash of the
    anchor; ``history_ids`` = [anchor], ``item_id`` = the other item."""

    name = "product_relation_prediction"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})
    derived = (
        "The source has no product-relation labels: 'related' means liked by at least two of the "
        "same users in the training interactions, 'unrelated' means never liked together."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        counts = co_liked_counts(ctx)
        records = []
        for anchor, anchor_id in enumerate(ctx.item_pool):
            partner = co_liked_partner(counts, anchor, rng)
            if partner is None:
                continue
            related = bool(rng.random() < 0.5)
            if related:
                other_id = str(ctx.item_pool[partner])
            else:
                row = slice(counts.indptr[anchor], counts.indptr[anchor + 1])
                together = set(ctx.item_pool[counts.indices[row]])
                other_id = ctx.sample_negatives(rng, together | {anchor_id}, 1)[0]
            records.append(
                self.record(
                    ctx.item_split(f"item:{anchor_id}"),
                    prompt=f"Item A: {ctx.item_text(anchor_id)}\n"
                    f"Item B: {ctx.item_text(other_id)}\n"
                    "Are A and B liked by the same users? Answer yes or no.",
                    target="yes" if related else "no",
                    item_id=other_id,
                    history_ids=[str(anchor_id)],
                    candidates=list(YES_NO),
                    label=1.0 if related else 0.0,
                )
            )
        return ctx.cap_records(records, rng)
