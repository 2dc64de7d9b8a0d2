"""Stage `evaluate`: the merged model and the baselines on every task's test split.

Recipe: load the bundle at ``paths.merged`` on ``paths.backbone`` → a seeded sample of at most
``evaluate.max_per_task`` test records per task → :func:`evaluate_model` and
:func:`evaluate_baselines` on exactly the same records → ``reports/metrics.json`` (DVC metrics; the
registry's gates read it), ``reports/evaluation.md`` (model vs baselines per task),
``reports/plots/evaluation_scores.{json,png}`` and the same to MLflow.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
from tqdm.auto import tqdm

from recfound import artifacts
from recfound.config import Config
from recfound.data.tasks import TASK_BUILDERS
from recfound.evaluation.report import evaluation_markdown, plot_scores, score_rows
from recfound.evaluation.runner import (
    evaluate_baselines,
    evaluate_model,
    load_eval_set,
    summarize,
)
from recfound.model.bundle import load_bundle, read_spec
from recfound.model.recmodel import RecModel
from recfound.tracking.runs import stage_run

log = logging.getLogger(__name__)


def answered_as(task_kinds: dict[str, str], tasks: list[str]) -> dict[str, str]:
    """Eval-only tasks the model has no adapter task for → the trained task that answers them."""
    out = {}
    for task in tasks:
        builder = TASK_BUILDERS.get(task)
        if task not in task_kinds and builder is not None and builder.answered_as in task_kinds:
            out[task] = builder.answered_as
    return out


def evaluate_bundle(
    rec: RecModel, task_kinds: dict[str, str], cfg: Config, split: str = "test"
) -> dict[str, Any]:
    """The metrics document of one model on ``split`` (model, baselines, overall scores)."""
    data = load_eval_set(cfg.paths.tasks, split, cfg.evaluate.max_per_task, cfg.seed)
    aliases = answered_as(task_kinds, list(data.frames))
    unanswerable = [t for t in data.frames if t not in task_kinds and t not in aliases]
    for task in unanswerable:
        log.warning("task %s: the model has no adapter task for it; not evaluated", task)
        data.frames.pop(task)
    bar = tqdm(total=len(data.frames), desc=f"evaluate ({split})", unit="task")

    def progress(task: str) -> None:
        bar.set_postfix_str(task)
        bar.update(1)

    started = time.perf_counter()
    model = evaluate_model(
        rec,
        data,
        ks=cfg.evaluate.ks,
        max_new_tokens=cfg.evaluate.max_new_tokens,
        batch_size=cfg.evaluate.batch_size,
        progress=progress,
        answered_as=aliases,
    )
    bar.close()
    kinds = {
        t: ("embedding" if v["protocol"] == "retrieval" else "generative") for t, v in model.items()
    }
    return {
        "overall": summarize(model, kinds),
        "tasks": {t: {"kind": kinds[t], **v} for t, v in model.items()},
        "baselines": evaluate_baselines(data, ks=cfg.evaluate.ks),
        "n_records": {t: len(f) for t, f in data.frames.items()},
        "answered_as": aliases,
        "split": split,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_evaluate(cfg: Config) -> dict[str, Any]:
    spec, info = read_spec(cfg.paths.merged)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged)
    settings = {"evaluate": cfg.evaluate.model_dump(), "seed": cfg.seed}
    reports = Path(cfg.paths.reports)
    with stage_run(cfg.tracking, "evaluate", settings) as run:
        document = evaluate_bundle(rec, spec.task_kinds, cfg)
        document["model"] = {"bundle": str(cfg.paths.merged), "merge": info.get("merge", {})}
        document["mlflow_run_id"] = run.info.run_id
        markdown = evaluation_markdown(document)
        rows = score_rows(document)
        figure = plot_scores(rows, reports / "plots" / "evaluation_scores.png")
        mlflow.log_metrics({f"overall/{k}": v for k, v in document["overall"].items()})
        mlflow.log_metrics(
            {
                f"{task}/{name}".replace("@", "_at_"): value
                for task, values in document["tasks"].items()
                for name, value in values.items()
                if isinstance(value, float)
            }
        )
        mlflow.log_dict(document, "metrics.json")
        mlflow.log_text(markdown, "evaluation.md")
        mlflow.log_artifact(str(figure), "plots")
    artifacts.write_json(reports / "metrics.json", document)
    artifacts.write_text(reports / "evaluation.md", markdown)
    artifacts.write_json(reports / "plots" / "evaluation_scores.json", rows)
    log.info(
        "test scores: mean %.4f (embedding %.4f, generative %.4f) over %d tasks; table in %s",
        document["overall"]["mean_score"],
        document["overall"]["embedding_score"],
        document["overall"]["generative_score"],
        len(document["tasks"]),
        reports / "evaluation.md",
    )
    return document
