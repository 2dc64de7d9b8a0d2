"""The promotion gates, as pure functions of two evaluation reports (no MLflow here).

A candidate passes when there is no champion yet (or the champion's primary metric is not a
finite number), or when

- its primary metric is at least the champion's plus ``registry.min_improvement`` (point
  estimates), and
- no task scored by both *regressed*: a task regressed when the paired 95% bootstrap interval of
  (candidate − champion) score, on the records both were evaluated on, lies entirely below
  ``-registry.max_regression``. A task without per-record outputs on either side falls back to
  the point rule (score dropped more than ``max_regression``), and the decision says so.

A candidate with a non-finite score never passes. :mod:`recfound.tracking.registry` reads the
reports from the registry and applies the decision.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from recfound.config import RegistryConfig
from recfound.evaluation.outputs import (
    BootstrapSettings,
    RecordOutputs,
    compare,
    mean_of_estimates,
)

log = logging.getLogger(__name__)

TOLERANCE = 1e-9


def non_finite_scores(metrics: dict[str, Any], primary_metric: str) -> list[str]:
    """The keys of the scores the gates read (``overall.<primary>``, ``tasks.<t>.score``) whose
    value is NaN or infinite, with the value."""
    values = {f"overall.{primary_metric}": metrics.get("overall", {}).get(primary_metric)}
    for task, scores in sorted(metrics.get("tasks", {}).items()):
        values[f"tasks.{task}.score"] = scores.get("score")
    return [
        f"{key} = {value}"
        for key, value in values.items()
        if isinstance(value, int | float) and not math.isfinite(value)
    ]


@dataclass
class GateDecision:
    """Whether a candidate may become champion, and every gate it failed, in plain words."""

    passed: bool
    primary_metric: str
    candidate_value: float | None
    champion_value: float | None
    champion_version: int | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    forced: bool = False
    # task → the comparison behind its verdict: metric, scores, paired difference and interval
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    # candidate − champion of the mean score over the tasks compared on records, with interval
    paired_mean_difference: dict[str, Any] | None = None

    @property
    def promote(self) -> bool:
        """True when the candidate gets alias ``champion`` (gates passed, or forced)."""
        return self.passed or self.forced

    def summary(self) -> str:
        """One line per finding: the verdict, each failed gate, then notes."""
        against = "the champion" + (
            f" v{self.champion_version}" if self.champion_version is not None else ""
        )
        if self.champion_value is None and self.passed and self.champion_version is not None:
            head = (
                f"passes the gates: {against} has no finite {self.primary_metric} and counts "
                "as no champion"
            )
        elif self.champion_value is None and self.passed:
            head = "passes the gates: there is no champion yet"
        elif self.passed:
            head = (
                f"passes the gates against {against}: {self.primary_metric} "
                f"{_fmt(self.candidate_value)} vs {_fmt(self.champion_value)}"
            )
        else:
            head = f"fails {len(self.failures)} gate(s) against {against}" + (
                ", promoted by force" if self.forced else ""
            )
        lines = [head] + [f"  - {f}" for f in self.failures] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "promote": self.promote}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ---- gates --------------------------------------------------------------------------------


def overall_value(metrics: dict[str, Any] | None, name: str) -> float | None:
    try:
        return float(metrics["overall"][name])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None


Records = dict[str, RecordOutputs]


def _paired_task_comparison(
    task: str,
    candidate: RecordOutputs,
    champion: RecordOutputs,
    metric: str,
    max_regression: float,
    settings: BootstrapSettings,
) -> tuple[dict[str, Any], Any]:
    comparison = compare(candidate, champion, metric, settings)
    regressed = bool(comparison.estimate.high < -max_regression - TOLERANCE)
    entry = {"basis": "paired", **comparison.to_dict(), "regressed": regressed}
    entry.pop("excludes_zero")
    return entry, comparison.estimate


def check_gates(
    candidate_metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    registry_cfg: RegistryConfig,
    *,
    champion_version: int | None = None,
    force: bool = False,
    candidate_records: Records | None = None,
    champion_records: Records | None = None,
    settings: BootstrapSettings | None = None,
) -> GateDecision:
    """Compare a candidate's metrics with the champion's (both in metrics.json's shape).

    ``champion_metrics`` None means there is no champion: the candidate passes. ``force``
    promotes whatever the gates say; the failures are still listed. With both sides' per-record
    outputs (task → outputs, as in ``eval_records.json``) a task's regression is judged on the
    paired bootstrap interval of its score difference (see the module docstring); otherwise on
    the point estimates.
    """
    primary = registry_cfg.primary_metric
    settings = settings or BootstrapSettings()
    candidate = overall_value(candidate_metrics, primary)
    non_finite = non_finite_scores(candidate_metrics, primary)
    if non_finite:  # never champion, not even forced: a NaN would block every later version
        return GateDecision(
            passed=False,
            primary_metric=primary,
            candidate_value=candidate,
            champion_value=overall_value(champion_metrics, primary),
            champion_version=champion_version,
            failures=[
                f"the candidate's {', '.join(non_finite)}: not a finite number (NaN or "
                "infinite); such a version never becomes champion, not even with --force"
            ],
        )
    if champion_metrics is None:
        return GateDecision(True, primary, candidate, None, forced=force)
    champion = overall_value(champion_metrics, primary)
    if champion is not None and not math.isfinite(champion):
        log.warning(
            "the champion v%s has %s = %s (not a finite number): judged as if there were no "
            "champion",
            champion_version,
            primary,
            champion,
        )
        return GateDecision(
            True,
            primary,
            candidate,
            None,
            champion_version=champion_version,
            notes=[
                f"the champion v{champion_version}'s {primary} is {champion}, not a finite "
                "number: it counts as no champion"
            ],
            forced=force,
        )
    failures: list[str] = []
    notes: list[str] = []
    comparisons: dict[str, dict[str, Any]] = {}
    if candidate is None or champion is None:
        whose = "candidate" if candidate is None else f"champion (v{champion_version})"
        failures.append(
            f"{primary}: the {whose} has no overall {primary} score to compare "
            "(scores come from reports/metrics.json, written by `recfound evaluate`)"
        )
    else:
        needed = champion + registry_cfg.min_improvement
        if not candidate >= needed - TOLERANCE:
            failures.append(
                f"{primary}: candidate {candidate:.4f} is below the champion's {champion:.4f}"
                + (
                    f" + min_improvement {registry_cfg.min_improvement:g} = {needed:.4f}"
                    if registry_cfg.min_improvement
                    else ""
                )
            )
    candidate_tasks = candidate_metrics.get("tasks", {})
    champion_tasks = champion_metrics.get("tasks", {})
    allowed = registry_cfg.max_regression
    paired = []
    for task in sorted(set(candidate_tasks) & set(champion_tasks)):
        old = float(champion_tasks[task]["score"])
        new = float(candidate_tasks[task]["score"])
        metric = candidate_tasks[task].get("score_metric")
        same_metric = metric == champion_tasks[task].get("score_metric", metric)
        if not math.isfinite(old):
            notes.append(f"{task}: the champion has no finite score ({old}); not compared")
            continue
        if (
            candidate_records is not None
            and champion_records is not None
            and task in candidate_records
            and task in champion_records
            and same_metric
            and metric is not None
        ):
            comparison, difference = _paired_task_comparison(
                task, candidate_records[task], champion_records[task], metric, allowed, settings
            )
            if comparison["n_records"] > 0:
                comparison.update({"candidate": new, "champion": old})
                comparisons[task] = comparison
                paired.append(difference)
                low, high = comparison["ci"]
                if comparison["regressed"]:
                    failures.append(
                        f"task {task}: candidate {metric} {new:.4f} vs the champion's {old:.4f} "
                        f"on {comparison['n_records']} shared records: the difference "
                        f"{difference.value:+.4f} has a 95% paired interval [{low:.4f}, "
                        f"{high:.4f}] entirely below -{allowed:g} (the allowed drop)"
                    )
                continue
            notes.append(f"{task}: no record shared with the champion; compared on point scores")
        elif candidate_records is not None or champion_records is not None:
            notes.append(
                f"{task}: per-record outputs missing on one side; compared on point scores"
            )
        regressed = not new >= old - allowed - TOLERANCE
        comparisons[task] = {
            "basis": "point",
            "metric": metric,
            "candidate": new,
            "champion": old,
            "difference": new - old,
            "ci": None,
            "regressed": regressed,
        }
        if regressed:
            failures.append(
                f"task {task}: candidate score {new:.4f} is {old - new:.4f} below the "
                f"champion's {old:.4f}; the allowed drop is {allowed:g}"
            )
    for task in sorted(set(champion_tasks) - set(candidate_tasks)):
        notes.append(f"{task}: scored for the champion but not for the candidate; not compared")
    for task in sorted(set(candidate_tasks) - set(champion_tasks)):
        notes.append(f"{task}: new task (the champion has no score for it); not compared")
    mean = None
    if paired:
        estimate = mean_of_estimates(paired, settings.confidence)
        mean = {
            "tasks": len(paired),
            "difference": estimate.value,
            "ci": estimate.interval,
        }
    return GateDecision(
        passed=not failures,
        primary_metric=primary,
        candidate_value=candidate,
        champion_value=champion,
        champion_version=champion_version,
        failures=failures,
        notes=notes,
        forced=force,
        comparisons=comparisons,
        paired_mean_difference=mean,
    )
