"""user_profile (generative): a user's rated history → their age group, gender and occupation."""

from __future__ import annotations

import pandas as pd

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext

# MovieLens-1M's age groups: coarse enough to be predictable from taste.
AGE_GROUPS = ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"))
GENDER_WORDS = {"M": "male", "F": "female"}


def age_group(age: int) -> str:
    """``27`` → ``"25-34"``; ``56`` → ``"56+"``."""
    for upper, name in AGE_GROUPS:
        if age < upper:
            return name
    return "50-55" if age < 56 else "56+"


def describe_user(row: pd.Series) -> str:
    """The user's known attributes as ``"age group: 25-34; gender: male; occupation: writer"``."""
    parts = []
    if "age" in row and not pd.isna(row["age"]):
        parts.append(f"age group: {age_group(int(row['age']))}")
    if "gender" in row and not pd.isna(row["gender"]) and str(row["gender"]).strip():
        parts.append(f"gender: {GENDER_WORDS.get(str(row['gender']), str(row['gender']))}")
    if "occupation" in row and not pd.isna(row["occupation"]) and str(row["occupation"]).strip():
        parts.append(f"occupation: {row['occupation']}")
    return "; ".join(parts)


class UserProfileBuilder(TaskBuilder):
    """Users (not interactions) are split 80/10/10 by a seeded hash, so a user's attributes are
    never both trained on and tested. Every user's history is their last train items only."""

    name = "user_profile"
    answer_format = (
        r"(age group|gender|occupation): [^;\s][^;]*(; (gender|occupation): [^;\s][^;]*)*"
    )
    kind = "generative"
    needs = frozenset(
        {S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT, S.SIGNAL_USER_ATTRIBUTES}
    )

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for _, row in ctx.tables.users.iterrows():
            user_id = str(row["user_id"])
            timeline = ctx.timelines.get(user_id)
            profile = describe_user(row)
            if timeline is None or timeline.num_train == 0 or not profile:
                continue
            history_ids = list(timeline.train_ids[-ctx.history_length :])
            ratings = list(timeline.ratings[: timeline.num_train][-ctx.history_length :])
            records.append(
                self.record(
                    ctx.item_split(f"user:{user_id}"),
                    prompt=f"A user rated: {ctx.history_text(history_ids, ratings)}. "
                    "Describe the user's age group, gender and occupation.",
                    target=profile,
                    user_id=user_id,
                    history_ids=history_ids,
                )
            )
        return ctx.cap_records(records, rng)
