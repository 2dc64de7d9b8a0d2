"""S2Sched: step-wise, convergence-oriented task sampling (RecFound, built on CoBa).

Every ``update_every`` steps after ``warmup_steps`` the trainer reports each task's validation loss.
The scheduler keeps ``r_i = L_i(t) / L_i(0)`` and, over a sliding window of the last ``window``
reports, fits each task's slope ``a_i`` (least squares of r against the report index). Each group
(embedding, generative) is scheduled on its own, because each fills its own batch of a step. Inside
a group of K tasks, as CoBa and RecFound define them:

- relative convergence score ``RCS_i = softmax_i(K * a_i / sum_j |a_j|)``: a task whose loss falls
  slowest, or rises, gets more;
- absolute convergence score ``ACS_i = softmax_i(-M * a_i / sum_s |a_i(s)|)`` over the task's own
  last M slopes: a task that starts to diverge against its own history gets less;
- divergence factor ``DF = min(t * softmax_s(-tau * t * a_max(s) / sum_s |a_max(s)|)[t], 1)`` over
  the *whole* history s = 1..t of ``a_max``, the slope of the group's max-loss curve
  ``max_i r_i``: while the worst loss keeps falling as fast as before, DF stays at 1 and RCS
  balances speeds; when it flattens or turns upwards, DF drops and ACS takes over;
- ``w_i = softmax_i(DF * RCS_i + (1 - DF) * ACS_i)`` (the final softmax).

Then ``w_i`` is multiplied by the task's share of its group's data (times its ``task_weights``
multiplier, 1 unless set), renormalised inside the group,
floored (no task starves), renormalised and smoothed with an EMA. The result is each task's
probability within its group for the next batches. Uniform and size-proportional sampling remain
available for ablation (``strategy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from recfound.config import ConfigError, S2SchedConfig

Strategy = Literal["s2sched", "uniform", "proportional"]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, …"""
    y = np.asarray(values, dtype=float)
    x = np.arange(len(y), dtype=float)
    x -= x.mean()
    return float((x * (y - y.mean())).sum() / max((x * x).sum(), 1e-12))


def check_task_weights(weights: Mapping[str, float], trained: Iterable[str]) -> None:
    """``train.task_weights`` may only name tasks that have training records (zero_shot, for
    one, is evaluated only)."""
    trained = sorted(trained)
    untrained = sorted(set(weights) - set(trained))
    if untrained:
        raise ConfigError(
            f"train.task_weights names {', '.join(untrained)}, which has no training records; "
            f"allowed: {', '.join(trained)}"
        )


@dataclass
class S2Scheduler:
    """Per-task sampling probabilities that follow each task's convergence."""

    task_kinds: Mapping[str, str]
    data_sizes: Mapping[str, int]
    params: S2SchedConfig = field(default_factory=S2SchedConfig)
    strategy: Strategy = "s2sched"
    task_weights: Mapping[str, float] = field(default_factory=dict)
    initial_loss: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    slopes: dict[str, list[float]] = field(default_factory=dict)
    worst_slopes: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.task_kinds) ^ set(self.data_sizes)
        if unknown:
            raise ValueError(f"tasks without both a kind and a data size: {sorted(unknown)}")
        check_task_weights(self.task_weights, self.task_kinds)
        if not self.weights:
            self.weights = self._base_weights()

    @property
    def tasks(self) -> list[str]:
        return sorted(self.task_kinds)

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for task in self.tasks:
            groups.setdefault(self.task_kinds[task], []).append(task)
        return groups

    def _shares(self, members: list[str]) -> np.ndarray:
        """Each member's data size times its weight (S2Sched and proportional sampling)."""
        return np.array(
            [self.data_sizes[t] * self.task_weights.get(t, 1.0) for t in members], dtype=float
        )

    def _base_weights(self) -> dict[str, float]:
        """Uniform or size-proportional probabilities (times ``task_weights``), normalised inside
        each group."""
        out: dict[str, float] = {}
        for members in self._groups().values():
            if self.strategy == "uniform":
                shares = np.array([self.task_weights.get(t, 1.0) for t in members])
            else:
                shares = self._shares(members)
            out.update(dict(zip(members, (shares / shares.sum()).tolist(), strict=True)))
        return out

    def due(self, step: int) -> bool:
        """Whether the trainer should report validation losses at ``step``."""
        if self.strategy != "s2sched":
            return False
        return step == 0 or (
            step >= self.params.warmup_steps and step % self.params.update_every == 0
        )

    def observe(self, step: int, val_losses: Mapping[str, float]) -> dict[str, float]:
        """Record validation losses at ``step`` and update (and return) the weights."""
        for task in self.tasks:
            loss = float(val_losses[task])
            if task not in self.initial_loss:
                self.initial_loss[task] = max(loss, 1e-8)
            self.ratios.setdefault(task, []).append(loss / self.initial_loss[task])
        if step >= self.params.warmup_steps and self._ready():
            self._update()
        self.history.append((step, dict(self.weights)))
        return dict(self.weights)

    def _ready(self) -> bool:
        return all(len(self.ratios.get(t, [])) >= 2 for t in self.tasks)

    def _update(self) -> None:
        p = self.params
        for task in self.tasks:
            self.slopes.setdefault(task, []).append(_slope(self.ratios[task][-p.window :]))
        weights: dict[str, float] = {}
        for kind, members in self._groups().items():
            a = np.array([self.slopes[t][-1] for t in members])
            k = len(members)
            rcs = _softmax(k * a / max(np.abs(a).sum(), 1e-12))
            acs_logits = []
            for t in members:
                own = np.array(self.slopes[t][-p.slope_history :])
                acs_logits.append(-len(own) * own[-1] / max(np.abs(own).sum(), 1e-12))
            acs = _softmax(np.array(acs_logits))
            # the group's max-loss curve and its slope; DF looks at the slope's whole history
            reports = min(len(self.ratios[t]) for t in members)
            worst_curve = [max(self.ratios[t][i] for t in members) for i in range(reports)]
            worst = self.worst_slopes.setdefault(kind, [])
            worst.append(_slope(worst_curve[-p.window :]))
            w_hist = np.array(worst)
            n = len(w_hist)
            df_soft = _softmax(-p.tau * n * w_hist / max(np.abs(w_hist).sum(), 1e-12))
            df = min(n * float(df_soft[-1]), 1.0)
            omega = _softmax(df * rcs + (1 - df) * acs)
            share = self._shares(members)
            scored = omega * share / share.sum()
            scored /= scored.sum()
            floored = np.maximum(scored, p.floor)
            floored /= floored.sum()
            smoothed = np.array(
                [
                    p.ema * self.weights[t] + (1 - p.ema) * f
                    for t, f in zip(members, floored, strict=True)
                ]
            )
            smoothed /= smoothed.sum()
            weights.update(dict(zip(members, smoothed.tolist(), strict=True)))
        self.weights = weights

    def allocate(
        self, batch_size: int, rng: np.random.Generator, kind: str | None = None
    ) -> list[str]:
        """The task of each of the next ``batch_size`` samples of group ``kind`` (every task when
        None), drawn from the weights."""
        tasks = [t for t in self.tasks if kind is None or self.task_kinds[t] == kind]
        if not tasks or batch_size <= 0:
            return []
        probs = np.array([self.weights[t] for t in tasks])
        draws = rng.choice(len(tasks), size=batch_size, p=probs / probs.sum())
        return [tasks[i] for i in draws]

    def state_dict(self) -> dict:
        return {
            "initial_loss": self.initial_loss,
            "ratios": self.ratios,
            "slopes": self.slopes,
            "worst_slopes": self.worst_slopes,
            "weights": self.weights,
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.initial_loss = dict(state["initial_loss"])
        self.ratios = {k: list(v) for k, v in state["ratios"].items()}
        self.slopes = {k: list(v) for k, v in state["slopes"].items()}
        self.worst_slopes = {k: list(v) for k, v in state["worst_slopes"].items()}
        self.weights = dict(state["weights"])
        self.history = [(int(s), dict(w)) for s, w in state["history"]]
