"""Scores of per-record outputs with bootstrap intervals, the comparisons (model − best baseline,
model − best trivial answer, model − each baseline on full-ranking tasks) and the documents
evaluate writes (metrics.json, eval_records.json)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from recfound.evaluation.outputs import (
    BootstrapSettings,
    Estimate,
    RecordOutputs,
    TokenAccuracyOutputs,
    compare,
    mean_of_estimates,
    metric_estimates,
    outputs_from_dict,
    task_metrics,
)
from recfound.evaluation.protocols import (
    FULL_RANKING_PROTOCOLS,
    score_metric,
)

log = logging.getLogger(__name__)


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
