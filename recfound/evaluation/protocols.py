"""Evaluation protocols: which records of a split are evaluated, and how each task shape turns
scores into per-record outputs (one protocol per task shape).

The protocol follows from a task's records (and, for next-item tasks, from whether the model can
rank the whole catalogue), not its name, so a user's own tasks are evaluated too:

============== ============================================ ========================================
protocol       which records                                per-record output → metrics
============== ============================================ ========================================
retrieval      embedding tasks                              rank among *all* catalogue items:
                                                            Recall/NDCG@{5,10,20}, MRR@20, and the
                                                            unmasked Recall/NDCG@10
next_item      generative next-item tasks (``NEXT_ITEM_     the same full ranking, from the model's
               TASKS``) when every item has an identifier   identifier log-probabilities (a
               the model knows                              semantic code's: its tokens' sum,
                                                            every code scored; :meth:`RecModel.
                                                            catalogue_scores`)
ranking        other candidates that are items              rank among the candidates: HR/NDCG@K,
                                                            Recall@1 (= HR@1), MRR
rating         numeric candidates and a numeric label       chosen rating and expected rating:
                                                            macro-F1, accuracy, RMSE, MAE
classification other candidates (yes/no, labels)            chosen label (+ margin): macro-F1,
                                                            accuracy, AUC (two classes)
text           no candidates                                generated text: token F1, exact match,
                                                            BLEU, ROUGE-L
============== ============================================ ========================================

**Full ranking** (retrieval of a user's next item, next_item) follows the standard leave-one-out
protocol (RecBole's): every item of the catalogue is scored; every item the user interacted with
*before* the target is excluded (all train interactions, and for the test split also the valid
item; read from ``interactions.parquet``), the target never is. Records without a user (item2item,
query2item) exclude their ``history_ids``. With one relevant item Recall@K = HR@K.

**Population**: full-ranking tasks keep every record of the split; only tasks that need
generation or per-candidate scoring are capped at ``max_per_task`` (a seeded sample).

Every system produces per-record outputs (:mod:`recfound.evaluation.outputs`); metrics and their
bootstrap intervals are computed from them by one function, and baselines are evaluated on
exactly the same records as the model. Scores are those RecFound reports where it names one (F1
for generative tasks, NDCG@20 for item2item, MRR@20 for query2item and user2item) and Recall@10
for full-ranking next-item tasks; every score is higher-is-better.

``quick=True`` (the merge objective, run once per Optuna trial) replaces generation for text tasks
by teacher-forced answer-token accuracy: one forward pass instead of a decoding loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recfound import metrics as M
from recfound.data.datasets import read_task_frames
from recfound.data.tasks import TASK_BUILDERS
from recfound.errors import UserInputError
from recfound.evaluation.outputs import (
    FULL_RANKING_KS,
    ChoiceOutputs,
    RankOutputs,
    RecordOutputs,
    TextOutputs,
    chooses_first,
)
from recfound.layout import ITEMS_FILE, SPLIT_INTERACTIONS_FILE, TRAIN_INTERACTIONS_FILE
from recfound.model.recmodel import RecModel

log = logging.getLogger(__name__)

SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2}
RECORD_COLUMN = "record"  # a record's position in its split file: the key that pairs systems
# Generative tasks whose answer is the user's next item: ranked over the whole catalogue when the
# model can (identifier tokens), over their candidate list otherwise.
NEXT_ITEM_TASKS = ("sequential_recommendation", "conversational_rec")
FULL_RANKING_PROTOCOLS = ("retrieval", "next_item")
# RecFound's reported metric per task, where it names one; other tasks follow their protocol.
PAPER_SCORES = {
    "item2item": "ndcg@20",
    "query2item": "mrr@20",
    "user2item": "mrr@20",
    "sequential_recommendation": "recall@1",
}
PROTOCOL_SCORES = {
    "retrieval": "mrr@20",
    "next_item": "recall@10",
    "ranking": "recall@1",
    "rating": "f1",
    "classification": "f1",
    "text": "token_f1",
}


class EvaluationError(UserInputError):
    """The inputs of an evaluation are missing or inconsistent."""


@dataclass
class EvalSet:
    """One split of every task, the item catalogue and the interactions (with their split).

    Every frame carries a ``record`` column: the record's position in its split file, kept
    through sampling so that outputs of different runs pair record by record.
    """

    split: str
    frames: dict[str, pd.DataFrame]
    kinds: dict[str, str]
    items: pd.DataFrame  # item_id, text (+ cold, token)
    train_interactions: pd.DataFrame  # user_id, item_id, ...
    train_targets: dict[str, list[str]] = field(default_factory=dict)
    # every warm interaction with its leave-one-out split; None for task data built before it
    interactions: pd.DataFrame | None = None
    # validation records of each task (the split is not ``valid``): where a two-label task's
    # decision threshold is chosen (:func:`decision_threshold`), never on the evaluated records
    calibration: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items["item_id"])}

    def earlier_items(self) -> dict[str, list[str]]:
        """User → the items they interacted with before this split's targets, oldest first.

        For ``test``: train and valid interactions; for ``valid``: train. Empty when the
        split interactions are unknown (records then fall back to their ``history_ids``).
        """
        if self.interactions is None:
            return {}
        frame = self.interactions
        order = frame["split"].astype(str).map(SPLIT_ORDER)
        before = frame[order < SPLIT_ORDER.get(self.split, len(SPLIT_ORDER))]
        before = before.assign(user_id=before["user_id"].astype(str))
        before = before.sort_values(["user_id", "timestamp"], kind="mergesort")
        return {
            str(user): group.astype(str).tolist()
            for user, group in before.groupby("user_id", sort=False)["item_id"]
        }


def load_eval_set(
    tasks_dir: str | Path,
    split: str,
    max_per_task: int | None,
    seed: int,
    tasks: Sequence[str] | None = None,
) -> EvalSet:
    """Read ``split`` of every task, each capped at a seeded sample of ``max_per_task`` records.

    ``max_per_task=None`` keeps every record; :func:`cap_records` then caps only the tasks whose
    protocol needs it (the evaluate stage). The merge objective caps every task here.
    """
    tasks_dir = Path(tasks_dir)
    for name in (ITEMS_FILE, TRAIN_INTERACTIONS_FILE):
        if not (tasks_dir / name).is_file():
            raise EvaluationError(
                f"{tasks_dir / name} is missing: run `recfound build-tasks` (this version writes "
                "the item catalogue and the training interactions for evaluation)"
            )
    frames = read_task_frames(tasks_dir, splits=tuple(dict.fromkeys(("train", "valid", split))))
    selected, kinds, train_targets, calibration = {}, {}, {}, {}
    for name, splits in frames.items():
        if tasks is not None and name not in tasks:
            continue
        frame = splits[split]
        if frame.empty:
            continue
        frame = frame.assign(**{RECORD_COLUMN: np.arange(len(frame), dtype=np.int64)})
        selected[name] = sample_records(frame, max_per_task, seed)
        valid = splits["valid"]
        if split != "valid" and not valid.empty:
            valid = valid.assign(**{RECORD_COLUMN: np.arange(len(valid), dtype=np.int64)})
            calibration[name] = sample_records(valid, max_per_task, seed)
        kinds[name] = str(frame["kind"].iloc[0])
        known = splits["train"]
        if known.empty and split != "valid":  # evaluation-only: its validation answers
            known = splits["valid"]
        train_targets[name] = known["target"].astype(str).tolist()
    split_path = tasks_dir / SPLIT_INTERACTIONS_FILE
    if not split_path.is_file():
        log.warning(
            "%s is missing (task data from an older build): full ranking excludes only the "
            "items shown in each prompt; run `recfound build-tasks` for the standard protocol",
            split_path,
        )
    return EvalSet(
        split=split,
        frames=selected,
        kinds=kinds,
        items=pd.read_parquet(tasks_dir / ITEMS_FILE),
        train_interactions=pd.read_parquet(tasks_dir / TRAIN_INTERACTIONS_FILE),
        train_targets=train_targets,
        interactions=pd.read_parquet(split_path) if split_path.is_file() else None,
        calibration=calibration,
    )


def sample_records(frame: pd.DataFrame, max_records: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``max_records`` records, in file order (None keeps all)."""
    if max_records is not None and len(frame) > max_records:
        frame = frame.sample(n=max_records, random_state=seed).sort_index()
    return frame.reset_index(drop=True)


def protocol_of(frame: pd.DataFrame) -> str:
    """The evaluation protocol of a task from its records alone (see the module docstring);
    :func:`assign_protocols` upgrades next-item tasks to full ranking when the model can."""
    first = frame.iloc[0]
    if first["kind"] == "embedding":
        return "retrieval"
    candidates = list(first["candidates"])
    if not candidates:
        return "text"
    if len(first["candidate_ids"]) > 0:
        return "ranking"
    numeric = all(c.replace(".", "", 1).isdigit() for c in candidates)
    if numeric and not np.isnan(float(first["label"])):
        return "rating"
    return "classification"


def catalogue_tokens(items: pd.DataFrame) -> list[str] | None:
    """Each catalogue item's identifier token ('' for none), or None when items have none."""
    if "token" not in items.columns:
        return None
    tokens = items["token"].fillna("").astype(str).tolist()
    return tokens if any(tokens) else None


def can_rank_catalogue(rec: RecModel | None, items: pd.DataFrame) -> bool:
    """True when every identifier token of the catalogue is in the model's vocabulary."""
    tokens = catalogue_tokens(items)
    if rec is None or tokens is None:
        return False
    unknown = rec.unknown_identifiers(tokens)
    if unknown:
        log.warning(
            "%d item identifier tokens are not in the model's vocabulary: next-item tasks are "
            "ranked over their candidate lists, not the catalogue",
            unknown,
        )
    return unknown == 0


def assign_protocols(data: EvalSet, rec: RecModel | None = None) -> dict[str, str]:
    """Task → protocol: :func:`protocol_of`, with next-item tasks on the whole catalogue when
    the model can rank it (then the baselines use that protocol too, on the same records)."""
    full = can_rank_catalogue(rec, data.items)
    out = {}
    for task, frame in data.frames.items():
        protocol = protocol_of(frame)
        if full and protocol == "ranking" and task in NEXT_ITEM_TASKS:
            protocol = "next_item"
        out[task] = protocol
    return out


def cap_records(
    data: EvalSet, protocols: Mapping[str, str], max_per_task: int, seed: int
) -> EvalSet:
    """Cap the tasks that need generation or per-candidate scoring; full-ranking tasks keep
    every record (their cost is one forward pass or one embedding per record)."""
    frames = {
        task: frame
        if protocols[task] in FULL_RANKING_PROTOCOLS
        else sample_records(frame, max_per_task, seed)
        for task, frame in data.frames.items()
    }
    calibration = {
        task: sample_records(frame, max_per_task, seed)
        for task, frame in data.calibration.items()
        if task in frames and protocols[task] == "classification"
    }
    return replace(data, frames=frames, calibration=calibration)


def score_metric(task: str, protocol: str) -> str:
    """The metric a task is scored by (its ``score``)."""
    if protocol == "next_item":
        return PROTOCOL_SCORES["next_item"]
    return PAPER_SCORES.get(task, PROTOCOL_SCORES[protocol])


# --------------------------------------------------------------------------- per-record outputs


def record_keys(frame: pd.DataFrame) -> dict[str, Any]:
    record = (
        frame[RECORD_COLUMN].to_numpy(dtype=np.int64)
        if RECORD_COLUMN in frame
        else np.arange(len(frame), dtype=np.int64)
    )
    return {"record": record, "user_id": frame["user_id"].astype(str).tolist()}


def cutoffs_for(ks: Sequence[int], protocol: str) -> tuple[int, ...]:
    if protocol in FULL_RANKING_PROTOCOLS:
        return tuple(sorted(set(ks) | set(FULL_RANKING_KS)))
    return tuple(sorted(set(ks) | {1}))


def record_histories(frame: pd.DataFrame, earlier: Mapping[str, list[str]]) -> list[list[str]]:
    """Per record, the items the user met before the target (oldest first): the user's earlier
    interactions when known, else the ``history_ids`` shown in the prompt."""
    out = []
    for user, shown in zip(frame["user_id"].astype(str), frame["history_ids"], strict=True):
        out.append(list(earlier[user]) if user and user in earlier else [str(h) for h in shown])
    return out


def full_ranking_outputs(
    frame: pd.DataFrame,
    scores: np.ndarray,
    item_index: Mapping[str, int],
    histories: Sequence[Sequence[str]],
    ks: Sequence[int],
) -> RankOutputs:
    """Ranks of each record's ``item_id`` among every item, ``histories`` excluded (the target
    never), and the unmasked ranks."""
    missing = [i for i in frame["item_id"] if i not in item_index]
    if missing:
        raise EvaluationError(f"target items {missing[:3]} are not in the item catalogue")
    targets = np.array([item_index[i] for i in frame["item_id"]], dtype=np.int64)
    exclude = [[item_index[h] for h in hist if h in item_index] for hist in histories]
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), neginf=-1e30, posinf=1e30)
    return RankOutputs(
        **record_keys(frame),
        ranks=M.rank_of_targets(scores, targets, exclude),
        unmasked_ranks=M.rank_of_targets(scores, targets),
        ks=tuple(ks),
    )


def decision_threshold(margin: np.ndarray, first: np.ndarray) -> float:
    """The margin above which a two-label task answers its first label, chosen on validation
    records: the cut between two of their margins with the highest macro-F1 (``first`` is True
    where the true answer is the first label). Ties go to the cut nearest 0, the argmax answer.

    The argmax answers with the training data's label balance; where the evaluated records'
    balance differs (zero_shot's cold items are liked less often than ctr_prediction's training
    items), a calibrated cut answers with theirs."""
    margin = np.asarray(margin, dtype=np.float64)
    truth = np.where(np.asarray(first, dtype=bool), 0, 1)
    values = np.unique(margin)
    cuts = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1]]])
    cuts = np.append(cuts, 0.0)
    predicted = np.where(margin[None, :] > cuts[:, None], 0, 1)
    scores = M.macro_f1(np.broadcast_to(truth, predicted.shape), predicted, labels=(0, 1))
    best = np.flatnonzero(np.isclose(scores, scores.max(), rtol=0.0, atol=1e-12))
    return float(cuts[best[np.argmin(np.abs(cuts[best]))]])


def decide_at(outputs: RecordOutputs, threshold: float) -> RecordOutputs:
    """Two-label outputs answering their first label where its margin exceeds ``threshold``
    instead of the argmax; outputs without a two-label margin are returned as they are."""
    if not isinstance(outputs, ChoiceOutputs) or outputs.margin is None:
        return outputs
    chosen = np.where(chooses_first(outputs.margin, threshold), 0, 1)
    return replace(outputs, predicted=chosen, threshold=float(threshold))


def calibrated(outputs: RecordOutputs, validation: RecordOutputs | None) -> RecordOutputs:
    """``outputs`` decided at the cut :func:`decision_threshold` chooses on the same system's
    ``validation`` outputs (the model's and biased MF's alike); unchanged where either has no
    two-label margin."""
    if not isinstance(validation, ChoiceOutputs) or validation.margin is None:
        return outputs
    return decide_at(outputs, decision_threshold(validation.margin, validation.target == 0))


def candidate_outputs(
    frame: pd.DataFrame, scores: Sequence[Sequence[float]], protocol: str, ks: Sequence[int]
) -> RecordOutputs:
    """Outputs of candidate scores (one list per record, aligned with ``candidates``); two-label
    tasks answer with the argmax (:func:`calibrated` moves the cut)."""
    candidates = [[str(c) for c in cands] for cands in frame["candidates"]]
    targets = frame["target"].astype(str).tolist()
    keys = record_keys(frame)
    if protocol == "ranking":
        target_pos = np.array([c.index(t) for c, t in zip(candidates, targets, strict=True)])
        width = max(len(c) for c in candidates)
        matrix = np.full((len(candidates), width), -np.inf)
        for row, values in enumerate(scores):
            matrix[row, : len(values)] = values
        ranks = M.rank_of_targets(np.nan_to_num(matrix, neginf=-1e30), target_pos)
        return RankOutputs(
            **keys,
            ranks=ranks,
            ks=tuple(k for k in cutoffs_for(ks, protocol) if k <= width),
            recall_name="hr",
        )
    labels = list(dict.fromkeys(c for cands in candidates for c in cands))
    code = {label: i for i, label in enumerate(labels)}
    chosen = [c[int(np.argmax(s))] for c, s in zip(candidates, scores, strict=True)]
    out = ChoiceOutputs(
        **keys,
        labels=labels,
        target=np.array([code[t] for t in targets]),
        predicted=np.array([code[p] for p in chosen]),
    )
    if protocol == "rating":
        probs = [np.exp(np.array(s) - np.max(s)) for s in scores]
        out.expected = np.array(
            [
                float(np.array([float(c) for c in cands]) @ (p / p.sum()))
                for cands, p in zip(candidates, probs, strict=True)
            ]
        )
        out.truth = frame["label"].astype(float).to_numpy()
    elif len(labels) == 2 and all(c == labels for c in candidates):
        out.margin = np.array([float(s[0]) - float(s[1]) for s in scores])
    return out


def answer_format_of(task: str) -> str:
    """The well-formed pattern of a text task's answers (its builder's), '' when unknown."""
    builder = TASK_BUILDERS.get(task)
    return builder.answer_format if builder is not None else ""


def text_outputs(frame: pd.DataFrame, outputs: Sequence[str]) -> TextOutputs:
    task = str(frame["task"].iloc[0]) if len(frame) and "task" in frame else ""
    return TextOutputs(
        **record_keys(frame),
        target=frame["target"].astype(str).tolist(),
        output=list(outputs),
        answer_format=answer_format_of(task),
    )
