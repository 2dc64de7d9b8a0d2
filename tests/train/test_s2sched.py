from __future__ import annotations

import numpy as np
import pytest
import torch

from recfound.config import ConfigError, S2SchedConfig
from recfound.train.s2sched import S2Scheduler, _slope


def test_slope_of_a_line() -> None:
    assert _slope([1.0, 0.8, 0.6, 0.4]) == pytest.approx(-0.2)
    assert _slope([0.5, 0.5]) == pytest.approx(0.0)


def test_uniform_and_proportional_strategies() -> None:
    kinds = {"a": "generative", "b": "generative", "e": "embedding"}
    sizes = {"a": 100, "b": 300, "e": 600}
    # each group fills its own batch, so probabilities are normalised inside a group
    assert S2Scheduler(kinds, sizes, strategy="uniform").weights == pytest.approx(
        {"a": 0.5, "b": 0.5, "e": 1.0}
    )
    assert S2Scheduler(kinds, sizes, strategy="proportional").weights == pytest.approx(
        {"a": 0.25, "b": 0.75, "e": 1.0}
    )


def test_task_weights_multiply_a_tasks_share_in_every_strategy() -> None:
    kinds = {"a": "generative", "b": "generative", "e": "embedding"}
    sizes = {"a": 100, "b": 300, "e": 600}
    weights = {"a": 3.0}
    assert S2Scheduler(
        kinds, sizes, strategy="uniform", task_weights=weights
    ).weights == pytest.approx({"a": 0.75, "b": 0.25, "e": 1.0})
    assert S2Scheduler(
        kinds, sizes, strategy="proportional", task_weights=weights
    ).weights == pytest.approx({"a": 0.5, "b": 0.5, "e": 1.0})
    # S2Sched: the same losses, the weighted task's probability goes up by its multiplier's pull
    params = S2SchedConfig(warmup_steps=0, update_every=1, window=3, floor=0.0, ema=0.0)
    plain = S2Scheduler(kinds, sizes, params)
    weighted = S2Scheduler(kinds, sizes, params, task_weights=weights)
    for step in range(5):
        losses = {"a": 1.0 - 0.1 * step, "b": 1.0 - 0.05 * step, "e": 0.9**step}
        plain.observe(step, losses)
        weighted.observe(step, losses)
    odds = lambda w: w["a"] / w["b"]  # noqa: E731
    assert odds(weighted.weights) == pytest.approx(3 * odds(plain.weights))
    assert weighted.weights["e"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"train\.task_weights names x, which has no training"):
        S2Scheduler(kinds, sizes, task_weights={"x": 2.0})


def test_slow_task_gets_more_and_floor_holds() -> None:
    params = S2SchedConfig(warmup_steps=0, update_every=1, window=3, floor=0.05, ema=0.0)
    sched = S2Scheduler(
        {"fast": "generative", "slow": "generative"}, {"fast": 1, "slow": 1}, params
    )
    for step in range(5):  # while "fast" still falls faster than "slow"
        sched.observe(step, {"fast": 0.5**step, "slow": 1.0 - 0.01 * step})
    # the final softmax of CoBa/RecFound bounds the ratio of two tasks' scores by e
    assert sched.weights["slow"] > 0.65
    assert sched.weights["fast"] >= 0.05 - 1e-9
    assert sum(sched.weights.values()) == pytest.approx(1.0)


def test_each_group_is_scheduled_on_its_own() -> None:
    params = S2SchedConfig(warmup_steps=0, update_every=1, window=3, floor=0.0, ema=0.0)
    kinds = {"g1": "generative", "g2": "generative", "e1": "embedding", "e2": "embedding"}
    sched = S2Scheduler(kinds, {"g1": 50, "g2": 50, "e1": 50, "e2": 50}, params)
    for step in range(6):
        sched.observe(step, {"g1": 0.5**step, "g2": 1 - 0.01 * step, "e1": 1.0, "e2": 0.9**step})
    w = sched.weights
    assert w["g1"] + w["g2"] == pytest.approx(1.0)
    assert w["e1"] + w["e2"] == pytest.approx(1.0)
    assert w["g2"] > w["g1"]
    assert w["e1"] > w["e2"]  # e1 does not converge at all
    rng = np.random.default_rng(0)
    assert set(sched.allocate(20, rng, "embedding")) <= {"e1", "e2"}
    assert set(sched.allocate(20, rng, "generative")) <= {"g1", "g2"}


def test_state_dict_round_trip() -> None:
    kinds, sizes = {"a": "generative", "b": "generative"}, {"a": 1, "b": 2}
    params = S2SchedConfig(warmup_steps=0, update_every=1)
    sched = S2Scheduler(kinds, sizes, params)
    for step in range(5):
        sched.observe(step, {"a": 1 / (step + 1), "b": 1.0})
    again = S2Scheduler(kinds, sizes, params)
    again.load_state_dict(sched.state_dict())
    assert again.weights == sched.weights
    again.observe(5, {"a": 0.1, "b": 0.9})
    sched.observe(5, {"a": 0.1, "b": 0.9})
    assert again.weights == sched.weights


def _train_two_tasks(strategy: str, steps: int = 120, seed: int = 0) -> dict[str, float]:
    """Two independent regression tasks sharing a batch budget: 'fast' is well conditioned,
    'slow' has small features, so it needs many more samples to fit."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = 8
    truth = {"fast": torch.randn(dim), "slow": torch.randn(dim)}
    scale = {"fast": 1.0, "slow": 0.25}
    weights = {t: torch.zeros(dim, requires_grad=True) for t in truth}
    opt = torch.optim.SGD(list(weights.values()), lr=0.1)

    def batch(task: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, dim) * scale[task]
        return x, x @ truth[task]

    val = {t: batch(t, 256) for t in truth}

    def val_loss(task: str) -> float:
        x, y = val[task]
        with torch.no_grad():
            return float(((x @ weights[task] - y) ** 2).mean() / (y**2).mean())

    params = S2SchedConfig(warmup_steps=5, update_every=5, window=3, floor=0.05, ema=0.3)
    sched = S2Scheduler(
        {"fast": "generative", "slow": "generative"},
        {"fast": 1, "slow": 1},
        params,
        strategy=strategy,
    )
    for step in range(steps):
        if sched.due(step):
            sched.observe(step, {t: val_loss(t) for t in truth})
        tasks = sched.allocate(16, rng)
        opt.zero_grad()
        loss = torch.zeros(())
        for task in truth:
            n = tasks.count(task)
            if n:
                x, y = batch(task, n)
                loss = loss + ((x @ weights[task] - y) ** 2).sum() / 16
        loss.backward()
        opt.step()
    result = {t: val_loss(t) for t in truth}
    result["slow_share"] = sched.weights["slow"]
    return result


def test_s2sched_favours_the_slow_task_and_lowers_the_worst_loss() -> None:
    uniform = _train_two_tasks("uniform")
    s2 = _train_two_tasks("s2sched")
    assert s2["slow_share"] > 0.55  # uniform keeps 0.5
    assert max(s2["fast"], s2["slow"]) < max(uniform["fast"], uniform["slow"])
