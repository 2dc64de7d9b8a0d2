"""candidate_ranking (generative): history + a numbered candidate list → the best candidate."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext

# Candidate lists shown inside the prompt are kept short so prompts fit small context windows.
MAX_LISTED_CANDIDATES = 10


class CandidateRankingBuilder(TaskBuilder):
    """Unlike sequential_recommendation, the candidates are *in the prompt*; the answer is the
    title of the one the user actually chose (at most ``MAX_LISTED_CANDIDATES`` are listed)."""

    name = "candidate_ranking"
    kind = "generative"
    needs = frozenset({S.SIGNAL_INTERACTIONS, S.SIGNAL_ITEM_TEXT})

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        count = min(ctx.num_candidates, MAX_LISTED_CANDIDATES)
        records = []
        for split in SPLITS:
            for example in ctx.user_examples(rng, split):
                candidate_ids = ctx.candidates_for(rng, example, count)
                titles = [ctx.item_ref(i) for i in candidate_ids]
                listed = " ".join(f"({n}) {t}" for n, t in enumerate(titles, start=1))
                records.append(
                    self.record(
                        split,
                        prompt=f"A user's history: {ctx.history_text(example.history_ids)}. "
                        f"Candidates: {listed}. Which candidate will the user choose?",
                        target=ctx.item_ref(example.target_id),
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=example.history_ids,
                        candidates=titles,
                        candidate_ids=candidate_ids,
                    )
                )
        return records
