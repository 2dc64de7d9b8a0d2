"""Evaluation metrics: full-ranking retrieval, regression, AUC, classification and text overlap.

Inputs are array-likes; a wrong shape, an empty input or a value outside a metric's domain raises
:class:`MetricError`. The per-record metrics (ranking, classification, regression) average over
the last axis: a 1-D input gives a plain Python ``float``, a ``(n_resamples, n)`` matrix of
resampled records gives one value per resample (what the bootstrap of
:mod:`recfound.evaluation.outputs` computes with the same functions).

Retrieval follows the full-ranking protocol: each query scores *all* items, the items of the user's
history are excluded (the target never is), and the 1-based rank of the single held-out target is
what Recall/NDCG/MRR/hit rate are computed from.

Every reported figure also gets a seeded bootstrap interval over records
(:func:`bootstrap_records`, ``scipy.stats.bootstrap`` on record indices).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

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


Averaged = float | np.ndarray  # a float for a 1-D input, else one value per leading index


def _plain(value: np.ndarray | float) -> Averaged:
    """A 0-d result as a Python float; arrays as they are."""
    return float(value) if np.ndim(value) == 0 else value


def _mean_last(values: np.ndarray) -> Averaged:
    """The mean over the last axis: a float for a 1-D input."""
    return _plain(values.mean(axis=-1))


def _check_ranks(ranks: np.ndarray | Sequence[int], k: int | None) -> np.ndarray:
    values = np.asarray(ranks)
    if values.ndim < 1 or values.shape[-1] == 0:
        raise MetricError(f"ranks must be a non-empty array, got shape {values.shape}")
    if (values < 1).any():
        raise MetricError("ranks are 1-based; got a rank below 1")
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
        raise MetricError(f"k must be a positive integer, got {k!r}")
    return values.astype(np.float64)


def recall_at_k(ranks: np.ndarray | Sequence[int], k: int) -> Averaged:
    """Fraction of queries whose single target ranks within the top ``k`` (the hit rate)."""
    values = _check_ranks(ranks, k)
    return _mean_last(values <= k)


def ndcg_at_k(ranks: np.ndarray | Sequence[int], k: int) -> Averaged:
    """Mean NDCG@K with one relevant item: ``1 / log2(rank + 1)`` if ``rank <= k`` else 0."""
    values = _check_ranks(ranks, k)
    return _mean_last(np.where(values <= k, 1.0 / np.log2(values + 1.0), 0.0))


def mrr_at_k(ranks: np.ndarray | Sequence[int], k: int | None = None) -> Averaged:
    """Mean reciprocal rank; targets ranked below ``k`` (when given) count 0."""
    values = _check_ranks(ranks, k)
    reciprocal = 1.0 / values
    if k is not None:
        reciprocal = np.where(values <= k, reciprocal, 0.0)
    return _mean_last(reciprocal)


# --------------------------------------------------------------------------- regression, AUC


def _paired_floats(
    y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64)
    b = np.asarray(y_pred, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape:
        raise MetricError(f"need two non-empty arrays of equal size, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricError("values must be finite (no NaN or inf)")
    return a, b


def rmse(y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]) -> Averaged:
    """Root mean squared error, in the units of the targets (e.g. rating stars)."""
    a, b = _paired_floats(y_true, y_pred)
    return _plain(np.sqrt(((b - a) ** 2).mean(axis=-1)))


def mae(y_true: np.ndarray | Sequence[float], y_pred: np.ndarray | Sequence[float]) -> Averaged:
    """Mean absolute error, in the units of the targets."""
    a, b = _paired_floats(y_true, y_pred)
    return _mean_last(np.abs(b - a))


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
) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(y_true), np.asarray(y_pred)
    if a.size == 0 or a.shape != b.shape:
        raise MetricError(
            f"need two non-empty label arrays of equal shape, got {a.shape}, {b.shape}"
        )
    return a, b


def accuracy(
    y_true: Sequence[Hashable] | np.ndarray, y_pred: Sequence[Hashable] | np.ndarray
) -> Averaged:
    """Fraction of exact label matches."""
    a, b = _paired_labels(y_true, y_pred)
    return _mean_last(a == b)


def macro_f1(
    y_true: Sequence[Hashable] | np.ndarray,
    y_pred: Sequence[Hashable] | np.ndarray,
    labels: Sequence[Hashable] | None = None,
) -> Averaged:
    """Unweighted mean over classes of ``F1 = 2TP / (2TP + FP + FN)``.

    Classes are ``labels`` when given, else every label seen in ``y_true`` or ``y_pred``. A class
    that never occurs in either gets F1 0.
    """
    a, b = _paired_labels(y_true, y_pred)
    classes = list(labels) if labels is not None else list(dict.fromkeys([*a.flat, *b.flat]))
    if not classes:
        raise MetricError("macro F1 needs at least one class")
    scores = []
    for c in classes:
        is_target, is_predicted = a == c, b == c
        tp = (is_target & is_predicted).sum(axis=-1)
        denominator = is_target.sum(axis=-1) + is_predicted.sum(axis=-1)  # 2TP + FP + FN
        scores.append(
            np.divide(2 * tp, denominator, out=np.zeros(a.shape[:-1]), where=denominator > 0)
        )
    return _plain(np.mean(scores, axis=0))


# --------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: ``"Great movie!" -> ["great", "movie", "!"]``."""
    return _TOKEN_PATTERN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_statistics(reference: str, hypothesis: str, max_n: int = 4) -> np.ndarray:
    """One pair's BLEU counts ``[ref_len, hyp_len, matches_1..n, totals_1..n]`` (int64).

    Corpus BLEU is a function of these counts summed over pairs, which is what lets a bootstrap
    recompute it on resampled records without re-tokenizing (:func:`bleu_from_statistics`).
    """
    if max_n < 1:
        raise MetricError(f"max_n must be at least 1, got {max_n}")
    ref_tokens, hyp_tokens = tokenize(reference), tokenize(hypothesis)
    out = np.zeros(2 + 2 * max_n, dtype=np.int64)
    out[0], out[1] = len(ref_tokens), len(hyp_tokens)
    for n in range(1, max_n + 1):
        hyp_counts = _ngrams(hyp_tokens, n)
        ref_counts = _ngrams(ref_tokens, n)
        out[1 + n] = sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
        out[1 + max_n + n] = sum(hyp_counts.values())
    return out


def bleu_from_statistics(totals: np.ndarray) -> np.ndarray:
    """Corpus BLEU from summed :func:`bleu_statistics`, along the last axis: ``(..., 2 + 2n)``
    sums give ``(...)`` scores (see :func:`bleu` for the definition)."""
    totals = np.asarray(totals, dtype=np.float64)
    max_n = (totals.shape[-1] - 2) // 2
    ref_length, hyp_length = totals[..., 0], totals[..., 1]
    matches, counts = totals[..., 2 : 2 + max_n], totals[..., 2 + max_n :]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_precision = np.log(matches[..., 0] / counts[..., 0])
        for n in range(1, max_n):
            log_precision = log_precision + np.log((matches[..., n] + 1) / (counts[..., n] + 1))
        brevity = np.where(
            hyp_length > ref_length, 1.0, np.exp(1.0 - ref_length / np.maximum(hyp_length, 1))
        )
        score = brevity * np.exp(log_precision / max_n)
    return np.where((hyp_length == 0) | (matches[..., 0] == 0), 0.0, score)


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
    stats = [bleu_statistics(r, h, max_n) for r, h in zip(references, hypotheses, strict=True)]
    return float(bleu_from_statistics(np.sum(stats, axis=0)))


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


def token_f1(reference: str, hypothesis: str) -> float:
    """SQuAD-style token overlap F1 between two texts (0 when either is empty)."""
    ref, hyp = Counter(tokenize(reference)), Counter(tokenize(hypothesis))
    common = sum((ref & hyp).values())
    if not common:
        return 0.0
    precision, recall = common / sum(hyp.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def corpus_rouge_l_f1(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean of :func:`rouge_l_f1` over aligned (reference, hypothesis) pairs."""
    if len(references) != len(hypotheses) or not references:
        raise MetricError(
            f"need equal, non-zero numbers of references and hypotheses, got "
            f"{len(references)} and {len(hypotheses)}"
        )
    return float(np.mean([rouge_l_f1(r, h) for r, h in zip(references, hypotheses, strict=True)]))


# --------------------------------------------------------------------------- confidence intervals


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile (or BCa) intervals of ``k`` statistics and their bootstrap distribution.

    ``low``/``high`` are ``(k,)``; ``distribution`` is ``(k, n_resamples)``, kept so that
    statistics of independent record sets (tasks) can be combined replicate by replicate.
    """

    low: np.ndarray
    high: np.ndarray
    distribution: np.ndarray


IndexStatistic = Callable[[np.ndarray], np.ndarray]


def bootstrap_records(
    statistic: IndexStatistic,
    n_records: int,
    seed: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    method: Literal["percentile", "BCa", "basic"] = "percentile",
) -> BootstrapResult:
    """Bootstrap over records: ``scipy.stats.bootstrap`` on the record indices ``0..n-1``.

    ``statistic`` maps resampled indices of shape ``(..., n_records)`` to ``(k, ...)`` values:
    it recomputes every metric on the resampled records, so the same routine serves means
    (Recall, NDCG), ratios of sums (BLEU, macro-F1) and rank statistics (AUC). Two systems
    resampled with the same ``seed`` and ``n_records`` see the same indices, which is what makes
    a difference of their statistics a *paired* comparison. A statistic undefined on some
    resamples (NaN, e.g. AUC on a one-class resample) gets its interval from the defined ones.
    With fewer than two records the interval is NaN.
    """
    first = np.asarray(statistic(np.arange(n_records)), dtype=np.float64)
    k = first.shape[0]
    if n_records < 2:
        nan = np.full(k, np.nan)
        return BootstrapResult(nan, nan.copy(), np.full((k, 0), np.nan))

    def vectorized(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(statistic(np.moveaxis(indices, axis, -1)), dtype=np.float64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN replicates, degenerate intervals
        result = stats.bootstrap(
            (np.arange(n_records),),
            vectorized,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            random_state=np.random.default_rng(seed),
        )
    low = np.atleast_1d(np.asarray(result.confidence_interval.low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(result.confidence_interval.high, dtype=np.float64))
    distribution = np.asarray(result.bootstrap_distribution, dtype=np.float64).reshape(k, -1)
    undefined = ~(np.isfinite(low) & np.isfinite(high))
    for row in np.flatnonzero(undefined):
        values = distribution[row][np.isfinite(distribution[row])]
        if values.size:
            low[row], high[row] = percentile_interval(values, confidence)
    return BootstrapResult(low, high, distribution)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates (NaN ignored)."""
    alpha = (1.0 - confidence) / 2.0
    values = np.asarray(replicates, dtype=np.float64)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(values, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)
