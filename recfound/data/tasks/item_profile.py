"""item_profile (generative): an item → who rates it and how, from real training ratings."""

from __future__ import annotations

import pandas as pd

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext, format_rating, reception
from recfound.data.tasks.user_profile import GENDER_WORDS, age_group

MIN_RATINGS = 5


def most_common_per_item(fans: pd.DataFrame, column: str) -> dict[str, str]:
    """Per item, the most frequent non-null value of ``column`` among its fans (ties: smallest)."""
    counts = fans.dropna(subset=[column]).groupby(["item_id", column]).size().reset_index()
    counts = counts.sort_values(["item_id", 0, column], ascending=[True, False, True])
    first = counts.drop_duplicates("item_id")
    return dict(zip(first["item_id"], first[column].astype(str), strict=True))


class ItemProfileBuilder(TaskBuilder):
    """For items with at least ``MIN_RATINGS`` *train* ratings: mean rating, its reception word,
    and — where the source has user attributes — the most common age group, gender and occupation
    of the item's fans (raters at or above the like threshold). Split by a seeded item hash."""

    name = "item_profile"
    answer_format = (
        r"(highly rated|well liked|mixed reception|poorly rated): average rating \d+(\.\d+)?/\d+"
        r" from \d+ users\.( Its fans are most often: [^.]+\.)?"
    )
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})
    derived = (
        "The source has no written item profiles: each profile summarises the item's real "
        "training ratings and the attributes of the users who liked it."
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        train = ctx.train_interactions[["user_id", "item_id", "rating"]]
        stats = train.groupby("item_id")["rating"].agg(["mean", "size"])
        stats = stats[stats["size"] >= MIN_RATINGS]
        fans = train[train["rating"] >= ctx.rating_threshold].merge(
            ctx.tables.users, on="user_id", how="left"
        )
        if "age" in fans.columns:
            fans["age_group"] = [None if pd.isna(a) else age_group(int(a)) for a in fans["age"]]
        attributes = [c for c in ("age_group", "gender", "occupation") if c in fans.columns]
        most_common = {c: most_common_per_item(fans, c) for c in attributes}
        top = format_rating(ctx.tables.info.rating_max)
        records = []
        for item_id, mean, size in stats.itertuples(name=None):
            text = f"{reception(mean, ctx)}: average rating {mean:.1f}/{top} from {size} users."
            described = [
                f"{'age group' if c == 'age_group' else c} {GENDER_WORDS.get(v, v)}"
                for c, values in most_common.items()
                if (v := values.get(item_id))
            ]
            if described:
                text += f" Its fans are most often: {', '.join(described)}."
            records.append(
                self.record(
                    ctx.item_split(f"item:{item_id}"),
                    prompt=f"Describe who enjoys this {ctx.item_noun} and how it is rated: "
                    f"{ctx.item_text(str(item_id))}",
                    target=text,
                    item_id=str(item_id),
                )
            )
        return ctx.cap_records(records, rng)
