"""The Optuna merge search: objective, search space, resume, and a merge that beats its inputs.

The checkpoints here are synthetic: two "task vectors" that each solve one of two conflicting
tasks, and a score function that measures how well merged tensors solve each task. Everything
else (Optuna study, sqlite storage, merge methods) is the real thing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recfound.errors import UserInputError
from recfound.merge.tune import (
    MergeChoice,
    apply_choice,
    normalised_objective,
    read_checkpoint_tensors,
    study_figures,
    tune_merge,
)
from recfound.model.adapter_format import WEIGHTS_FILE
from tests.conftest import REPO_ROOT

BASE = {"w": torch.zeros(4)}
# each checkpoint moved the adapter towards one task's solution
CHECKPOINTS = {
    "best_generative": {"w": torch.tensor([1.0, 0.0, 0.0, 0.0])},
    "best_embedding": {"w": torch.tensor([0.0, 1.0, 0.0, 0.0])},
}


def task_scores(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Task A wants w[0] near 1, task B wants w[1] near 1; a score falls off smoothly (0..1)."""
    w = state["w"]
    return {
        "task_a": float(torch.exp(-((w[0] - 1) ** 2) / 0.5) * torch.exp(-w[2].abs())),
        "task_b": float(torch.exp(-((w[1] - 1) ** 2) / 0.5) * torch.exp(-w[3].abs())),
    }


def reference() -> dict[str, float]:
    singles = [task_scores(c) for c in CHECKPOINTS.values()]
    return {t: max(s[t] for s in singles) for t in ("task_a", "task_b")}


def test_objective_normalises_by_the_best_checkpoint() -> None:
    value, ratios = normalised_objective(
        {"a": 0.5, "b": 0.2, "c": 0.3}, {"a": 1.0, "b": 0.4, "c": 0}
    )
    assert ratios == {"a": 0.5, "b": 0.5} and value == pytest.approx(0.5)  # c carries no signal
    with pytest.raises(UserInputError):
        normalised_objective({"a": 0.1}, {"a": 0.0})


def test_choices_apply_every_method() -> None:
    ties = MergeChoice("ties", (1.0, 1.0), density=0.5, sparsify="magnitude")
    for choice in (MergeChoice("linear", (1.0, 1.0)), MergeChoice("slerp", (0.5, 0.5)), ties):
        merged = apply_choice(choice, CHECKPOINTS, BASE, seed=0)
        assert merged["w"].shape == (4,)
    linear = apply_choice(MergeChoice("linear", (1.0, 3.0)), CHECKPOINTS, BASE, seed=0)
    assert torch.allclose(linear["w"], torch.tensor([0.25, 0.75, 0.0, 0.0]))


def test_study_beats_every_checkpoint_and_resumes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls: list[int] = []
    ref = reference()
    kwargs = {
        "methods": ["linear", "slerp", "ties"],
        "density_min": 0.2,
        "seed": 7,
        "storage": storage,
        "on_trial": lambda number, choice, value, scores: calls.append(number),
    }
    kwargs["scored_on"] = "selection-1"
    first = tune_merge(CHECKPOINTS, BASE, task_scores, ref, trials=6, **kwargs)
    assert len(calls) == 6
    singles = [normalised_objective(task_scores(c), ref)[0] for c in CHECKPOINTS.values()]
    assert all(first.objective > s for s in singles), (first.objective, singles)

    resumed = tune_merge(CHECKPOINTS, BASE, task_scores, ref, trials=9, **kwargs)
    assert resumed.study.study_name == first.study.study_name
    assert len(calls) == 9  # only the 3 missing trials ran
    assert resumed.objective >= first.objective

    # scored on other records (another merge.max_per_task, rebuilt data): a new study, every
    # trial scored again, never a finished trial's value from the old records
    other = tune_merge(
        CHECKPOINTS, BASE, task_scores, ref, trials=4, **{**kwargs, "scored_on": "selection-2"}
    )
    assert other.study.study_name != first.study.study_name
    assert len(calls) == 9 + 4 and len(other.study.trials) == 4

    figures = study_figures(resumed.study, tmp_path / "plots")
    assert {f.name for f in figures} >= {"merge_optimization_history.png"}


def test_missing_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="run `recfound train` first"):
        read_checkpoint_tensors(tmp_path, ["best_generative", "last"])
    assert not (tmp_path / "last" / WEIGHTS_FILE).exists()


KILLED_MERGE = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from tests.merge.test_tune import BASE, CHECKPOINTS, reference, task_scores
from recfound.merge.tune import tune_merge

calls = []

def score(state):
    calls.append(1)
    if len(calls) == 3:  # the third trial: killed while it runs
        os.kill(os.getpid(), signal.SIGKILL)
    return task_scores(state)

tune_merge(CHECKPOINTS, BASE, score, reference(), trials=5, methods=["linear", "ties"],
           density_min=0.2, seed=0, storage=sys.argv[1], scored_on="selection")
"""


def test_a_trial_left_running_by_a_killed_merge_is_failed_and_run_again(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MERGE, storage, str(REPO_ROOT)], check=False
    )
    assert killed.returncode == -signal.SIGKILL
    (name,) = optuna.get_all_study_names(storage)
    states = [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]
    assert states.count(optuna.trial.TrialState.RUNNING) == 1  # left behind by the kill

    calls: list[int] = []

    def score(state: dict[str, torch.Tensor]) -> dict[str, float]:
        calls.append(1)
        return task_scores(state)

    kwargs = {"methods": ["linear", "ties"], "density_min": 0.2, "seed": 0, "storage": storage}
    kwargs["scored_on"] = "selection"
    resumed = tune_merge(CHECKPOINTS, BASE, score, reference(), trials=5, **kwargs)
    states = [t.state for t in resumed.study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.RUNNING) == 0
    assert states.count(optuna.trial.TrialState.COMPLETE) == 5
    assert len(calls) == 3  # 2 were done before the kill; the killed one ran again


def test_a_figure_that_cannot_be_drawn_leaves_no_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reports/plots is a persisted DVC output: an old study's figure must not pass for this one."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    def cannot_draw(study: optuna.Study) -> None:
        raise ValueError("too few trials")  # what Optuna raises for some studies

    monkeypatch.setattr(ovm, "plot_param_importances", cannot_draw)
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    stale = tmp_path / "merge_param_importances.png"
    stale.write_bytes(b"an older study's figure")
    written = study_figures(study, tmp_path)
    assert stale not in written and not stale.exists()


def test_a_task_with_a_near_zero_reference_does_not_decide_the_objective() -> None:
    from recfound.merge.tune import MAX_RATIO, normalised_objective

    reference = {"collapsed": 0.001, "a": 0.5, "b": 0.5}
    lucky = {"collapsed": 0.02, "a": 0.4, "b": 0.4}  # 20x on one record, worse on the others
    value, ratios = normalised_objective(lucky, reference)
    assert ratios["collapsed"] == MAX_RATIO
    assert value < normalised_objective(reference, reference)[0] + 0.2
