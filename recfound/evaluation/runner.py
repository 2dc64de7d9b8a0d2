"""Evaluate a model and the baselines on every task of one split, with one protocol per task shape.

The protocol follows from a task's records, not its name, so a user's own tasks are evaluated too:

============== ============================================ ========================================
protocol       which records                                metrics (``score`` is the first named)
============== ============================================ ========================================
retrieval      embedding tasks                              full ranking over every catalogue item,
                                                            history excluded: MRR@20 (NDCG@20 for
                                                            item2item), Recall/NDCG@K, MRR
ranking        candidates that are items (``candidate_ids``) Recall@1 (= HR@1), HR/NDCG@K, MRR
rating         numeric candidates and a numeric label       macro F1 of the most likely rating,
                                                            RMSE/MAE of the expected rating,
                                                            accuracy
classification other candidates (yes/no, labels)            macro F1, accuracy, AUC (two classes)
text           no candidates                                token F1, exact match, BLEU, ROUGE-L
============== ============================================ ========================================

Scores are chosen to match what RecFound reports (F1 for generative tasks, Recall@1 for sequential
recommendation, NDCG@20 for item2item, MRR@20 for query2item and user2item); every score is
higher-is-better, so a mean over tasks is meaningful. Generative tasks with candidates are scored by
the model's log-likelihood of each candidate (no free generation to parse), text tasks by greedy
generation.

``quick=True`` (the merge objective, run once per Optuna trial) replaces generation for text tasks
by teacher-forced answer-token accuracy: one forward pass instead of a decoding loop.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recfound.data.datasets import read_task_frames
from recfound.errors import UserInputError
from recfound.evaluation import metrics as M
from recfound.evaluation.baselines import BM25Ranker, ItemKNNRanker, PopularityRanker
from recfound.model.recmodel import IGNORE_INDEX, RecModel

log = logging.getLogger(__name__)

ITEMS_FILE = "items.parquet"
TRAIN_INTERACTIONS_FILE = "train_interactions.parquet"
SCORE_K = 20
# RecFound's reported metric per task, where it names one; other tasks follow their protocol.
PAPER_SCORES = {
    "item2item": "ndcg@20",
    "query2item": "mrr@20",
    "user2item": "mrr@20",
    "sequential_recommendation": "recall@1",
}
PROTOCOL_SCORES = {
    "retrieval": "mrr@20",
    "ranking": "recall@1",
    "rating": "f1",
    "classification": "f1",
    "text": "token_f1",
}


class EvaluationError(UserInputError):
    """The inputs of an evaluation are missing or inconsistent."""


@dataclass
class EvalSet:
    """One split of every task, the item catalogue and the training interactions."""

    split: str
    frames: dict[str, pd.DataFrame]
    kinds: dict[str, str]
    items: pd.DataFrame  # item_id, text
    train_interactions: pd.DataFrame  # user_id, item_id, ...
    train_targets: dict[str, list[str]] = field(default_factory=dict)

    @property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items["item_id"])}


def load_eval_set(
    tasks_dir: str | Path,
    split: str,
    max_per_task: int,
    seed: int,
    tasks: Sequence[str] | None = None,
) -> EvalSet:
    """Read ``split`` of every task (a seeded sample of at most ``max_per_task`` records each)."""
    tasks_dir = Path(tasks_dir)
    for name in (ITEMS_FILE, TRAIN_INTERACTIONS_FILE):
        if not (tasks_dir / name).is_file():
            raise EvaluationError(
                f"{tasks_dir / name} is missing: run `recfound build-tasks` (this version writes "
                "the item catalogue and the training interactions for evaluation)"
            )
    frames = read_task_frames(tasks_dir, splits=("train", split))
    selected, kinds, train_targets = {}, {}, {}
    for name, splits in frames.items():
        if tasks is not None and name not in tasks:
            continue
        frame = splits[split]
        if frame.empty:
            continue
        if len(frame) > max_per_task:
            frame = frame.sample(n=max_per_task, random_state=seed).sort_index()
        selected[name] = frame.reset_index(drop=True)
        kinds[name] = str(frame["kind"].iloc[0])
        train_targets[name] = splits["train"]["target"].astype(str).tolist()
    return EvalSet(
        split=split,
        frames=selected,
        kinds=kinds,
        items=pd.read_parquet(tasks_dir / ITEMS_FILE),
        train_interactions=pd.read_parquet(tasks_dir / TRAIN_INTERACTIONS_FILE),
        train_targets=train_targets,
    )


def protocol_of(frame: pd.DataFrame) -> str:
    """The evaluation protocol of a task, from its records (see the module docstring)."""
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


def score_metric(task: str, protocol: str) -> str:
    return PAPER_SCORES.get(task, PROTOCOL_SCORES[protocol])


# --------------------------------------------------------------------------- metric blocks


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int], recall_name: str = "recall") -> dict:
    out: dict[str, float] = {"mrr": M.mrr_at_k(ranks)}
    for k in sorted(set(ks) | {1, SCORE_K}):
        out[f"{recall_name}@{k}"] = M.recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = M.ndcg_at_k(ranks, k)
        out[f"mrr@{k}"] = M.mrr_at_k(ranks, k)
    if recall_name != "recall":
        out["recall@1"] = out[f"{recall_name}@1"]
    return out


def choice_metrics(
    frame: pd.DataFrame, scores: Sequence[Sequence[float]], protocol: str, ks: Sequence[int]
) -> dict[str, float]:
    """Metrics of candidate scores (one list per record, aligned with ``candidates``)."""
    candidates = [list(c) for c in frame["candidates"]]
    targets = frame["target"].astype(str).tolist()
    if protocol == "ranking":
        target_pos = np.array([c.index(t) for c, t in zip(candidates, targets, strict=True)])
        width = max(len(c) for c in candidates)
        matrix = np.full((len(candidates), width), -np.inf)
        for row, values in enumerate(scores):
            matrix[row, : len(values)] = values
        ranks = M.rank_of_targets(np.nan_to_num(matrix, neginf=-1e30), target_pos)
        return ranking_metrics(ranks, [k for k in ks if k <= width], recall_name="hr")
    predicted = [c[int(np.argmax(s))] for c, s in zip(candidates, scores, strict=True)]
    labels = list(dict.fromkeys(c for cands in candidates for c in cands))
    out = {
        "f1": M.macro_f1(targets, predicted, labels=labels),
        "accuracy": M.accuracy(targets, predicted),
    }
    if protocol == "rating":
        values = np.array([float(c) for c in candidates[0]])
        probs = [np.exp(np.array(s) - np.max(s)) for s in scores]
        expected = [float(values @ (p / p.sum())) for p in probs]
        truth = frame["label"].astype(float).tolist()
        out["rmse"] = M.rmse(truth, expected)
        out["mae"] = M.mae(truth, expected)
    elif len(candidates[0]) == 2:
        positive = [int(t == c[0]) for c, t in zip(candidates, targets, strict=True)]
        if 0 < sum(positive) < len(positive):
            out["auc"] = M.auc(positive, [s[0] - s[1] for s in scores])
    return out


def text_metrics(targets: Sequence[str], outputs: Sequence[str]) -> dict[str, float]:
    return {
        "token_f1": float(np.mean([token_f1(t, o) for t, o in zip(targets, outputs, strict=True)])),
        "exact_match": M.accuracy(
            [t.strip().lower() for t in targets], [o.lower() for o in outputs]
        ),
        "bleu": M.bleu(list(targets), list(outputs)),
        "rouge_l": M.corpus_rouge_l_f1(list(targets), list(outputs)),
    }


def token_f1(reference: str, hypothesis: str) -> float:
    """SQuAD-style token overlap F1 between two texts (0 when either is empty)."""
    ref, hyp = Counter(M.tokenize(reference)), Counter(M.tokenize(hypothesis))
    common = sum((ref & hyp).values())
    if not common:
        return 0.0
    precision, recall = common / sum(hyp.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def retrieval_ranks(
    frame: pd.DataFrame, scores: np.ndarray, item_index: dict[str, int]
) -> np.ndarray:
    """Full-ranking ranks of each record's ``item_id`` with its ``history_ids`` excluded."""
    missing = [i for i in frame["item_id"] if i not in item_index]
    if missing:
        raise EvaluationError(f"target items {missing[:3]} are not in the item catalogue")
    targets = np.array([item_index[i] for i in frame["item_id"]], dtype=np.int64)
    exclude = [[item_index[h] for h in hist if h in item_index] for hist in frame["history_ids"]]
    return M.rank_of_targets(scores, targets, exclude)


# --------------------------------------------------------------------------- the model


@torch.no_grad()
def teacher_forced_accuracy(rec: RecModel, prompts: list[str], targets: list[str], task: str):
    """Share of answer tokens predicted right given the true prefix (one forward pass)."""
    batch = rec.encode_with_answers(prompts, targets)
    with rec.adapter.task([task] * len(prompts)):
        logits = rec.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    labels = batch["labels"][:, 1:]
    predicted = logits[:, :-1].argmax(-1)
    mask = labels != IGNORE_INDEX
    return float(((predicted == labels) & mask).sum() / mask.sum().clamp(min=1))


def evaluate_model(
    rec: RecModel,
    data: EvalSet,
    ks: Sequence[int] = (1, 5, 10, 20),
    max_new_tokens: int = 24,
    batch_size: int = 32,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    answered_as: Mapping[str, str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per task: its metrics, plus ``score`` (higher is better) and ``score_metric``.

    ``answered_as`` maps an evaluation task the model was not trained on (zero_shot) to the
    trained task whose adapter answers it.
    """
    rec.model.eval()
    item_index = data.item_index
    item_texts = data.items["text"].astype(str).tolist()
    out: dict[str, dict[str, float]] = {}
    for task, frame in data.frames.items():
        if progress:
            progress(task)
        protocol = protocol_of(frame)
        prompts, targets = (
            frame["prompt"].astype(str).tolist(),
            frame["target"].astype(str).tolist(),
        )
        name, task = task, (answered_as or {}).get(task, task)
        if protocol == "retrieval":
            queries = rec.embed(prompts, task, batch_size=batch_size)
            documents = rec.embed(item_texts, task, batch_size=batch_size)
            scores = (queries @ documents.T).float().cpu().numpy()
            values = ranking_metrics(retrieval_ranks(frame, scores, item_index), ks)
        elif protocol == "text":
            if quick:
                chunks = [
                    teacher_forced_accuracy(
                        rec, prompts[i : i + batch_size], targets[i : i + batch_size], task
                    )
                    for i in range(0, len(prompts), batch_size)
                ]
                values = {"token_accuracy": float(np.mean(chunks))}
            else:
                outputs = rec.generate(
                    prompts, task, max_new_tokens=max_new_tokens, batch_size=batch_size
                )
                values = text_metrics(targets, outputs)
        else:
            candidates = [list(c) for c in frame["candidates"]]
            scores_list: list[list[float]] = []
            step = max(1, batch_size // max(len(c) for c in candidates))
            for i in range(0, len(prompts), step):
                scores_list += rec.score(prompts[i : i + step], candidates[i : i + step], task)
            values = choice_metrics(frame, scores_list, protocol, ks)
        metric = "token_accuracy" if quick and protocol == "text" else score_metric(name, protocol)
        out[name] = {**values, "score": float(values[metric]), "protocol": protocol}
        out[name]["score_metric"] = metric  # type: ignore[assignment]
    return out


# --------------------------------------------------------------------------- baselines


def evaluate_baselines(
    data: EvalSet, ks: Sequence[int] = (1, 5, 10, 20)
) -> dict[str, dict[str, dict[str, float]]]:
    """Baseline → task → metrics, on the same records as the model.

    - ``popularity``: items by training interaction count (retrieval and item candidates);
    - ``item_knn``: co-occurrence similarity to the record's history items (same tasks);
    - ``bm25``: the query text against every item text (retrieval tasks with a text query);
    - ``majority``: the most frequent training answer (classification, rating and text tasks).
    """
    item_ids = data.items["item_id"].astype(str).tolist()
    popularity = PopularityRanker(item_ids).fit(data.train_interactions)
    knn = ItemKNNRanker(item_ids).fit(data.train_interactions)
    bm25 = BM25Ranker(data.items["text"].astype(str).tolist())
    index = data.item_index
    results: dict[str, dict[str, dict[str, float]]] = {}

    def put(baseline: str, task: str, values: dict[str, float], protocol: str) -> None:
        metric = score_metric(task, protocol)
        results.setdefault(baseline, {})[task] = {**values, "score": float(values[metric])}

    for task, frame in data.frames.items():
        protocol = protocol_of(frame)
        histories = [list(h) for h in frame["history_ids"]]
        if protocol == "retrieval":
            full = {
                "popularity": popularity.scores(len(frame)),
                "item_knn": knn.scores(histories),
                "bm25": bm25.scores(frame["prompt"].astype(str).tolist()),
            }
            for name, scores in full.items():
                if name == "item_knn" and not any(histories):
                    continue  # no history to be similar to (query2item)
                put(
                    name, task, ranking_metrics(retrieval_ranks(frame, scores, index), ks), protocol
                )
        elif protocol == "ranking":
            for name, scores in (
                ("popularity", popularity.scores(len(frame))),
                ("item_knn", knn.scores(histories)),
            ):
                rows = [
                    [float(scores[r, index[c]]) if c in index else -1e30 for c in cands]
                    for r, cands in enumerate(frame["candidate_ids"])
                ]
                put(name, task, choice_metrics(frame, rows, protocol, ks), protocol)
        else:
            train = data.train_targets.get(task) or []
            if not train:
                continue  # evaluation-only task: no training answers to count
            majority = Counter(train).most_common(1)[0][0]
            if protocol == "text":
                values = text_metrics(frame["target"].astype(str).tolist(), [majority] * len(frame))
            else:
                rows = [
                    [0.0 if c == majority else -1e9 for c in cands] for cands in frame["candidates"]
                ]
                values = choice_metrics(frame, rows, protocol, ks)
                values.pop("auc", None)  # a constant scorer has no ranking to judge
            put("majority", task, values, protocol)
    return results


def summarize(task_metrics: dict[str, dict[str, float]], kinds: dict[str, str]) -> dict[str, float]:
    """Mean score overall and per kind (the registry's primary metrics)."""
    by_kind: dict[str, list[float]] = {"embedding": [], "generative": []}
    for task, values in task_metrics.items():
        by_kind[kinds[task]].append(float(values["score"]))
    every = by_kind["embedding"] + by_kind["generative"]
    return {
        "mean_score": float(np.mean(every)) if every else 0.0,
        "embedding_score": float(np.mean(by_kind["embedding"])) if by_kind["embedding"] else 0.0,
        "generative_score": float(np.mean(by_kind["generative"])) if by_kind["generative"] else 0.0,
    }
