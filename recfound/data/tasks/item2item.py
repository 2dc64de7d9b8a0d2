"""item2item (embedding): an item → an item liked by the same users."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext

MIN_CO_LIKES = 2
TOP_PARTNERS = 10


def co_liked_counts(ctx: TaskContext) -> sparse.csr_matrix:
    """Item × item counts of users who liked both (rating ≥ threshold), indexed like
    ``ctx.item_pool``, from *train* interactions only so no held-out interaction shapes a pair."""
    train = ctx.train_interactions
    liked = train[train["rating"].to_numpy(dtype=float) >= ctx.rating_threshold]
    item_index = {item: n for n, item in enumerate(ctx.item_pool)}
    columns = liked["item_id"].map(item_index).to_numpy()
    rows = liked["user_id"].factorize()[0]
    users_by_items = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, columns)),
        shape=(rows.max() + 1 if len(rows) else 0, len(ctx.item_pool)),
    )
    counts = (users_by_items.T @ users_by_items).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    return counts


def co_liked_partner(
    counts: sparse.csr_matrix, anchor: int, rng: np.random.Generator
) -> int | None:
    """A seeded pick among ``anchor``'s top co-liked items, weighted by count; None if none has
    at least ``MIN_CO_LIKES`` common fans."""
    start, end = counts.indptr[anchor], counts.indptr[anchor + 1]
    partners, weights = counts.indices[start:end], counts.data[start:end]
    keep = weights >= MIN_CO_LIKES
    partners, weights = partners[keep], weights[keep]
    if not len(partners):
        return None
    top = np.lexsort((partners, -weights))[:TOP_PARTNERS]
    chosen = rng.choice(top, p=weights[top] / weights[top].sum())
    return int(partners[chosen])


class Item2ItemBuilder(TaskBuilder):
    """Query = an anchor item's text; positive = a co-liked item's text (``item_id``). Anchors are
    split 80/10/10 by a seeded hash; ``history_ids`` = [anchor] (excluded from ranking)."""

    name = "item2item"
    kind = "embedding"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})
    derived = (
        "The source has no 'also liked' lists: pairs are items liked (rating at or above the "
        "threshold) by the same users in the training interactions."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        counts = co_liked_counts(ctx)
        records = []
        for anchor, anchor_id in enumerate(ctx.item_pool):
            partner = co_liked_partner(counts, anchor, rng)
            if partner is None:
                continue
            partner_id = str(ctx.item_pool[partner])
            records.append(
                self.record(
                    ctx.item_split(f"item:{anchor_id}"),
                    prompt=f"Find a {ctx.item_noun} liked by fans of this one.\n"
                    f"{ctx.item_text(anchor_id)}",
                    target=ctx.item_text(partner_id),
                    item_id=partner_id,
                    history_ids=[str(anchor_id)],
                )
            )
        return ctx.cap_records(records, rng)
