"""zero_shot (generative, evaluation only): will a user like an item no training input showed?"""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import TaskRecord
from recfound.data.tasks.base import YES_NO, TaskBuilder, TaskContext, stable_hash
from recfound.data.tasks.ctr_prediction import cold_like_question


class ZeroShotBuilder(TaskBuilder):
    """Cold-start items: the target is a *cold* item (see :func:`choose_cold_items`), whose
    interactions are kept out of every task's training data. History = the user's last warm train
    items. Cold items are split half to valid, half to test by a seeded hash, so test items are
    unseen even during validation. There are no train records by design."""

    name = "zero_shot"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_RATINGS, S.SIGNAL_ITEM_TEXT})
    eval_only = True
    answered_as = "ctr_prediction"  # the same like/dislike question, on warm items

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        cold = ctx.cold_interactions
        for user_id, item_id, rating in cold[["user_id", "item_id", "rating"]].itertuples(
            index=False, name=None
        ):
            timeline = ctx.timelines[str(user_id)]
            history_ids = list(timeline.train_ids[-ctx.history_length :])
            if not history_ids:
                continue
            history_ratings = list(timeline.ratings[: timeline.num_train][-ctx.history_length :])
            split = "valid" if stable_hash(f"{ctx.seed}|cold|{item_id}") % 2 == 0 else "test"
            liked = float(rating) >= ctx.rating_threshold
            intro = ctx.rated_prompt_intro(str(user_id), str(item_id), history_ids, history_ratings)
            records.append(
                self.record(
                    split,
                    prompt=f"{intro}. {cold_like_question(ctx, str(item_id))}",
                    target="yes" if liked else "no",
                    user_id=str(user_id),
                    item_id=str(item_id),
                    history_ids=history_ids,
                    candidates=list(YES_NO),
                    label=1.0 if liked else 0.0,
                )
            )
        return ctx.cap_records(records, rng)
