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

The report files are one unit (:func:`recfound.artifacts.publish_unit`): they are staged while the
run lasts, the old ``reports/evaluation_manifest.json`` is removed before the first file is put in
place and the new one, with every file's digest, is written after the last, so a failed run
changes nothing and ``register`` can tell reports from one complete run from a mix left by a
killed one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow

from recfound import artifacts
from recfound.accelerator import stage_device
from recfound.baselines.store import load_baselines
from recfound.config import Config
from recfound.evaluation.baseline_predictions import TrainedBaselines
from recfound.evaluation.model_eval import answered_as, evaluate_bundle
from recfound.evaluation.report import evaluation_markdown, plot_scores, score_rows
from recfound.layout import EVALUATION_MANIFEST, RECORDS_FILE
from recfound.model.bundle import load_bundle, read_spec
from recfound.tracking.runs import stage_run, task_inputs

log = logging.getLogger(__name__)

__all__ = ["answered_as", "evaluate_bundle", "run_evaluate", "trained_baselines"]


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


def run_evaluate(cfg: Config) -> dict[str, Any]:
    spec, info = read_spec(cfg.paths.merged)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged, device=stage_device())
    settings = {"evaluate": cfg.evaluate.model_dump(), "seed": cfg.seed}
    reports = Path(cfg.paths.reports)
    trained = trained_baselines(cfg)
    published = artifacts.publish_unit(reports / EVALUATION_MANIFEST, writer="recfound evaluate")
    with (
        published as unit,
        stage_run(cfg.tracking, "evaluate", settings, inputs=task_inputs(cfg, "test")) as run,
    ):
        document, records = evaluate_bundle(rec, spec.task_kinds, cfg, trained=trained)
        document["model"] = {"bundle": str(cfg.paths.merged), "merge": info.get("merge", {})}
        document["mlflow_run_id"] = run.info.run_id
        markdown = evaluation_markdown(document)
        rows = score_rows(document)
        figure = plot_scores(rows, unit.path(reports / "plots" / "evaluation_scores.png"))
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
        unit.write_json(reports / "metrics.json", document)
        unit.write_json(reports / RECORDS_FILE, records)
        unit.write_text(reports / "evaluation.md", markdown)
        unit.write_json(reports / "plots" / "evaluation_scores.json", rows)
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
