"""Popularity, item-kNN and BM25 baselines on tiny hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recfound.baselines.rankers import (
    BaselineError,
    BM25Ranker,
    ItemKNNRanker,
    PopularityRanker,
)
from recfound.metrics import ndcg_at_k, rank_of_targets, recall_at_k

ITEMS = ["i1", "i2", "i3", "i4", "i5"]


def _interactions(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["user_id", "item_id"])


TRAIN = _interactions(
    [
        ("u1", "i1"),
        ("u1", "i2"),
        ("u2", "i1"),
        ("u2", "i2"),
        ("u3", "i1"),
        ("u3", "i3"),
        ("u4", "i4"),
        ("u4", "i5"),
        ("u5", "i1"),
        ("u5", "unknown"),
    ]
)


def test_popularity_ranks_most_frequent_item_first() -> None:
    scores = PopularityRanker(ITEMS).fit(TRAIN).scores(3)
    assert scores.shape == (3, 5)
    np.testing.assert_array_equal(scores[0], [4.0, 2.0, 1.0, 1.0, 1.0])
    assert np.all(scores.argmax(axis=1) == 0)


def test_popularity_needs_fit_and_columns() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        PopularityRanker(ITEMS).scores(1)
    with pytest.raises(BaselineError, match="user_id"):
        PopularityRanker(ITEMS).fit(pd.DataFrame({"item": ["i1"]}))
    with pytest.raises(BaselineError, match="twice"):
        PopularityRanker(["a", "a"])


def test_item_knn_scores_co_occurring_item_above_unrelated() -> None:
    ranker = ItemKNNRanker(ITEMS).fit(TRAIN)
    scores = ranker.scores([["i2"], ["i4", "i4"], ["not-an-item"]])
    assert scores.shape == (3, 5)
    # i2 co-occurs with i1 (u1, u2), never with i4/i5.
    assert scores[0, 0] > scores[0, 3]
    # cos(i1, i2) = |{u1, u2}| / (sqrt(4 * 2) + 1e-6), RecBole's; self-similarity is zeroed.
    assert scores[0, 0] == pytest.approx(2 / (math.sqrt(8) + 1e-6), rel=1e-12)
    assert scores[0, 1] == 0.0
    # i4 co-occurs only with i5 (u4), cosine 1; the repeated history item counts once.
    np.testing.assert_allclose(scores[1], [0.0, 0.0, 0.0, 0.0, 1.0], rtol=1e-5)
    np.testing.assert_array_equal(scores[2], np.zeros(5))


def test_item_knn_keeps_k_neighbours_per_target_item_and_shrinks() -> None:
    # Neighbours of i1: i2 (cos 2/sqrt(8)) and i3 (cos 1/2); with k=1 column i1 keeps only i2.
    full = ItemKNNRanker(ITEMS).fit(TRAIN).scores([["i2", "i3"]])
    top1 = ItemKNNRanker(ITEMS, k=1).fit(TRAIN).scores([["i2", "i3"]])
    assert full[0, 0] == pytest.approx(2 / math.sqrt(8) + 1 / 2, rel=1e-5)
    assert top1[0, 0] == pytest.approx(2 / math.sqrt(8), rel=1e-5)
    # Column i2's only neighbour is i1, so k=1 changes nothing there.
    assert top1[0, 1] == full[0, 1]
    shrunk = ItemKNNRanker(ITEMS, shrink=10.0).fit(TRAIN).scores([["i4"]])
    assert shrunk[0, 4] == pytest.approx(1 / 11, rel=1e-5)
    with pytest.raises(BaselineError, match="k"):
        ItemKNNRanker(ITEMS, k=0)


def test_bm25_ranks_matching_text_first() -> None:
    texts = [
        "A quiet drama about a family farm.",
        "Space opera: starships, lasers and a galactic war!",
        "Romantic comedy in Paris.",
    ]
    ranker = BM25Ranker(texts)
    scores = ranker.scores(["galactic STARSHIPS", "comedy paris", "zzz unknown words", ""])
    assert scores.shape == (4, 3)
    assert scores[0].argmax() == 1
    assert scores[1].argmax() == 2
    assert scores[0, 1] > 0 and scores[0, 0] == 0.0
    np.testing.assert_array_equal(scores[2:], np.zeros((2, 3)))


def test_full_ranking_metrics_on_popularity_baseline() -> None:
    # Popularity scores (4, 2, 1, 1, 1). Query A: history {i1}, target i2 -> rank 1.
    # Query B: history {i2}, target i3 ties with i4, i5 behind i1 -> pessimistic rank 4.
    scores = PopularityRanker(ITEMS).fit(TRAIN).scores(2)
    ranks = rank_of_targets(scores, np.array([1, 2]), exclude=[[0], [1]])
    assert ranks.tolist() == [1, 4]
    assert recall_at_k(ranks, 3) == pytest.approx(0.5)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / math.log2(5)) / 2)
