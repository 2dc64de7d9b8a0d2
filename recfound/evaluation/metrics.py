"""Evaluation metrics: full-ranking retrieval, regression, AUC, classification and text overlap.

All metrics return plain Python ``float``. Inputs are array-likes; a wrong shape, an empty input
or a value outside a metric's domain raises :class:`MetricError`.

Retrieval follows the full-ranking protocol: each query scores *all* items, the items of the user's
history are excluded (the target never is), and the 1-based rank of the single held-out target is
what Recall/NDCG/MRR/hit rate are computed from.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

from recfound.errors import UserInputError

TiePolicy = Literal["pessimistic", "optimistic"]

_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class MetricError(UserInputError):
    """Inputs a metric cannot be computed on; the message says which and why."""


# --------------------------------------------------------------------------- retrieval


def rank_of_targets(
    scores: np.ndarray,
    target_index: np.ndarray,
    exclude: Sequence[Sequence[int]] | None = None,
    ties: TiePolicy = "pessimistic",
) -> np.ndarray:
    """1-based rank of each query's target among all items, history excluded.

    Args:
        scores: ``(n_queries, n_items)`` scores, higher is better; NaN is rejected.
        target_index: ``(n_queries,)`` item index of each query's target.
        exclude: per query, item indices removed from the ranking (the user's history); the
            target is never removed even if listed. ``None`` excludes nothing.
        ties: items scoring exactly the target's score rank ahead of it (``pessimistic``, the
            default, so a constant scorer gets no credit) or behind it (``optimistic``).

    Returns:
        ``(n_queries,)`` int64 ranks in ``[1, n_items]``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(target_index)
    if scores.ndim != 2:
        raise MetricError(f"scores must be 2-D (n_queries, n_items), got shape {scores.shape}")
    n_queries, n_items = scores.shape
    if targets.shape != (n_queries,):
        raise MetricError(
            f"target_index must have shape ({n_queries},) to match scores, got {targets.shape}"
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise MetricError(f"target_index must hold integer item indices, got {targets.dtype}")
    if n_queries and (targets.min() < 0 or targets.max() >= n_items):
        raise MetricError(
            f"target_index must lie in [0, {n_items}), got values from {targets.min()} "
            f"to {targets.max()}"
        )
    if np.isnan(scores).any():
        raise MetricError("scores contain NaN; score every item with a number")
    if ties not in ("pessimistic", "optimistic"):
        raise MetricError(f"unknown ties policy {ties!r}; use 'pessimistic' or 'optimistic'")

    counted = np.ones((n_queries, n_items), dtype=bool)
    if exclude is not None:
        if len(exclude) != n_queries:
            raise MetricError(f"exclude has {len(exclude)} lists for {n_queries} queries")
        for row, items in enumerate(exclude):
            idx = np.asarray(list(items), dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n_items):
                raise MetricError(f"exclude[{row}] holds an item index outside [0, {n_items})")
            counted[row, idx] = False
    rows = np.arange(n_queries)
    counted[rows, targets] = False  # the target is compared against the others, not itself
    target_scores = scores[rows, targets][:, None]
    ahead = scores > target_scores
    if ties == "pessimistic":
        ahead |= scores == target_scores
    return 1 + (ahead & counted).sum(axis=1).astype(np.int64)


def _check_ranks(ranks: np.ndarray | Sequence[int], k: int | None) -> np.ndarray:
    values = np.asarray(ranks)
    if values.ndim != 1 or values.size == 0:
        raise MetricError(f"ranks must be a non-empty 1-D array, got shape {values.shape}")
    if (values < 1).any():
        raise MetricError("ranks are 1-based; got a rank below 1")
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
        raise MetricError(f"k must be a positive integer, got {k!r}")
    return values.astype(np.float64)


def recall_at_k(ranks: np.ndarray | Sequence[int], k: int) -> float:
    """Fraction of queries whose single target ranks within the top ``k``."""
    values = _check_ranks(ranks, k)
    return float(np.mean(values <= k))


def hit_rate_at_k(ranks: np.ndarray | Sequence[int], k: int) -> float:
    """Fraction of queries with a hit in the top ``k``; equals Recall@K with one target."""
    return recall_at_k(ranks, k)


def ndcg_at_k(ranks: np.ndarray | Sequence[int], k: int) -> float:
    """Mean NDCG@K with one relevant item: ``1 / log2(rank + 1)`` if ``rank <= k`` else 0."""
    values = _check_ranks(ranks, k)
    gains = np.where(values <= k, 1.0 / np.log2(values + 1.0), 0.0)
    return float(np.mean(gains))


def mrr_at_k(ranks: np.ndarray | Sequence[int], k: int | None = None) -> float:
    """Mean reciprocal rank; targets ranked below ``k`` (when given) count 0."""
    values = _check_ranks(ranks, k)
    reciprocal = 1.0 / values
    if k is not None:
        reciprocal = np.where(values <= k, reciprocal, 0.0)
    return float(np.mean(reciprocal))


# --------------------------------------------------------------------------- regression, AUC


def _paired_floats(
    y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64).reshape(-1)
    b = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if a.size == 0 or a.shape != b.shape:
        raise MetricError(f"need two non-empty arrays of equal size, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricError("values must be finite (no NaN or inf)")
    return a, b


def rmse(y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]) -> float:
    """Root mean squared error, in the units of the targets (e.g. rating stars)."""
    a, b = _paired_floats(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mae(y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]) -> float:
    """Mean absolute error, in the units of the targets."""
    a, b = _paired_floats(y_true, y_pred)
    return float(np.mean(np.abs(a - b)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (ascending), tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], sorted_values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counting one half.

    Equals the fraction of (positive, negative) pairs where the positive scores higher, ties 0.5.
    ``labels`` hold 0/1 (or booleans); both classes must be present.
    """
    y, s = _paired_floats(labels, scores)
    if not np.isin(y, (0.0, 1.0)).all():
        raise MetricError("AUC labels must be 0/1 (or booleans)")
    n_pos = int((y == 1).sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricError("AUC needs both classes; the labels hold only one")
    ranks = _average_ranks(s)
    rank_sum = float(ranks[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# --------------------------------------------------------------------------- classification


def _paired_labels(
    y_true: Sequence[Hashable] | np.ndarray, y_pred: Sequence[Hashable] | np.ndarray
) -> tuple[list[Hashable], list[Hashable]]:
    a, b = list(y_true), list(y_pred)
    if not a or len(a) != len(b):
        raise MetricError(f"need two non-empty label lists of equal length, got {len(a)}, {len(b)}")
    return a, b


def accuracy(
    y_true: Sequence[Hashable] | np.ndarray, y_pred: Sequence[Hashable] | np.ndarray
) -> float:
    """Fraction of exact label matches."""
    a, b = _paired_labels(y_true, y_pred)
    return sum(t == p for t, p in zip(a, b, strict=True)) / len(a)


def macro_f1(
    y_true: Sequence[Hashable] | np.ndarray,
    y_pred: Sequence[Hashable] | np.ndarray,
    labels: Sequence[Hashable] | None = None,
) -> float:
    """Unweighted mean over classes of ``F1 = 2TP / (2TP + FP + FN)``.

    Classes are ``labels`` when given, else every label seen in ``y_true`` or ``y_pred``. A class
    that never occurs in either gets F1 0.
    """
    a, b = _paired_labels(y_true, y_pred)
    classes = list(labels) if labels is not None else list(dict.fromkeys(a + b))
    if not classes:
        raise MetricError("macro F1 needs at least one class")
    scores = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(a, b, strict=True))
        fp = sum(t != c and p == c for t, p in zip(a, b, strict=True))
        fn = sum(t == c and p != c for t, p in zip(a, b, strict=True))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


# --------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: ``"Great movie!" -> ["great", "movie", "!"]``."""
    return _TOKEN_PATTERN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(references: Sequence[str], hypotheses: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al., 2002) with one reference per hypothesis, in ``[0, 1]``.

    Clipped n-gram counts for ``n = 1..max_n`` are summed over the corpus; the score is the
    geometric mean of the precisions times the brevity penalty ``exp(1 - r / c)`` when the
    hypotheses are shorter (``c``) than the references (``r``). Precisions for ``n >= 2`` are
    add-one smoothed (Lin & Och, 2004; NLTK's ``method2``) so that short corpora without 4-gram
    matches do not score 0. Texts are split by :func:`tokenize`. Identical texts score 1.0; no
    unigram match (or empty hypotheses) scores 0.0.
    """
    if len(references) != len(hypotheses) or not references:
        raise MetricError(
            f"need equal, non-zero numbers of references and hypotheses, got "
            f"{len(references)} and {len(hypotheses)}"
        )
    if max_n < 1:
        raise MetricError(f"max_n must be at least 1, got {max_n}")
    matches = [0] * max_n
    totals = [0] * max_n
    ref_length = 0
    hyp_length = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref_tokens, hyp_tokens = tokenize(reference), tokenize(hypothesis)
        ref_length += len(ref_tokens)
        hyp_length += len(hyp_tokens)
        for n in range(1, max_n + 1):
            hyp_counts = _ngrams(hyp_tokens, n)
            ref_counts = _ngrams(ref_tokens, n)
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            totals[n - 1] += sum(hyp_counts.values())
    if hyp_length == 0 or matches[0] == 0:
        return 0.0
    log_precision = math.log(matches[0] / totals[0])
    for n in range(2, max_n + 1):
        log_precision += math.log((matches[n - 1] + 1) / (totals[n - 1] + 1))
    brevity = 1.0 if hyp_length > ref_length else math.exp(1.0 - ref_length / hyp_length)
    return float(brevity * math.exp(log_precision / max_n))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_f1(reference: str, hypothesis: str) -> float:
    """ROUGE-L F1 of one pair: LCS-based precision and recall over :func:`tokenize` tokens.

    ``P = LCS / len(hypothesis)``, ``R = LCS / len(reference)``, ``F1 = 2PR / (P + R)``; 0.0 when
    either text has no tokens or nothing is shared.
    """
    ref_tokens, hyp_tokens = tokenize(reference), tokenize(hypothesis)
    if not ref_tokens or not hyp_tokens:
        return 0.0
    lcs = _lcs_length(ref_tokens, hyp_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(hyp_tokens)
    recall = lcs / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def corpus_rouge_l_f1(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean of :func:`rouge_l_f1` over aligned (reference, hypothesis) pairs."""
    if len(references) != len(hypotheses) or not references:
        raise MetricError(
            f"need equal, non-zero numbers of references and hypotheses, got "
            f"{len(references)} and {len(hypotheses)}"
        )
    return float(np.mean([rouge_l_f1(r, h) for r, h in zip(references, hypotheses, strict=True)]))
