"""Human-readable forms of a metrics document: the markdown table, plot rows and a bar chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINES = ("popularity", "item_knn", "sasrec", "bm25", "biased_mf", "majority", "global_mean")
FULL_RANKING_COLUMNS = (
    "recall@5",
    "recall@10",
    "recall@20",
    "ndcg@5",
    "ndcg@10",
    "ndcg@20",
    "mrr@20",
    "unmasked_recall@10",
    "unmasked_ndcg@10",
)
RATING_COLUMNS = ("rmse", "mae", "f1", "accuracy", "auc")
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
    "well_formed",
)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else str(value))


def with_interval(value: Any, interval: Sequence[Any] | None, digits: int = 4) -> str:
    """``0.1234 [0.1000, 0.1500]`` (the interval left out when unknown)."""
    if not isinstance(value, float):
        return _fmt(value)
    if not interval or interval[0] is None or interval[1] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _metric_cell(values: Mapping[str, Any] | None, metric: str) -> str:
    if not values or metric not in values:
        return "–"
    return with_interval(values[metric], values.get("ci", {}).get(metric))


UNMASKED = (
    "`unmasked_*`: the same ranking without excluding the user's earlier items (as RecBole ranks "
    "its sequential models)."
)


def _systems_section(
    document: Mapping[str, Any], task: str, title: str, metrics: Sequence[str], note: str = ""
) -> list[str]:
    """A task's heading (``title`` after its name), ``note``, and a markdown table of the
    ``metrics`` it has with one row per system (the model, then the baselines)."""
    values = document["tasks"][task]
    columns = [c for c in metrics if c in values]
    lines = ["", f"## {task}{title} ({values.get('n_records', '')} records)", ""]
    if note:
        lines += [note, ""]
    lines += ["| system | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for system, values in _systems(document, task):
        lines.append(f"| {system} | " + " | ".join(_metric_cell(values, c) for c in columns) + " |")
    return lines


def _systems(document: Mapping[str, Any], task: str) -> list[tuple[str, Mapping[str, Any]]]:
    rows = [("model", document["tasks"][task])]
    rows += [
        (b, document["baselines"][b][task])
        for b in BASELINES
        if task in document["baselines"].get(b, {})
    ]
    return rows


def _difference_cell(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci"]
    mark = "*" if entry.get("excludes_zero") else ""
    return f"{entry['difference']:+.4f} [{_fmt(low)}, {_fmt(high)}]{mark}"


def evaluation_markdown(document: Mapping[str, Any]) -> str:
    """Model vs baselines per task (score metric with its 95% interval, record counts, the paired
    model − best baseline), the full-ranking and rating tables, then the model's other metrics."""
    tasks, baselines = document["tasks"], document["baselines"]
    overall, overall_ci = document["overall"], document.get("overall_ci", {})
    boot = document.get("bootstrap", {})
    present = [b for b in BASELINES if b in baselines]
    lines = [
        "# Evaluation (test split)",
        "",
        f"Mean score {with_interval(overall['mean_score'], overall_ci.get('mean_score'))} — "
        f"embedding {with_interval(overall['embedding_score'], overall_ci.get('embedding_score'))}"
        f", generative "
        f"{with_interval(overall['generative_score'], overall_ci.get('generative_score'))}.",
        "",
        "Every score is higher-is-better; each task's score metric is the one RecFound reports "
        "(F1 for generative tasks, NDCG@20 for item2item, MRR@20 for query2item and user2item; "
        "Recall@10 for next-item tasks ranked over the whole catalogue). `[a, b]` is a "
        f"{100 * boot.get('confidence', 0.95):.0f}% bootstrap interval over the task's records "
        f"({boot.get('n_resamples', 1000)} resamples, {boot.get('method', 'percentile')}, "
        f"seed {boot.get('seed', '?')}); model − best baseline is a *paired* interval (both "
        "systems on the same resampled records). Baselines run on exactly the same records as "
        "the model (`n`); `–` = not applicable.",
        "",
        "Full-ranking tasks rank every catalogue item and exclude every item the user met before "
        "the target (all training interactions; for test also the validation item), never the "
        "target; they use every test record. Other tasks use a seeded sample.",
        "",
        "| task | kind | protocol | n | metric | model | "
        + " | ".join(present)
        + " | model − best baseline | model − best trivial |",
        "|---|---|---|---:|---|---:|" + "---:|" * len(present) + "---:|---:|",
    ]
    versus = document.get("versus_best_baseline", {})
    trivial = document.get("versus_trivial", {})
    for task in sorted(tasks, key=lambda t: (tasks[t]["kind"], t)):
        values = tasks[task]
        metric = values["score_metric"]
        cells = [_metric_cell(baselines.get(b, {}).get(task), "score") for b in present]
        delta = versus.get(task)
        delta_cell = (
            f"{with_interval(delta['difference'], delta['ci'])} ({delta['baseline']})"
            if delta
            else "–"
        )
        n = values.get("n_records", document.get("n_records", {}).get(task, ""))
        low = trivial.get(task)
        trivial_cell = f"{_difference_cell(low)} ({low['baseline']})" if low else "–"
        lines.append(
            f"| {task} | {values['kind']} | {values.get('protocol', '')} | {n} | {metric} | "
            f"{_metric_cell(values, 'score')} | "
            + " | ".join(cells)
            + f" | {delta_cell} | {trivial_cell} |"
        )
    if document.get("answered_as"):
        pairs = ", ".join(f"{t} with the {a} adapter" for t, a in document["answered_as"].items())
        lines += ["", f"Evaluation-only tasks answered by a trained task's gates: {pairs}."]
    if thresholds := document.get("decision_thresholds"):
        cuts = ", ".join(f"{t} {v:+.2f}" for t, v in sorted(thresholds.items()))
        lines += [
            "",
            "Two-label tasks answer their first label (yes, answerable) where its log-probability "
            "margin exceeds a threshold chosen on the task's validation records (best macro-F1 "
            f"there; 0 is the plain argmax): {cuts}.",
        ]
    lines += _trivial_summary(tasks, trivial)
    for task, entry in sorted(document.get("single_path", {}).items()):
        versus = entry.get("versus_best_baseline")
        lines += [
            "",
            f"{task} is ranked by its {entry['path']} fused with {entry['fused_with']} (z-scores "
            f"added); the {entry['path']} alone scores {entry['metric']} "
            f"{with_interval(entry['score'], entry['ci'])}"
            + (
                f", {entry['path']} alone − {versus['baseline']} {_difference_cell(versus)}."
                if versus
                else "."
            ),
        ]
    lines += _text_sections(tasks, document.get("text_samples", {}))

    full = [t for t in sorted(tasks) if tasks[t].get("protocol") in ("retrieval", "next_item")]
    for task in full:
        lines += _systems_section(document, task, ": full ranking", FULL_RANKING_COLUMNS, UNMASKED)
        versus = document.get("versus_each_baseline", {}).get(task, {})
        if versus:
            metrics = sorted({m for per in versus.values() for m in per})
            lines += [
                "",
                "Model − each baseline, paired 95% interval (`*`: the interval excludes 0):",
                "",
                "| baseline | " + " | ".join(metrics) + " |",
                "|---|" + "---:|" * len(metrics),
            ]
            for baseline, per in versus.items():
                cells = [_difference_cell(per[m]) if m in per else "–" for m in metrics]
                lines.append(f"| {baseline} | " + " | ".join(cells) + " |")
    rated = [t for t in sorted(tasks) if tasks[t].get("protocol") in ("rating", "classification")]
    rated = [t for t in rated if any(s == "biased_mf" for s, _ in _systems(document, t))]
    for task in rated:
        lines += _systems_section(document, task, "", RATING_COLUMNS)
    lines += [
        "",
        "## Other metrics of the model",
        "",
        "| task | metric | value [95% interval] |",
        "|---|---|---:|",
    ]
    for task in sorted(tasks):
        if task in full:
            continue
        for metric in DETAIL_METRICS:
            if metric in tasks[task]:
                lines.append(f"| {task} | {metric} | {_metric_cell(tasks[task], metric)} |")
    return "\n".join(lines) + "\n"


def _trivial_summary(
    tasks: Mapping[str, Any], trivial: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """How many tasks beat the answer that needs no learning (majority or constant answer,
    global mean, popularity), and rating RMSE against the global mean."""
    if not trivial:
        return []
    at = sum(1 for e in trivial.values() if e["at_or_above"])
    above = sum(1 for e in trivial.values() if e["excludes_zero"] and e["difference"] > 0)
    lines = [
        "",
        f"**Against the trivial answer** (`*`: paired interval excludes 0): {at} of {len(trivial)} "
        f"tasks at or above their best trivial baseline, {above} above it with the interval "
        "excluding 0.",
    ]
    for task, entry in sorted(trivial.items()):
        if "rmse" in entry:
            rmse = entry["rmse"]
            lines.append(
                f"{task}: RMSE model − global mean {_difference_cell(rmse)} (lower is better; "
                f"model RMSE {_fmt(tasks[task].get('rmse'))})."
            )
    return lines


def _text_sections(
    tasks: Mapping[str, Any], samples: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[str]:
    """Per text task: the well-formed rate and three answers beside their targets."""
    if not samples:
        return []
    lines = [
        "",
        "## Generated text",
        "",
        "Well-formed: the answer parses as the task's template or answer type (and does not "
        "repeat a word three times in a row).",
    ]
    for task in sorted(samples):
        rate = _metric_cell(tasks.get(task), "well_formed")
        lines += [
            "",
            f"### {task} — well-formed {rate}, token F1 {_metric_cell(tasks.get(task), 'score')}",
            "",
            "| target | model | well-formed |",
            "|---|---|---|",
        ]
        for sample in samples[task]:
            target = str(sample["target"]).replace("|", "\\|")
            output = str(sample["output"]).replace("|", "\\|") or "(empty)"
            lines.append(f"| {target} | {output} | {'yes' if sample['well_formed'] else 'no'} |")
    return lines


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
