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
    points = {task: [(s, w[task]) for s, w in history if task in w] for task in task_kinds}
    return _panels_by_kind(points, task_kinds, "share of the batch", path, "sampling probability")


def plot_validation_curves(
    history: list[tuple[int, dict[str, float]]], task_kinds: Mapping[str, str], path: str | Path
) -> Path:
    """Validation loss of each task by step, one panel per group."""
    points = {
        task: [(s, v[f"{task}/loss"]) for s, v in history if f"{task}/loss" in v]
        for task in task_kinds
    }
    return _panels_by_kind(points, task_kinds, "validation loss", path, marker=".")


def _panels_by_kind(
    points: Mapping[str, list[tuple[int, float]]],
    task_kinds: Mapping[str, str],
    title: str,
    path: str | Path,
    ylabel: str = "",
    marker: str = "",
) -> Path:
    """One panel per group of tasks (embedding, generative): each task's (step, value) points."""
    kinds = sorted(set(task_kinds.values()))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for task in sorted(t for t, k in task_kinds.items() if k == kind):
            steps, values = [s for s, _ in points[task]], [v for _, v in points[task]]
            ax.plot(steps, values, marker=marker or None, label=task)
        ax.set_title(f"{kind} tasks: {title}")
        ax.set_xlabel("step")
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    return _save_figure(fig, path)


def plot_pretraining(curve: list[tuple[int, float, dict[str, float]]], path: str | Path) -> Path:
    """Two panels: held-out text and behaviour loss by step; next-item validation Recall/NDCG@10
    by minutes of training (what more pretraining compute buys)."""
    fig, (losses, quality) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [s for s, _, _ in curve]
    losses_of = {"heldout_loss": "text", "heldout_behaviour_loss": "behaviour"}
    _curves(losses, steps, curve, losses_of, ("step", "held-out next-token loss"))
    losses.set_title("Pretraining loss")
    minutes = [t / 60 for _, t, _ in curve]
    quality_of = {"valid_recall@10": "valid_recall@10", "valid_ndcg@10": "valid_ndcg@10"}
    axes = ("training minutes", "full-ranking score (validation users)")
    _curves(quality, minutes, curve, quality_of, axes)
    quality.set_title("Next item from the bare backbone")
    return _save_figure(fig, path)


def _curves(
    ax: plt.Axes,
    xs: list[float],
    curve: list[tuple[int, float, dict[str, float]]],
    labels: Mapping[str, str],
    axis_labels: tuple[str, str],
) -> None:
    """One line per key of ``labels`` that every point of ``curve`` has, against ``xs``."""
    for key, label in labels.items():
        if all(key in v for _, _, v in curve):
            ax.plot(xs, [v[key] for _, _, v in curve], marker="o", label=label)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.legend()


def _save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, and close it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
