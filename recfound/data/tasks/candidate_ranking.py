"""candidate_ranking (generative): history + a numbered candidate list → the best candidate."""

from __future__ import annotations

from recfound.data import schema as S
from recfound.data.schema import SPLITS, TaskRecord
from recfound.data.tasks.base import TaskBuilder, TaskContext

# Candidate lists shown inside the prompt are kept short so prompts fit small context windows.
MAX_LISTED_CANDIDATES = 10


class CandidateRankingBuilder(TaskBuilder):
    """Unlike sequential_recommendation, the candidates are *in the prompt* (identifier and
    title); the history is the user's behaviour as identifiers, oldest first, as next-item prompts
    show it; the answer is the identifier of the one the user actually chose (at most
    ``MAX_LISTED_CANDIDATES`` are listed)."""

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
                listed = "; ".join(ctx.item_ref(i) for i in candidate_ids)
                records.append(
                    self.record(
                        split,
                        prompt=f"A user's history, oldest first: "
                        f"{ctx.sequence_text(example.sequence_ids)}. Candidates: {listed}. "
                        "Which candidate will the user choose?",
                        target=ctx.item_answer(example.target_id),
                        user_id=example.user_id,
                        item_id=example.target_id,
                        history_ids=example.history_ids,
                        candidates=[ctx.item_answer(i) for i in candidate_ids],
                        candidate_ids=candidate_ids,
                    )
                )
        return records
