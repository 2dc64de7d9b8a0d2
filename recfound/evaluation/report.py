"""Human-readable forms of a metrics document: the markdown table, plot rows and a bar chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINES = ("popularity", "item_knn", "bm25", "majority")
DETAIL_METRICS = (
    "recall@10",
    "ndcg@10",
    "mrr",
    "hr@5",
    "ndcg@5",
    "rmse",
    "mae",
    "auc",
    "accuracy",
    "exact_match",
    "bleu",
    "rouge_l",
)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else str(value))


def evaluation_markdown(document: Mapping[str, Any]) -> str:
    """Model vs baselines per task (the score metric), then the other metrics of each task."""
    tasks, baselines = document["tasks"], document["baselines"]
    overall = document["overall"]
    lines = [
        "# Evaluation (test split)",
        "",
        f"Mean score {overall['mean_score']:.4f} — embedding {overall['embedding_score']:.4f}, "
        f"generative {overall['generative_score']:.4f}. Every score is higher-is-better; each "
        "task's score metric is the one RecFound reports (F1 for generative tasks, Recall@1 for "
        "sequential recommendation, NDCG@20 for item2item, MRR@20 for query2item and user2item).",
        "Baselines run on exactly the same records; `–` = not applicable to the task.",
        "",
        "| task | kind | records | metric | model | "
        + " | ".join(BASELINES)
        + " | model − best baseline |",
        "|---|---|---:|---|---:|" + "---:|" * len(BASELINES) + "---:|",
    ]
    for task in sorted(tasks, key=lambda t: (tasks[t]["kind"], t)):
        values = tasks[task]
        row_baselines = [baselines.get(b, {}).get(task, {}).get("score") for b in BASELINES]
        known = [v for v in row_baselines if v is not None]
        delta = values["score"] - max(known) if known else None
        lines.append(
            f"| {task} | {values['kind']} | {document['n_records'].get(task, '')} | "
            f"{values['score_metric']} | {_fmt(values['score'])} | "
            + " | ".join(_fmt(v) for v in row_baselines)
            + f" | {_fmt(delta)} |"
        )
    if document.get("answered_as"):
        pairs = ", ".join(f"{t} with the {a} adapter" for t, a in document["answered_as"].items())
        lines += ["", f"Evaluation-only tasks answered by a trained task's gates: {pairs}."]
    lines += [
        "",
        "## Other metrics of the model",
        "",
        "| task | metric | value |",
        "|---|---|---:|",
    ]
    for task in sorted(tasks):
        for metric in DETAIL_METRICS:
            if metric in tasks[task]:
                lines.append(f"| {task} | {metric} | {_fmt(tasks[task][metric])} |")
    return "\n".join(lines) + "\n"


def score_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"task", "system", "score"}]`` for the model and every baseline (DVC plots)."""
    rows = [
        {"task": t, "system": "model", "score": v["score"]} for t, v in document["tasks"].items()
    ]
    for baseline, per_task in document["baselines"].items():
        rows += [{"task": t, "system": baseline, "score": v["score"]} for t, v in per_task.items()]
    return rows


def plot_scores(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Grouped bars: one group per task, one bar per system."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = sorted({r["task"] for r in rows})
    systems = ["model", *[b for b in BASELINES if any(r["system"] == b for r in rows)]]
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(tasks)), 4.5))
    for i, system in enumerate(systems):
        values = {r["task"]: r["score"] for r in rows if r["system"] == system}
        xs = [j + i * width for j, t in enumerate(tasks) if t in values]
        ax.bar(xs, [values[t] for t in tasks if t in values], width, label=system)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("score (task's metric)")
    ax.set_title("Test scores: model vs baselines")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
