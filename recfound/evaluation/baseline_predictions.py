"""The baselines' per-record outputs on exactly the model's records and protocols: popularity,
item-kNN, BM25, SASRec and biased MF (from the `baselines` stage), majority answer, global mean."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from recfound.baselines.rankers import BM25Ranker, ItemKNNRanker, PopularityRanker
from recfound.evaluation.outputs import (
    ChoiceOutputs,
    RecordOutputs,
)
from recfound.evaluation.protocols import (
    EvalSet,
    assign_protocols,
    calibrated,
    candidate_outputs,
    cutoffs_for,
    full_ranking_outputs,
    record_histories,
    record_keys,
    text_outputs,
)

log = logging.getLogger(__name__)


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


def _mf_ratings(model: RatingPredictor, frame: pd.DataFrame) -> np.ndarray:
    """The biased MF's predicted rating of each record's user and item."""
    users = frame["user_id"].astype(str).tolist()
    return np.asarray(model.predict(users, frame["item_id"].astype(str).tolist()), np.float64)


def _rating_choice(
    frame: pd.DataFrame, predicted: np.ndarray, protocol: str, threshold: float
) -> ChoiceOutputs | None:
    """Biased-MF outputs of a rating or like/dislike task (None when it does not apply)."""
    candidates = [[str(c) for c in cands] for cands in frame["candidates"]]
    labels = list(dict.fromkeys(c for cands in candidates for c in cands))
    code = {label: i for i, label in enumerate(labels)}
    targets = [code[t] for t in frame["target"].astype(str)]
    keys = record_keys(frame)
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
      like/dislike tasks: rating − threshold as the margin, answered like the model's with the
      cut chosen on validation records; user records of ranking tasks: every
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
                        full_ranking_outputs(
                            frame, scores, index, histories, cutoffs_for(ks, protocol)
                        ),
                    )
            continue
        if protocol in ("rating", "classification") and trained.biased_mf is not None:
            has_items = bool((frame["item_id"].astype(str) != "").all())
            if has_users and has_items:
                mf, threshold = trained.biased_mf, trained.rating_threshold
                outputs = _rating_choice(frame, _mf_ratings(mf, frame), protocol, threshold)
                valid = data.calibration.get(task) if protocol == "classification" else None
                if outputs is not None and valid is not None:  # the model's decision rule
                    validation = _rating_choice(valid, _mf_ratings(mf, valid), protocol, threshold)
                    outputs = calibrated(outputs, validation)
                put("biased_mf", task, outputs)
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
