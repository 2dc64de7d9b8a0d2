"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from recfound.metrics import (
    MetricError,
    accuracy,
    auc,
    bleu,
    bleu_from_statistics,
    bleu_statistics,
    bootstrap_records,
    corpus_rouge_l_f1,
    macro_f1,
    mae,
    mrr_at_k,
    ndcg_at_k,
    rank_of_targets,
    recall_at_k,
    rmse,
    rouge_l_f1,
    tokenize,
)


def test_rank_of_targets_excludes_history_but_never_the_target() -> None:
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.1, 0.5],
            [0.2, 0.4, 0.6, 0.8, 1.0],
        ]
    )
    # Query 0: target item 2 (0.7); items 0 and 1 score higher but are history -> rank 1.
    # Query 1: target item 1 (0.4); history {4} removed, items 2, 3 still ahead -> rank 3.
    # Listing the target in its own history does not remove it.
    ranks = rank_of_targets(scores, np.array([2, 1]), exclude=[[0, 1, 2], [4]])
    assert ranks.tolist() == [1, 3]
    assert rank_of_targets(scores, np.array([2, 1])).tolist() == [3, 4]


def test_rank_of_targets_ties_are_pessimistic_by_default() -> None:
    scores = np.zeros((1, 4))
    assert rank_of_targets(scores, np.array([1]), [[]]).tolist() == [4]
    assert rank_of_targets(scores, np.array([1]), [[0]], ties="optimistic").tolist() == [1]
    assert rank_of_targets(scores, np.array([1]), [[0]]).tolist() == [3]


def test_rank_of_targets_rejects_bad_inputs() -> None:
    scores = np.zeros((2, 3))
    with pytest.raises(MetricError, match="shape"):
        rank_of_targets(scores, np.array([0]), [[], []])
    with pytest.raises(MetricError, match=r"\[0, 3\)"):
        rank_of_targets(scores, np.array([0, 3]), [[], []])
    with pytest.raises(MetricError, match="exclude"):
        rank_of_targets(scores, np.array([0, 1]), [[]])
    with pytest.raises(MetricError, match=r"exclude\[1\]"):
        rank_of_targets(scores, np.array([0, 1]), [[], [5]])
    with pytest.raises(MetricError, match="NaN"):
        rank_of_targets(np.full((1, 2), np.nan), np.array([0]), [[]])


def test_ranking_metrics_on_hand_computed_ranks() -> None:
    ranks = np.array([1, 2, 11])
    assert recall_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 3)  # the hit rate
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 0) / 3)
    assert mrr_at_k(ranks) == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)
    assert mrr_at_k(ranks, k=10) == pytest.approx((1 + 1 / 2) / 3)
    assert isinstance(ndcg_at_k(ranks, 10), float)
    with pytest.raises(MetricError, match="1-based"):
        recall_at_k(np.array([0, 1]), 5)
    with pytest.raises(MetricError, match="positive integer"):
        ndcg_at_k(ranks, 0)
    with pytest.raises(MetricError, match="non-empty"):
        mrr_at_k(np.array([]))


def test_rmse_and_mae() -> None:
    y_true = [4.0, 3.0, 5.0, 1.0]
    y_pred = [3.0, 3.0, 4.0, 3.0]  # errors 1, 0, 1, -2
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt(6 / 4))
    assert mae(y_true, y_pred) == pytest.approx(4 / 4)
    with pytest.raises(MetricError, match="equal size"):
        rmse([1.0], [1.0, 2.0])


def test_auc_equals_pairwise_comparison_count() -> None:
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.3, 0.3, 0.8, 0.5])
    # Positive-negative pairs: (0.9>0.3) (0.9>0.8) (0.3=0.3 -> 0.5) (0.3<0.8) (0.5>0.3) (0.5<0.8).
    assert auc(labels, scores) == pytest.approx(3.5 / 6)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    assert auc(labels, scores) == pytest.approx(sum(pairs) / len(pairs))
    assert auc([True, False], [0.2, 0.1]) == 1.0


def test_auc_needs_both_classes() -> None:
    with pytest.raises(MetricError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="0/1"):
        auc([0, 2], [0.1, 0.2])


def test_accuracy_and_macro_f1() -> None:
    y_true = ["a", "a", "b", "c"]
    y_pred = ["a", "b", "b", "a"]
    assert accuracy(y_true, y_pred) == pytest.approx(0.5)
    # F1: a = 2*1/(2+1+1) = 1/2, b = 2*1/(2+1+0) = 2/3, c = 0.
    assert macro_f1(y_true, y_pred) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert macro_f1(y_true, y_pred, labels=["a", "b"]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    with pytest.raises(MetricError, match="equal shape"):
        accuracy(["a"], [])


def test_metrics_of_resampled_records_are_the_metrics_of_each_resample() -> None:
    """The bootstrap passes a (resamples, records) matrix: one value per row, each the metric of
    that row alone (evaluation reports these functions, not a copy)."""
    rows = np.array([[0, 1, 1, 2], [2, 2, 0, 1]])
    predicted = np.array([[0, 1, 0, 2], [2, 1, 0, 1]])
    ranks = np.array([[1, 3, 12, 2], [5, 1, 1, 30]])
    for metric, args in [
        (macro_f1, (rows, predicted, range(3))),
        (accuracy, (rows, predicted)),
        (rmse, (rows, predicted)),
        (mae, (rows, predicted)),
        (mrr_at_k, (ranks, 10)),
        (ndcg_at_k, (ranks, 10)),
        (recall_at_k, (ranks, 10)),
    ]:
        each = [metric(*(a[i] if isinstance(a, np.ndarray) else a for a in args)) for i in (0, 1)]
        assert metric(*args) == pytest.approx(each), metric.__name__


def test_tokenize_splits_words_and_punctuation() -> None:
    assert tokenize("Great movie, LOVED it!") == ["great", "movie", ",", "loved", "it", "!"]


def test_bleu_identical_is_one_and_disjoint_is_zero() -> None:
    texts = ["the cat sat on the mat", "a great movie with a twist"]
    assert bleu(texts, texts) == pytest.approx(1.0)
    assert bleu(["a b c d"], ["e f g h"]) == 0.0
    assert bleu(["a b c"], [""]) == 0.0


def test_bleu_hand_computed_with_smoothing_and_brevity_penalty() -> None:
    # Hypothesis (5 tokens) vs reference (6 tokens): precisions 5/5, 3/4, 2/3, 1/2; add-one
    # smoothed for n >= 2: 1, 4/5, 3/4, 2/3. Brevity penalty exp(1 - 6/5).
    expected = math.exp(1 - 6 / 5) * (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat sat on mat"]) == pytest.approx(expected)
    # Unigram BLEU with clipping: "the the the" vs "the cat": 1 clipped match of 3, no penalty.
    assert bleu(["the cat"], ["the the the"], max_n=1) == pytest.approx(1 / 3)


def test_rouge_l_f1_known_pairs() -> None:
    # LCS "the cat on the mat" = 5: P = 5/5, R = 5/6, F1 = 10/11.
    assert rouge_l_f1("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    # Lin (2004): LCS "the gunman" = 2 of 4 on both sides.
    assert rouge_l_f1("police killed the gunman", "the gunman kill police") == pytest.approx(0.5)
    assert rouge_l_f1("abc", "") == 0.0
    assert corpus_rouge_l_f1(
        ["the cat sat on the mat", "police killed the gunman"],
        ["the cat on the mat", "the gunman kill police"],
    ) == pytest.approx((10 / 11 + 0.5) / 2)


# --------------------------------------------------------------------------- intervals


def test_bootstrap_interval_covers_a_known_mean_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    repetitions = 200
    for repetition in range(repetitions):
        sample = rng.exponential(scale=2.0, size=80)  # skewed, true mean 2.0

        def mean_of(indices: np.ndarray, sample: np.ndarray = sample) -> np.ndarray:
            return sample[indices].mean(axis=-1)[None]

        result = bootstrap_records(mean_of, len(sample), seed=repetition, n_resamples=500)
        covered += bool(result.low[0] <= 2.0 <= result.high[0])
    assert 0.90 <= covered / repetitions <= 0.99, covered


def test_bootstrap_is_seeded_and_handles_tiny_and_undefined_statistics() -> None:
    values = np.arange(30, dtype=float)

    def stat(indices: np.ndarray) -> np.ndarray:
        return np.stack([values[indices].mean(axis=-1), np.full(indices.shape[:-1], np.nan)])

    first = bootstrap_records(stat, 30, seed=3, n_resamples=200)
    again = bootstrap_records(stat, 30, seed=3, n_resamples=200)
    assert first.low[0] == again.low[0] and first.distribution.shape == (2, 200)
    assert first.low[0] < values.mean() < first.high[0]
    assert np.isnan(first.low[1])  # undefined everywhere: no interval
    assert np.isnan(bootstrap_records(stat, 1, seed=0).low[0])  # one record: no interval


def test_bleu_statistics_sum_to_corpus_bleu() -> None:
    refs = ["the cat sat on the mat", "a great movie with a twist", "x"]
    hyps = ["the cat on the mat", "a movie with twist", ""]
    summed = np.sum([bleu_statistics(r, h) for r, h in zip(refs, hyps, strict=True)], axis=0)
    assert float(bleu_from_statistics(summed)) == pytest.approx(bleu(refs, hyps))
