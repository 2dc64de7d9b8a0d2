"""Pictures of a training run: each task's share of the batch, and validation curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_task_shares(
    history: list[tuple[int, dict[str, float]]],
    task_kinds: Mapping[str, str],
    path: str | Path,
) -> Path:
    """One panel per group (embedding, generative): sampling probability of each task by step."""
    kinds = sorted(set(task_kinds.values()))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for task in sorted(t for t, k in task_kinds.items() if k == kind):
            steps = [s for s, w in history if task in w]
            ax.plot(steps, [w[task] for _, w in history if task in w], label=task)
        ax.set_title(f"{kind} tasks: share of the batch")
        ax.set_xlabel("step")
        ax.set_ylabel("sampling probability")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_validation_curves(
    history: list[tuple[int, dict[str, float]]], task_kinds: Mapping[str, str], path: str | Path
) -> Path:
    """Validation loss of each task by step, one panel per group."""
    kinds = sorted(set(task_kinds.values()))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for task in sorted(t for t, k in task_kinds.items() if k == kind):
            key = f"{task}/loss"
            points = [(s, v[key]) for s, v in history if key in v]
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=task)
        ax.set_title(f"{kind} tasks: validation loss")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pretraining(curve: list[tuple[int, float, dict[str, float]]], path: str | Path) -> Path:
    """Two panels: held-out text and behaviour loss by step; next-item validation Recall/NDCG@10
    by minutes of training (what more pretraining compute buys)."""
    fig, (losses, quality) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [s for s, _, _ in curve]
    for key, label in (("heldout_loss", "text"), ("heldout_behaviour_loss", "behaviour")):
        if all(key in v for _, _, v in curve):
            losses.plot(steps, [v[key] for _, _, v in curve], marker="o", label=label)
    losses.set_xlabel("step")
    losses.set_ylabel("held-out next-token loss")
    losses.set_title("Pretraining loss")
    losses.legend()
    minutes = [t / 60 for _, t, _ in curve]
    for key in ("valid_recall@10", "valid_ndcg@10"):
        if all(key in v for _, _, v in curve):
            quality.plot(minutes, [v[key] for _, _, v in curve], marker="o", label=key)
    quality.set_xlabel("training minutes")
    quality.set_ylabel("full-ranking score (validation users)")
    quality.set_title("Next item from the bare backbone")
    quality.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
