"""Evaluate a model and the baselines on every task of one split, with one protocol per task shape.

The protocol follows from a task's records (and, for next-item tasks, from whether the model can
rank the whole catalogue), not its name, so a user's own tasks are evaluated too:

============== ============================================ ========================================
protocol       which records                                per-record output → metrics
============== ============================================ ========================================
retrieval      embedding tasks                              rank among *all* catalogue items:
                                                            Recall/NDCG@{5,10,20}, MRR@20, and the
                                                            unmasked Recall/NDCG@10
next_item      generative next-item tasks (``NEXT_ITEM_     the same full ranking, from the model's
               TASKS``) when every item has an identifier   identifier-token log-probabilities
               token the model knows                        (:meth:`RecModel.catalogue_scores`)
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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from recfound import metrics as M
from recfound.baselines.rankers import BM25Ranker, ItemKNNRanker, PopularityRanker
from recfound.data.datasets import read_task_frames
from recfound.data.tasks import TASK_BUILDERS
from recfound.errors import UserInputError
from recfound.evaluation.outputs import (
    FULL_RANKING_KS,
    BootstrapSettings,
    ChoiceOutputs,
    Estimate,
    RankOutputs,
    RecordOutputs,
    TextOutputs,
    TokenAccuracyOutputs,
    compare,
    mean_of_estimates,
    metric_estimates,
    outputs_from_dict,
    task_metrics,
)
from recfound.model.recmodel import RecModel

log = logging.getLogger(__name__)

ITEMS_FILE = "items.parquet"
TRAIN_INTERACTIONS_FILE = "train_interactions.parquet"
SPLIT_INTERACTIONS_FILE = "interactions.parquet"
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
    selected, kinds, train_targets = {}, {}, {}
    for name, splits in frames.items():
        if tasks is not None and name not in tasks:
            continue
        frame = splits[split]
        if frame.empty:
            continue
        frame = frame.assign(**{RECORD_COLUMN: np.arange(len(frame), dtype=np.int64)})
        selected[name] = sample_records(frame, max_per_task, seed)
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
    ids = rec.item_token_ids(tokens)
    named = torch.tensor([bool(t) for t in tokens])
    unknown = int(((ids < 0) & named).sum())
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
    return replace(data, frames=frames)


def score_metric(task: str, protocol: str) -> str:
    """The metric a task is scored by (its ``score``)."""
    if protocol == "next_item":
        return PROTOCOL_SCORES["next_item"]
    return PAPER_SCORES.get(task, PROTOCOL_SCORES[protocol])


# --------------------------------------------------------------------------- per-record outputs


def _keys(frame: pd.DataFrame) -> dict[str, Any]:
    record = (
        frame[RECORD_COLUMN].to_numpy(dtype=np.int64)
        if RECORD_COLUMN in frame
        else np.arange(len(frame), dtype=np.int64)
    )
    return {"record": record, "user_id": frame["user_id"].astype(str).tolist()}


def _ks(ks: Sequence[int], protocol: str) -> tuple[int, ...]:
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
        **_keys(frame),
        ranks=M.rank_of_targets(scores, targets, exclude),
        unmasked_ranks=M.rank_of_targets(scores, targets),
        ks=tuple(ks),
    )


def retrieval_ranks(
    frame: pd.DataFrame,
    scores: np.ndarray,
    item_index: dict[str, int],
    histories: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """Full-ranking ranks of each record's ``item_id`` (``history_ids`` excluded by default)."""
    if histories is None:
        histories = [list(h) for h in frame["history_ids"]]
    return full_ranking_outputs(frame, scores, item_index, histories, (1,)).ranks


def candidate_outputs(
    frame: pd.DataFrame, scores: Sequence[Sequence[float]], protocol: str, ks: Sequence[int]
) -> RecordOutputs:
    """Outputs of candidate scores (one list per record, aligned with ``candidates``)."""
    candidates = [[str(c) for c in cands] for cands in frame["candidates"]]
    targets = frame["target"].astype(str).tolist()
    keys = _keys(frame)
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
            ks=tuple(k for k in _ks(ks, protocol) if k <= width),
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


def choice_metrics(
    frame: pd.DataFrame, scores: Sequence[Sequence[float]], protocol: str, ks: Sequence[int]
) -> dict[str, float]:
    """Metrics of candidate scores (one list per record, aligned with ``candidates``)."""
    return task_metrics(candidate_outputs(frame, scores, protocol, ks))


def answer_format_of(task: str) -> str:
    """The well-formed pattern of a text task's answers (its builder's), '' when unknown."""
    builder = TASK_BUILDERS.get(task)
    return builder.answer_format if builder is not None else ""


def text_outputs(frame: pd.DataFrame, outputs: Sequence[str]) -> TextOutputs:
    task = str(frame["task"].iloc[0]) if len(frame) and "task" in frame else ""
    return TextOutputs(
        **_keys(frame),
        target=frame["target"].astype(str).tolist(),
        output=list(outputs),
        answer_format=answer_format_of(task),
    )


# --------------------------------------------------------------------------- the model


@torch.no_grad()
def teacher_forced_counts(
    rec: RecModel, prompts: list[str], targets: list[str], task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per record: answer tokens predicted right given the true prefix, and answer tokens."""
    answer = rec.answer_tokens(rec.encode_with_answers(prompts, targets), task)
    return answer.correct.sum(dim=1).cpu().numpy(), answer.mask.sum(dim=1).cpu().numpy()


def model_outputs(
    rec: RecModel,
    data: EvalSet,
    protocols: Mapping[str, str] | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
    max_new_tokens: int = 24,
    batch_size: int = 32,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    answered_as: Mapping[str, str] | None = None,
    fusion: Mapping[str, str] | None = None,
    alone: dict[str, RecordOutputs] | None = None,
) -> dict[str, RecordOutputs]:
    """Task → the model's per-record outputs on ``data`` under ``protocols``.

    ``answered_as`` maps an evaluation task the model was not trained on (zero_shot) to the
    trained task whose adapter answers it. ``fusion`` ranks a full-ranking task by two signals
    (:func:`fused_scores`): a retrieval task mapped to ``"bm25"`` fuses its embedding with BM25
    (hybrid retrieval); a next-item task mapped to an embedding task fuses its identifier
    log-probabilities with that task's embedding of the same user (the ``user2item`` adapter).
    The single path's outputs (the model's own signal alone) go into ``alone[task]``.
    """
    fusion = dict(fusion or {})
    alone = {} if alone is None else alone
    by_user = {
        partner: dict(zip(f["user_id"].astype(str), f["prompt"].astype(str), strict=True))
        for partner in set(fusion.values())
        if (f := data.frames.get(partner)) is not None
    }
    rec.model.eval()
    protocols = dict(protocols or assign_protocols(data, rec))
    item_index = data.item_index
    earlier = data.earlier_items()
    item_texts = data.items["text"].astype(str).tolist()
    documents: dict[str, torch.Tensor] = {}
    out: dict[str, RecordOutputs] = {}
    for name, frame in data.frames.items():
        if progress:
            progress(name)
        protocol = protocols[name]
        task = (answered_as or {}).get(name, name)
        prompts = frame["prompt"].astype(str).tolist()
        targets = frame["target"].astype(str).tolist()
        if protocol in FULL_RANKING_PROTOCOLS:
            if protocol == "retrieval":
                if task not in documents:
                    documents[task] = rec.embed(item_texts, task, batch_size=batch_size)
                queries = rec.embed(prompts, task, batch_size=batch_size)
                scores = (queries @ documents[task].T).float().cpu().numpy()
                partner = None
                if fusion.get(name) == "bm25":
                    partner = BM25Ranker(item_texts).scores(prompts)
            else:
                tokens = catalogue_tokens(data.items) or []
                scores = rec.catalogue_scores(prompts, tokens, task, batch_size).numpy()
                partner = None
                if fusion.get(name) in by_user:
                    other = fusion[name]
                    if other not in documents:
                        documents[other] = rec.embed(item_texts, other, batch_size=batch_size)
                    users = frame["user_id"].astype(str).tolist()
                    texts = [by_user[other].get(u, p) for u, p in zip(users, prompts, strict=True)]
                    queries = rec.embed(texts, other, batch_size=batch_size)
                    partner = (queries @ documents[other].T).float().cpu().numpy()
            histories = record_histories(frame, earlier)
            if partner is not None:  # the single path's ranking, reported beside the fused one
                alone[name] = full_ranking_outputs(
                    frame, scores, item_index, histories, _ks(ks, protocol)
                )
                scores = fused_scores(scores, partner)
            out[name] = full_ranking_outputs(
                frame, scores, item_index, histories, _ks(ks, protocol)
            )
        elif protocol == "text" and quick:
            counts = [
                teacher_forced_counts(
                    rec, prompts[i : i + batch_size], targets[i : i + batch_size], task
                )
                for i in range(0, len(prompts), batch_size)
            ]
            out[name] = TokenAccuracyOutputs(
                **_keys(frame),
                correct=np.concatenate([c for c, _ in counts]),
                total=np.concatenate([t for _, t in counts]),
            )
        elif protocol == "text":
            length = generation_length(rec, data.train_targets.get(name, targets), max_new_tokens)
            generated = rec.generate(prompts, task, max_new_tokens=length, batch_size=batch_size)
            out[name] = text_outputs(frame, generated)
        else:  # a closed set: labels or listed items, scored within the set
            candidates = [list(c) for c in frame["candidates"]]
            scores_list = rec.choice_scores(prompts, candidates, task, batch_size)
            out[name] = candidate_outputs(frame, scores_list, protocol, ks)
    return out


def fused_scores(*signals: np.ndarray) -> np.ndarray:
    """Two or more ``(queries, items)`` score matrices of one ranking, each standardised per
    query over the catalogue (z-scores) and added with equal weight: no signal's scale decides
    the mix and no weight is fitted (nothing is tuned on evaluation records). An item a signal
    cannot score (``-inf``: no identifier) takes that query's lowest finite score there, so the
    other signal can still rank it."""
    total = None
    for values in signals:
        values = np.array(values, dtype=np.float64)
        finite = np.isfinite(values)
        lowest = np.where(finite, values, np.inf).min(axis=1, keepdims=True)
        values = np.where(finite, values, np.where(np.isfinite(lowest), lowest, 0.0))
        spread = values.std(axis=1, keepdims=True)
        z = (values - values.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
        total = z if total is None else total + z
    return total


def generation_length(rec: RecModel, train_targets: Sequence[str], cap: int) -> int:
    """New tokens to generate for a task: enough for its longest training answer (the 95th
    percentile of their token counts, plus the end-of-text token), at most ``cap``.

    One fixed length cut ``item_profile`` answers (about 48 tokens) at 24, while short answers
    need far fewer steps. Training answers, never the evaluated ones, set it."""
    if not train_targets:
        return cap
    sample = list(train_targets)[:500]
    lengths = [len(ids) for ids in rec.tokenizer(sample, add_special_tokens=False)["input_ids"]]
    return int(min(cap, np.percentile(lengths, 95) + 1))


def scored_metrics(
    outputs: Mapping[str, RecordOutputs], protocols: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Task → its metrics (point estimates), ``score``, ``score_metric`` and ``protocol``."""
    out: dict[str, dict[str, Any]] = {}
    for task, values in outputs.items():
        metrics = task_metrics(values)
        metric = (
            "token_accuracy"
            if isinstance(values, TokenAccuracyOutputs)
            else score_metric(task, protocols[task])
        )
        out[task] = {
            **metrics,
            "score": float(metrics[metric]),
            "protocol": protocols[task],
            "score_metric": metric,
        }
    return out


def evaluate_model(
    rec: RecModel,
    data: EvalSet,
    ks: Sequence[int] = (1, 5, 10, 20),
    max_new_tokens: int = 24,
    batch_size: int = 32,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    answered_as: Mapping[str, str] | None = None,
    protocols: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per task: its point metrics, ``score`` (higher is better), ``score_metric``, ``protocol``
    (no intervals: the merge objective's fast path; the evaluate stage uses the outputs)."""
    protocols = dict(protocols or assign_protocols(data, rec))
    outputs = model_outputs(
        rec, data, protocols, ks, max_new_tokens, batch_size, quick, progress, answered_as
    )
    return scored_metrics(outputs, protocols)


# --------------------------------------------------------------------------- baselines


class NextItemScorer(Protocol):
    """A trained sequential ranker (SASRec): catalogue scores after each history."""

    item_ids: list[str]

    def scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray: ...


class RatingPredictor(Protocol):
    """A trained rating model (biased MF): a predicted rating per (user, item)."""

    def predict(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray: ...


@dataclass
class TrainedBaselines:
    """Baselines trained once per data version (the ``baselines`` stage); None = not available."""

    sasrec: NextItemScorer | None = None
    biased_mf: RatingPredictor | None = None
    rating_threshold: float = 4.0  # a predicted rating at or above this is a "like" (CTR)


def _in_catalogue_order(
    scorer: NextItemScorer, scores: np.ndarray, item_ids: list[str]
) -> np.ndarray:
    """A scorer's columns reordered to ``item_ids`` (items it does not know score -inf)."""
    own = [str(i) for i in getattr(scorer, "item_ids", item_ids)]
    if own == item_ids:
        return scores
    column_of = {item: c for c, item in enumerate(own)}
    out = np.full((scores.shape[0], len(item_ids)), -np.inf)
    for column, item in enumerate(item_ids):
        if item in column_of:
            out[:, column] = scores[:, column_of[item]]
    return out


def _rating_choice(
    frame: pd.DataFrame, predicted: np.ndarray, protocol: str, threshold: float
) -> ChoiceOutputs | None:
    """Biased-MF outputs of a rating or like/dislike task (None when it does not apply)."""
    candidates = [[str(c) for c in cands] for cands in frame["candidates"]]
    labels = list(dict.fromkeys(c for cands in candidates for c in cands))
    code = {label: i for i, label in enumerate(labels)}
    targets = [code[t] for t in frame["target"].astype(str)]
    keys = _keys(frame)
    if protocol == "rating":
        values = np.array([float(c) for c in labels])
        nearest = np.abs(predicted[:, None] - values[None, :]).argmin(axis=1)
        return ChoiceOutputs(
            **keys,
            labels=labels,
            target=np.array(targets),
            predicted=nearest,
            truth=frame["label"].astype(float).to_numpy(),
            expected=np.clip(predicted, values.min(), values.max()),
        )
    label = frame["label"].astype(float).to_numpy()
    positive = np.array([t == 0 for t in targets])
    if len(labels) != 2 or not np.array_equal(positive, label == 1.0):
        return None  # not a like/dislike task whose first label is the like
    margin = predicted - threshold
    return ChoiceOutputs(
        **keys,
        labels=labels,
        target=np.array(targets),
        predicted=np.where(margin >= 0, 0, 1),
        margin=margin,
    )


def _global_mean_outputs(frame: pd.DataFrame, interactions: pd.DataFrame) -> ChoiceOutputs | None:
    """The mean training rating as every record's expected rating (None without ratings)."""
    if "rating" not in interactions or interactions["rating"].isna().all():
        return None
    mean = float(interactions["rating"].astype(float).mean())
    return _rating_choice(frame, np.full(len(frame), mean), "rating", threshold=mean)


def mf_catalogue_scores(model: RatingPredictor, user_ids: list[str], item_ids: list[str]):
    """``(len(user_ids), len(item_ids))`` predicted ratings: biased MF as a ranker."""
    users = np.repeat(np.asarray(user_ids, dtype=object), len(item_ids))
    items = np.tile(np.asarray(item_ids, dtype=object), len(user_ids))
    predicted = np.asarray(model.predict(users.tolist(), items.tolist()), dtype=np.float64)
    return predicted.reshape(len(user_ids), len(item_ids))


def baseline_outputs(
    data: EvalSet,
    protocols: Mapping[str, str] | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
    trained: TrainedBaselines | None = None,
) -> dict[str, dict[str, RecordOutputs]]:
    """Baseline → task → per-record outputs, on the same records (and protocol) as the model.

    - ``popularity``: items by training interaction count;
    - ``item_knn``: cosine on co-occurrence (RecBole's ItemKNN) with the user's *whole* earlier
      history (train, + valid for test), or the shown items for records without a user;
    - ``sasrec``: the trained SASRec after the same history in time order (user records);
    - ``bm25``: the query text against every item text (retrieval tasks);
    - ``biased_mf``: the trained biased MF's rating (rating tasks: nearest rating and RMSE/MAE;
      like/dislike tasks: rating − threshold as the margin; user records of ranking tasks: every
      item ranked by the user's predicted rating);
    - ``majority``: the most frequent training answer (classification, rating and text tasks;
      an evaluation-only task without training answers takes its validation answers' most
      frequent one);
    - ``global_mean``: the mean training rating as every record's expected rating (rating tasks:
      the trivial RMSE; its chosen label is the rating nearest to the mean).
    """
    protocols = dict(protocols or assign_protocols(data))
    trained = trained or TrainedBaselines()
    item_ids = data.items["item_id"].astype(str).tolist()
    popularity = PopularityRanker(item_ids).fit(data.train_interactions)
    knn = ItemKNNRanker(item_ids).fit(data.train_interactions)
    bm25 = BM25Ranker(data.items["text"].astype(str).tolist())
    index = data.item_index
    earlier = data.earlier_items()
    results: dict[str, dict[str, RecordOutputs]] = {}

    def put(baseline: str, task: str, outputs: RecordOutputs | None) -> None:
        if outputs is not None:
            results.setdefault(baseline, {})[task] = outputs

    for task, frame in data.frames.items():
        protocol = protocols[task]
        histories = record_histories(frame, earlier)
        has_users = bool((frame["user_id"].astype(str) != "").all())
        if protocol in ("retrieval", "next_item", "ranking"):
            full: dict[str, np.ndarray] = {"popularity": popularity.scores(len(frame))}
            if any(histories):  # no history to be similar to (query2item)
                full["item_knn"] = knn.scores(histories)
            if trained.sasrec is not None and has_users:
                raw = trained.sasrec.scores(histories)
                full["sasrec"] = _in_catalogue_order(trained.sasrec, raw, item_ids)
            if trained.biased_mf is not None and has_users:
                full["biased_mf"] = mf_catalogue_scores(
                    trained.biased_mf, frame["user_id"].astype(str).tolist(), item_ids
                )
            if protocol == "retrieval":
                full["bm25"] = bm25.scores(frame["prompt"].astype(str).tolist())
            for name, scores in full.items():
                if protocol == "ranking":
                    rows = [
                        [float(scores[r, index[c]]) if c in index else -1e30 for c in cands]
                        for r, cands in enumerate(frame["candidate_ids"])
                    ]
                    put(name, task, candidate_outputs(frame, rows, protocol, ks))
                else:
                    put(
                        name,
                        task,
                        full_ranking_outputs(frame, scores, index, histories, _ks(ks, protocol)),
                    )
            continue
        if protocol in ("rating", "classification") and trained.biased_mf is not None:
            has_items = bool((frame["item_id"].astype(str) != "").all())
            if has_users and has_items:
                predicted = np.asarray(
                    trained.biased_mf.predict(
                        frame["user_id"].astype(str).tolist(),
                        frame["item_id"].astype(str).tolist(),
                    ),
                    dtype=np.float64,
                )
                put(
                    "biased_mf",
                    task,
                    _rating_choice(frame, predicted, protocol, trained.rating_threshold),
                )
        if protocol == "rating":
            put("global_mean", task, _global_mean_outputs(frame, data.train_interactions))
        train = data.train_targets.get(task) or []
        if not train:
            continue  # no training (nor validation) answers to count
        majority = Counter(train).most_common(1)[0][0]
        if protocol == "text":
            put("majority", task, text_outputs(frame, [majority] * len(frame)))
        else:
            rows = [
                [0.0 if c == majority else -1e9 for c in cands] for cands in frame["candidates"]
            ]
            outputs = candidate_outputs(frame, rows, protocol, ks)
            if isinstance(outputs, ChoiceOutputs):
                outputs.margin = None  # a constant scorer has no ranking to judge
            put("majority", task, outputs)
    return results


def evaluate_baselines(
    data: EvalSet,
    ks: Sequence[int] = (1, 5, 10, 20),
    protocols: Mapping[str, str] | None = None,
    trained: TrainedBaselines | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Baseline → task → point metrics and ``score`` (see :func:`baseline_outputs`)."""
    protocols = dict(protocols or assign_protocols(data))
    outputs = baseline_outputs(data, protocols, ks, trained)
    return {name: scored_metrics(per_task, protocols) for name, per_task in outputs.items()}


# --------------------------------------------------------------------------- the report


def summarize(
    task_metrics_: Mapping[str, Mapping[str, Any]], kinds: Mapping[str, str]
) -> dict[str, float]:
    """Mean score overall and per kind (the registry's primary metrics)."""
    by_kind: dict[str, list[float]] = {"embedding": [], "generative": []}
    for task, values in task_metrics_.items():
        by_kind[kinds[task]].append(float(values["score"]))
    every = by_kind["embedding"] + by_kind["generative"]
    return {
        "mean_score": float(np.mean(every)) if every else 0.0,
        "embedding_score": float(np.mean(by_kind["embedding"])) if by_kind["embedding"] else 0.0,
        "generative_score": float(np.mean(by_kind["generative"])) if by_kind["generative"] else 0.0,
    }


def _with_intervals(
    outputs: RecordOutputs, protocol: str, metric: str, settings: BootstrapSettings
) -> tuple[dict[str, Any], dict[str, Estimate]]:
    estimates = metric_estimates(outputs, settings)
    values: dict[str, Any] = {name: e.value for name, e in estimates.items()}
    values.update(
        {
            "score": estimates[metric].value,
            "score_metric": metric,
            "protocol": protocol,
            "n_records": len(outputs),
            "ci": {name: e.interval for name, e in estimates.items()},
        }
    )
    values["ci"]["score"] = estimates[metric].interval
    return values, estimates


PAIRED_RANKING_METRICS = ("recall@10", "ndcg@10")
# Baselines that need no learning: what "the model learned the task" is measured against.
TRIVIAL_BASELINES = ("majority", "global_mean", "popularity")


def versus_trivial(
    model: Mapping[str, RecordOutputs],
    baselines: Mapping[str, Mapping[str, RecordOutputs]],
    baseline_scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    score_metrics: Mapping[str, str],
    settings: BootstrapSettings,
) -> dict[str, dict[str, Any]]:
    """Per task: model − its best trivial baseline (:data:`TRIVIAL_BASELINES`) on the score
    metric, paired; ``at_or_above`` says whether the model's score is at least the baseline's.
    Rating tasks also get ``rmse``: model − global mean on RMSE (lower is better, so a negative
    difference with an interval below 0 is a win)."""
    out: dict[str, dict[str, Any]] = {}
    for task, outputs in model.items():
        known = {
            b: baseline_scores[b][task]["score"]
            for b in TRIVIAL_BASELINES
            if task in baseline_scores.get(b, {})
        }
        if not known:
            continue
        best = max(known, key=lambda b: known[b])
        entry = {
            "baseline": best,
            **compare(outputs, baselines[best][task], score_metrics[task], settings).to_dict(),
        }
        entry["at_or_above"] = bool(entry["difference"] >= 0)
        mean = baselines.get("global_mean", {}).get(task)
        if mean is not None and "rmse" in task_metrics(outputs):
            rmse = compare(outputs, mean, "rmse", settings).to_dict()
            out_rmse = {"baseline": "global_mean", **rmse, "better": bool(rmse["difference"] < 0)}
            entry["rmse"] = out_rmse
        out[task] = entry
    return out


def evaluation_document(
    model: Mapping[str, RecordOutputs],
    baselines: Mapping[str, Mapping[str, RecordOutputs]],
    protocols: Mapping[str, str],
    kinds: Mapping[str, str],
    settings: BootstrapSettings,
) -> dict[str, Any]:
    """The scores of metrics.json: every figure with its bootstrap interval.

    - ``tasks[task]``: every metric, ``score``/``score_metric``, ``protocol``, ``kind``,
      ``n_records`` and ``ci`` (metric → ``[low, high]``);
    - ``baselines[name][task]``: the same for each baseline;
    - ``versus_best_baseline[task]``: model − the best baseline on the score metric, with its
      paired interval (same resampled records for both);
    - ``versus_trivial[task]``: model − the best trivial baseline (majority/constant answer,
      global mean, popularity) likewise (:func:`versus_trivial`);
    - ``versus_each_baseline[task][baseline][metric]``: full-ranking tasks, model − each baseline
      on Recall@10 and NDCG@10 with its paired interval and whether it excludes 0;
    - ``overall``/``overall_ci``: mean scores (all, embedding, generative) and their intervals
      (tasks resampled independently, replicates averaged).
    """
    tasks: dict[str, dict[str, Any]] = {}
    scores: dict[str, Estimate] = {}
    for task, outputs in model.items():
        metric = score_metric(task, protocols[task])
        if isinstance(outputs, TokenAccuracyOutputs):
            metric = "token_accuracy"
        values, estimates = _with_intervals(outputs, protocols[task], metric, settings)
        tasks[task] = {"kind": kinds[task], **values}
        scores[task] = estimates[metric]
    baseline_scores: dict[str, dict[str, Any]] = {}
    for name, per_task in baselines.items():
        for task, outputs in per_task.items():
            if task not in tasks:
                continue
            metric = tasks[task]["score_metric"]
            values, _ = _with_intervals(outputs, protocols[task], metric, settings)
            baseline_scores.setdefault(name, {})[task] = values
    versus: dict[str, dict[str, Any]] = {}
    for task, values in tasks.items():
        known = {b: s[task]["score"] for b, s in baseline_scores.items() if task in s}
        if not known:
            continue
        best = max(known, key=lambda b: known[b])
        versus[task] = {
            "baseline": best,
            **compare(
                model[task], baselines[best][task], values["score_metric"], settings
            ).to_dict(),
        }
    # next-item tasks: the model against *every* baseline on the headline metrics, paired
    versus_each: dict[str, dict[str, dict[str, Any]]] = {}
    for task, outputs in model.items():
        if protocols[task] not in FULL_RANKING_PROTOCOLS:
            continue
        for name, per_task in baselines.items():
            if task not in per_task:
                continue
            for metric in PAIRED_RANKING_METRICS:
                entry = compare(outputs, per_task[task], metric, settings).to_dict()
                versus_each.setdefault(task, {}).setdefault(name, {})[metric] = {
                    k: entry[k] for k in ("difference", "ci", "excludes_zero")
                }
    trivial = versus_trivial(
        model,
        baselines,
        baseline_scores,
        {t: v["score_metric"] for t, v in tasks.items()},
        settings,
    )
    overall, overall_ci = {}, {}
    for key, selected in (
        ("mean_score", list(scores)),
        ("embedding_score", [t for t in scores if kinds[t] == "embedding"]),
        ("generative_score", [t for t in scores if kinds[t] == "generative"]),
    ):
        mean = mean_of_estimates([scores[t] for t in selected], settings.confidence)
        overall[key] = mean.value if selected else 0.0
        overall_ci[key] = mean.interval if selected else [None, None]
    return {
        "overall": overall,
        "overall_ci": overall_ci,
        "tasks": tasks,
        "baselines": baseline_scores,
        "versus_best_baseline": versus,
        "versus_trivial": trivial,
        "versus_each_baseline": versus_each,
        "n_records": {t: len(o) for t, o in model.items()},
        "bootstrap": settings.to_dict(),
    }


def records_document(
    outputs: Mapping[str, RecordOutputs], protocols: Mapping[str, str], split: str
) -> dict[str, Any]:
    """The per-record outputs of one system as saved in ``eval_records.json``.

    ``{"split", "tasks": {task: {"protocol", "score_metric", "outputs": {"type", "record",
    "user_id", ...columns}}}}``; read back with :func:`outputs_from_records`.
    """
    return {
        "split": split,
        "tasks": {
            task: {
                "protocol": protocols[task],
                "score_metric": (
                    "token_accuracy"
                    if isinstance(values, TokenAccuracyOutputs)
                    else score_metric(task, protocols[task])
                ),
                "outputs": values.to_dict(),
            }
            for task, values in outputs.items()
        },
    }


def outputs_from_records(document: Mapping[str, Any]) -> dict[str, RecordOutputs]:
    """Task → per-record outputs, from a :func:`records_document`."""
    return {task: outputs_from_dict(v["outputs"]) for task, v in document["tasks"].items()}
