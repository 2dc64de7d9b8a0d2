"""Per-record outputs of one system on one task, and the one function that turns them into metrics.

A system (the model, a baseline, an ablation row) yields one :class:`RecordOutputs` per task:

=================== ================================================================================
outputs             per record
=================== ================================================================================
RankOutputs         1-based rank of the single relevant item (with the user's earlier items
                    excluded) and, for full-ranking tasks, the rank with nothing excluded
ChoiceOutputs       target and predicted label (codes into ``labels``); for two classes the margin
                    of the first label; for ratings the true and the expected rating
TextOutputs         target and generated text (n-gram counts, token F1, ROUGE-L kept per record)
TokenAccuracy       teacher-forced answer tokens predicted right, and answer tokens
=================== ================================================================================

:meth:`RecordOutputs.metrics_on` computes every metric of a task on a set of record indices: the
point estimate uses all records, the bootstrap resampled ones (a ``(n_resamples, n)`` index
matrix at once), so both come from one definition. Every output carries its records' keys
(``record``: position in the split's parquet file, ``user_id``) so that two systems can be paired
record by record (:func:`align`), also across runs: the registry pairs a challenger with the
champion this way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from recfound import metrics as M

FULL_RANKING_KS = (5, 10, 20)  # Recall/NDCG@K of the full-ranking protocol (RecBole's usual)
MRR_KS = (10, 20)  # MRR@K reported (RecFound's MRR@20, and MRR@10)
UNMASKED_K = 10
UNMASKED_PREFIX = "unmasked_"
CONFIDENCE = 0.95


def _as_matrix(indices: np.ndarray) -> np.ndarray:
    """Record indices as ``(n_sets, n_selected)`` (one set for a 1-D input)."""
    indices = np.asarray(indices, dtype=np.int64)
    return indices[None, :] if indices.ndim == 1 else indices.reshape(-1, indices.shape[-1])


@dataclass
class RecordOutputs:
    """Keys of the records a system was evaluated on; subclasses add what it produced."""

    record: np.ndarray  # (n,) position of each record in its split file
    user_id: list[str]
    kind: ClassVar[str] = ""
    # fields that describe the task, not one value per record (a label set, the cut-offs)
    task_fields: ClassVar[frozenset[str]] = frozenset(
        {"labels", "ks", "answer_format", "threshold"}
    )

    def __len__(self) -> int:
        return len(self.record)

    @property
    def keys(self) -> list[tuple[int, str]]:
        return [(int(r), str(u)) for r, u in zip(self.record, self.user_id, strict=True)]

    def metrics_on(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric on each row of ``indices`` (``(B, m)``): ``{name: (B,) values}``."""
        raise NotImplementedError

    def take(self, positions: np.ndarray) -> RecordOutputs:
        """The outputs of the records at ``positions`` (in that order)."""
        values = {}
        for name, value in self._columns().items():
            if name in self.task_fields:
                values[name] = value
            elif isinstance(value, np.ndarray):
                values[name] = value[positions]
            elif isinstance(value, list):
                values[name] = [value[int(p)] for p in positions]
            else:
                values[name] = value
        return type(self)(**values)

    def _columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready columns (``type`` names the class for :func:`outputs_from_dict`)."""
        out: dict[str, Any] = {"type": self.kind}
        for name, value in self._columns().items():
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


@dataclass
class RankOutputs(RecordOutputs):
    """Rank of the relevant item per record; ``recall_name`` is ``hr`` for sampled candidates."""

    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unmasked_ranks: np.ndarray | None = None
    ks: tuple[int, ...] = (1, 5, 10, 20)
    recall_name: str = "recall"
    kind: ClassVar[str] = "rank"

    def __post_init__(self) -> None:
        self.ranks = np.asarray(self.ranks, dtype=np.int64)
        if self.unmasked_ranks is not None:
            self.unmasked_ranks = np.asarray(self.unmasked_ranks, dtype=np.int64)
        self.ks = tuple(int(k) for k in self.ks)

    def metrics_on(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        idx = _as_matrix(indices)
        ranks = self.ranks[idx]
        out = {"mrr": M.mrr_at_k(ranks)}
        for k in sorted(set(self.ks)):
            out[f"{self.recall_name}@{k}"] = M.recall_at_k(ranks, k)
            out[f"ndcg@{k}"] = M.ndcg_at_k(ranks, k)
            if k in MRR_KS:
                out[f"mrr@{k}"] = M.mrr_at_k(ranks, k)
        if self.recall_name != "recall" and 1 in self.ks:
            out["recall@1"] = out[f"{self.recall_name}@1"]
        if self.unmasked_ranks is not None:
            raw = self.unmasked_ranks[idx]
            out[f"{UNMASKED_PREFIX}recall@{UNMASKED_K}"] = M.recall_at_k(raw, UNMASKED_K)
            out[f"{UNMASKED_PREFIX}ndcg@{UNMASKED_K}"] = M.ndcg_at_k(raw, UNMASKED_K)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ks": list(self.ks)}


@dataclass
class ChoiceOutputs(RecordOutputs):
    """A chosen label per record: macro-F1 and accuracy; AUC (two labels); RMSE/MAE (ratings).

    ``target``/``predicted`` are codes into ``labels`` (every candidate label of the task, so a
    class never predicted still counts in macro-F1). ``margin`` (two labels only) is how much more
    the system believes ``labels[0]`` than ``labels[1]``; None for a system without a ranking (the
    majority class). ``truth``/``expected`` are the true and the expected rating (rating tasks).
    ``threshold``: the margin above which ``labels[0]`` was chosen, when the decision was
    calibrated on validation records (:func:`~recfound.evaluation.protocols.decision_threshold`);
    None for the plain argmax.
    """

    labels: list[str] = field(default_factory=list)
    target: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    margin: np.ndarray | None = None
    truth: np.ndarray | None = None
    expected: np.ndarray | None = None
    threshold: float | None = None
    kind: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.int64)
        self.predicted = np.asarray(self.predicted, dtype=np.int64)
        for name in ("margin", "truth", "expected"):
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    def metrics_on(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        idx = _as_matrix(indices)
        target, predicted = self.target[idx], self.predicted[idx]
        out = {
            "f1": M.macro_f1(target, predicted, labels=range(len(self.labels))),
            "accuracy": M.accuracy(target, predicted),
        }
        if self.truth is not None and self.expected is not None:
            out["rmse"] = M.rmse(self.truth[idx], self.expected[idx])
            out["mae"] = M.mae(self.truth[idx], self.expected[idx])
        if self.margin is not None and len(self.labels) == 2:
            positive = self.target == 0
            if positive.any() and not positive.all():
                out["auc"] = np.array([_auc_or_nan(positive[row], self.margin[row]) for row in idx])
        return out


def chooses_first(margin: np.ndarray | float, threshold: float) -> np.ndarray:
    """The two-label decision rule, the one evaluation scores and serving answers with: the
    first label where its margin over the second is strictly above ``threshold`` (a margin equal
    to the threshold answers the second label)."""
    return np.asarray(margin, dtype=np.float64) > threshold


def _auc_or_nan(positive: np.ndarray, margin: np.ndarray) -> float:
    if positive.all() or not positive.any():
        return float("nan")  # a resample with one class has no AUC
    return M.auc(positive.astype(np.float64), margin)


@dataclass
class TextOutputs(RecordOutputs):
    """Generated text per record: token F1, exact match, corpus BLEU and ROUGE-L, and with an
    ``answer_format`` (the task's template as a regular expression) the share of well-formed
    answers (:func:`well_formed`)."""

    target: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    answer_format: str = ""
    kind: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        pairs = list(zip(self.target, self.output, strict=True))
        self._well_formed = np.array(
            [well_formed(o, self.answer_format) for o in self.output], dtype=np.float64
        )
        self._token_f1 = np.array([M.token_f1(t, o) for t, o in pairs], dtype=np.float64)
        self._exact = np.array([t.strip().lower() == o.lower() for t, o in pairs], dtype=np.float64)
        self._rouge = np.array([M.rouge_l_f1(t, o) for t, o in pairs], dtype=np.float64)
        self._bleu = np.array([M.bleu_statistics(t, o) for t, o in pairs]).reshape(len(pairs), -1)

    def metrics_on(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        idx = _as_matrix(indices)
        out = {
            "token_f1": self._token_f1[idx].mean(axis=-1),
            "exact_match": self._exact[idx].mean(axis=-1),
            "bleu": M.bleu_from_statistics(self._bleu[idx].sum(axis=-2)),
            "rouge_l": self._rouge[idx].mean(axis=-1),
        }
        if self.answer_format:
            out["well_formed"] = self._well_formed[idx].mean(axis=-1)
        return out


_LOOP = re.compile(r"\b(\S+)( \1\b){2,}")  # a word said three times in a row: decoding looped


def well_formed(answer: str, answer_format: str) -> bool:
    """Whether ``answer`` is whole and parses as its task's template (``answer_format``, a regular
    expression matched against the whole answer) without a decoding loop. An empty format only
    asks for a non-empty answer without a loop."""
    answer = answer.strip()
    if not answer or _LOOP.search(answer):
        return False
    return not answer_format or re.fullmatch(answer_format, answer) is not None


@dataclass
class TokenAccuracyOutputs(RecordOutputs):
    """Teacher-forced answer tokens per record: predicted right, and in all (quick objective)."""

    correct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kind: ClassVar[str] = "token_accuracy"

    def metrics_on(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        idx = _as_matrix(indices)
        correct = np.asarray(self.correct, dtype=np.float64)[idx].sum(axis=-1)
        total = np.asarray(self.total, dtype=np.float64)[idx].sum(axis=-1)
        return {"token_accuracy": correct / np.maximum(total, 1.0)}


OUTPUT_TYPES: dict[str, type[RecordOutputs]] = {
    cls.kind: cls for cls in (RankOutputs, ChoiceOutputs, TextOutputs, TokenAccuracyOutputs)
}


def outputs_from_dict(raw: Mapping[str, Any]) -> RecordOutputs:
    """The inverse of :meth:`RecordOutputs.to_dict` (as read back from ``eval_records.json``)."""
    values = dict(raw)
    cls = OUTPUT_TYPES[values.pop("type")]
    values["record"] = np.asarray(values["record"], dtype=np.int64)
    values["user_id"] = [str(u) for u in values["user_id"]]
    if "ks" in values:
        values["ks"] = tuple(values["ks"])
    return cls(**values)


# --------------------------------------------------------------------------- metrics and intervals


def task_metrics(outputs: RecordOutputs, indices: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of a task on the records at ``indices`` (all records when None)."""
    chosen = np.arange(len(outputs)) if indices is None else np.asarray(indices)
    return {name: float(values[0]) for name, values in outputs.metrics_on(chosen).items()}


@dataclass(frozen=True)
class Estimate:
    """A point estimate, its bootstrap interval and the replicates (for combining tasks)."""

    value: float
    low: float
    high: float
    n_records: int
    replicates: np.ndarray

    @property
    def interval(self) -> list[float | None]:
        return [_finite_or_none(self.low), _finite_or_none(self.high)]

    def excludes(self, threshold: float = 0.0) -> bool:
        """True when the whole interval lies on one side of ``threshold``."""
        return bool(self.low > threshold or self.high < threshold)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are drawn: one seed for every task and system, so all pairs are paired."""

    seed: int = 0
    n_resamples: int = 1000
    confidence: float = CONFIDENCE
    method: str = "percentile"

    def bootstrap(self, statistic: M.IndexStatistic, n_records: int) -> M.BootstrapResult:
        """:func:`recfound.metrics.bootstrap_records` of ``statistic`` with these settings."""
        return M.bootstrap_records(
            statistic,
            n_records,
            seed=self.seed,
            n_resamples=self.n_resamples,
            confidence=self.confidence,
            method=self.method,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
            "method": self.method,
            "unit": "record",
        }


def metric_estimates(outputs: RecordOutputs, settings: BootstrapSettings) -> dict[str, Estimate]:
    """Every metric of a task with its bootstrap interval over the task's records."""
    names = list(task_metrics(outputs))
    point = task_metrics(outputs)

    def statistic(indices: np.ndarray) -> np.ndarray:
        shape = indices.shape[:-1]
        values = outputs.metrics_on(indices)
        return np.stack([np.asarray(values[n]).reshape(shape) for n in names])

    result = settings.bootstrap(statistic, len(outputs))
    return {
        name: Estimate(
            point[name], result.low[i], result.high[i], len(outputs), result.distribution[i]
        )
        for i, name in enumerate(names)
    }


def align(a: RecordOutputs, b: RecordOutputs) -> tuple[RecordOutputs, RecordOutputs]:
    """Both outputs restricted to the records they share (by ``(record, user_id)``), same order."""
    if a.keys == b.keys:
        return a, b
    where_b = {key: i for i, key in enumerate(b.keys)}
    pairs = [(i, where_b[key]) for i, key in enumerate(a.keys) if key in where_b]
    left = np.array([i for i, _ in pairs], dtype=np.int64)
    right = np.array([j for _, j in pairs], dtype=np.int64)
    return a.take(left), b.take(right)


def paired_difference(
    a: RecordOutputs, b: RecordOutputs, metric: str, settings: BootstrapSettings
) -> Estimate:
    """``metric(a) − metric(b)`` on the records both have, with a paired bootstrap interval.

    Both systems are recomputed on the *same* resampled records, so what is shared between them
    (a hard user is hard for both) cancels out of the interval.
    """
    a, b = align(a, b)
    if len(a) == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, np.zeros(0))

    def statistic(indices: np.ndarray) -> np.ndarray:
        shape = indices.shape[:-1]
        left = np.asarray(a.metrics_on(indices)[metric]).reshape(shape)
        right = np.asarray(b.metrics_on(indices)[metric]).reshape(shape)
        return (left - right)[None]

    value = task_metrics(a)[metric] - task_metrics(b)[metric]
    result = settings.bootstrap(statistic, len(a))
    return Estimate(value, result.low[0], result.high[0], len(a), result.distribution[0])


def mean_of_estimates(estimates: Sequence[Estimate], confidence: float = CONFIDENCE) -> Estimate:
    """The mean over tasks, its interval from the tasks' replicates averaged one by one.

    Tasks are independent record sets resampled separately (a stratified bootstrap), so the
    ``b``-th replicate of the mean is the mean of every task's ``b``-th replicate.
    """
    if not estimates:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, np.zeros(0))
    value = float(np.mean([e.value for e in estimates]))
    usable = [e.replicates for e in estimates if e.replicates.size]
    width = min((r.size for r in usable), default=0)
    if len(usable) != len(estimates) or width == 0:
        nan = float("nan")
        return Estimate(value, nan, nan, sum(e.n_records for e in estimates), np.zeros(0))
    replicates = np.mean([r[:width] for r in usable], axis=0)
    low, high = M.percentile_interval(replicates, confidence)
    return Estimate(value, low, high, sum(e.n_records for e in estimates), replicates)


@dataclass(frozen=True)
class Comparison:
    """System A minus system B on one metric, paired record by record: what evaluation (model
    vs baselines), the registry's gates (candidate vs champion) and the ablation (row vs the full
    method) all report. ``estimate`` keeps the replicates (for averaging over tasks)."""

    metric: str
    estimate: Estimate

    @property
    def difference(self) -> float:
        return self.estimate.value

    @property
    def excludes_zero(self) -> bool:
        """The 95% interval lies entirely above or below 0: not noise at this record count."""
        return self.estimate.excludes(0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "difference": self.estimate.value,
            "ci": self.estimate.interval,
            "excludes_zero": self.excludes_zero,
            "n_records": self.estimate.n_records,
        }


def compare(
    a: RecordOutputs, b: RecordOutputs, metric: str, settings: BootstrapSettings
) -> Comparison:
    """``metric(a) − metric(b)`` with its paired bootstrap interval (:func:`paired_difference`)."""
    return Comparison(metric, paired_difference(a, b, metric, settings))
