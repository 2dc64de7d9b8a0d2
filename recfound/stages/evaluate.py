"""Stage `evaluate`: the merged model and the baselines on every task's test split.

Recipe: load the bundle at ``paths.merged`` on ``paths.backbone`` → every test record of the
full-ranking tasks and a seeded sample of at most ``evaluate.max_per_task`` records of the others
→ per-record outputs of the model (:func:`model_outputs`) and of the baselines
(:func:`baseline_outputs`, with SASRec and biased MF from the ``baselines`` stage when present) on
exactly the same records → every metric with a seeded 95% bootstrap interval, model − best
baseline with a paired interval → ``reports/metrics.json`` (DVC metrics; the registry's gates read
it), ``reports/eval_records.json`` (the model's per-record outputs: the registry pairs champion and
challenger on them), ``reports/evaluation.md``, ``reports/plots/evaluation_scores.{json,png}`` and
the same to the MLflow run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
from tqdm.auto import tqdm

from recfound import artifacts
from recfound.accelerator import stage_device
from recfound.config import Config
from recfound.data.tasks import TASK_BUILDERS
from recfound.evaluation.baselines import load_baselines
from recfound.evaluation.outputs import BootstrapSettings
from recfound.evaluation.report import evaluation_markdown, plot_scores, score_rows
from recfound.evaluation.runner import (
    TrainedBaselines,
    assign_protocols,
    baseline_outputs,
    cap_records,
    evaluation_document,
    load_eval_set,
    model_outputs,
    records_document,
)
from recfound.model.bundle import load_bundle, read_spec
from recfound.model.recmodel import RecModel
from recfound.tracking.runs import stage_run

log = logging.getLogger(__name__)

RECORDS_FILE = "eval_records.json"


def answered_as(task_kinds: dict[str, str], tasks: list[str]) -> dict[str, str]:
    """Eval-only tasks the model has no adapter task for → the trained task that answers them."""
    out = {}
    for task in tasks:
        builder = TASK_BUILDERS.get(task)
        if task not in task_kinds and builder is not None and builder.answered_as in task_kinds:
            out[task] = builder.answered_as
    return out


def trained_baselines(cfg: Config) -> TrainedBaselines:
    """SASRec and biased MF as trained by the ``baselines`` stage (``paths.baselines``); left out
    of the comparison, with a warning, when that stage has not run."""
    threshold = float(cfg.data.rating_threshold)
    directory = Path(cfg.paths.baselines)
    if not directory.is_dir():
        log.warning(
            "no trained baselines at %s: SASRec and biased MF are left out of the comparison "
            "(run `recfound baselines`)",
            directory,
        )
        return TrainedBaselines(rating_threshold=threshold)
    sasrec, biased_mf = load_baselines(directory)
    return TrainedBaselines(sasrec=sasrec, biased_mf=biased_mf, rating_threshold=threshold)


def evaluate_bundle(
    rec: RecModel,
    task_kinds: dict[str, str],
    cfg: Config,
    split: str = "test",
    trained: TrainedBaselines | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics document, per-record outputs document)`` of one model on ``split``."""
    data = load_eval_set(cfg.paths.tasks, split, None, cfg.seed)
    aliases = answered_as(task_kinds, list(data.frames))
    unanswerable = [t for t in data.frames if t not in task_kinds and t not in aliases]
    for task in unanswerable:
        log.warning("task %s: the model has no adapter task for it; not evaluated", task)
        data.frames.pop(task)
    protocols = assign_protocols(data, rec)
    data = cap_records(data, protocols, cfg.evaluate.max_per_task, cfg.seed)
    bar = tqdm(total=len(data.frames), desc=f"evaluate ({split})", unit="task")

    def progress(task: str) -> None:
        bar.set_postfix_str(task)
        bar.update(1)

    started = time.perf_counter()
    outputs = model_outputs(
        rec,
        data,
        protocols,
        ks=cfg.evaluate.ks,
        max_new_tokens=cfg.evaluate.max_new_tokens,
        batch_size=cfg.evaluate.batch_size,
        progress=progress,
        answered_as=aliases,
    )
    bar.close()
    model_seconds = time.perf_counter() - started
    baselines = baseline_outputs(data, protocols, cfg.evaluate.ks, trained)
    kinds = {t: ("embedding" if protocols[t] == "retrieval" else "generative") for t in outputs}
    document = evaluation_document(
        outputs, baselines, protocols, kinds, BootstrapSettings(seed=cfg.seed)
    )
    document.update(
        {
            "answered_as": aliases,
            "split": split,
            "records_file": RECORDS_FILE,
            "seconds": round(time.perf_counter() - started, 1),
            "model_seconds": round(model_seconds, 1),
        }
    )
    return document, records_document(outputs, protocols, split)


def run_evaluate(cfg: Config) -> dict[str, Any]:
    spec, info = read_spec(cfg.paths.merged)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged, device=stage_device())
    settings = {"evaluate": cfg.evaluate.model_dump(), "seed": cfg.seed}
    reports = Path(cfg.paths.reports)
    trained = trained_baselines(cfg)
    with stage_run(cfg.tracking, "evaluate", settings) as run:
        document, records = evaluate_bundle(rec, spec.task_kinds, cfg, trained=trained)
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
        mlflow.log_dict(records, RECORDS_FILE)
        mlflow.log_text(markdown, "evaluation.md")
        mlflow.log_artifact(str(figure), "plots")
    artifacts.write_json(reports / "metrics.json", document)
    artifacts.write_json(reports / RECORDS_FILE, records)
    artifacts.write_text(reports / "evaluation.md", markdown)
    artifacts.write_json(reports / "plots" / "evaluation_scores.json", rows)
    log.info(
        "test scores: mean %.4f (embedding %.4f, generative %.4f) over %d tasks in %.0f s; "
        "table in %s",
        document["overall"]["mean_score"],
        document["overall"]["embedding_score"],
        document["overall"]["generative_score"],
        len(document["tasks"]),
        document["seconds"],
        reports / "evaluation.md",
    )
    return document
