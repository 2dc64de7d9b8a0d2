"""Stage `train`: TMoLE (or LoRA) adapters on every task at once, S2Sched sampling, checkpoints.

Reads the task datasets and the backbone, trains, and writes ``paths.train``: ``last/``,
``best_generative/``, ``best_embedding/`` checkpoints (adapter directories plus optimiser and
trainer state) and ``adapter_config.json`` (the spec merge rebuilds the model from); metrics
to ``reports/train.json``; plots (task shares, validation curves) to ``reports/plots/`` and MLflow.
The checkpoints and these reports are one unit (``reports/manifests/train.json``,
:func:`recfound.artifacts.publish_unit`): a run that fails, even after training, leaves every
previous output as it was and its own checkpoints in ``.<paths.train>.partial`` (where
``--resume`` continues).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
from accelerate import PartialState

from recfound import artifacts
from recfound.config import Config
from recfound.layout import unit_manifest
from recfound.tracking.runs import TRAINING, stage_run, task_inputs
from recfound.train.from_config import train_adapters
from recfound.train.plots import plot_task_shares, plot_validation_curves

log = logging.getLogger(__name__)


def run_train(cfg: Config, resume: bool = False) -> dict:
    """Train on the accelerator's device(s). Under ``accelerate launch`` / ``torchrun`` every
    process runs this; the main process tracks (MLflow) and writes the reports."""
    if not PartialState().is_main_process:
        train_adapters(cfg, resume)
        return {}
    settings = {"model": cfg.model.model_dump(), "train": cfg.train.model_dump(), "seed": cfg.seed}
    reports = Path(cfg.paths.reports)
    plots = reports / "plots"
    out = Path(cfg.paths.train)
    published = artifacts.publish_unit(unit_manifest(reports, "train"), writer="recfound train")
    with (
        published as unit,
        stage_run(
            cfg.tracking,
            "train",
            settings,
            log_system_metrics=True,
            inputs=task_inputs(cfg, *TRAINING),
        ) as run,
    ):
        trained = train_adapters(
            cfg,
            resume,
            log_metrics=lambda values, step: mlflow.log_metrics(values, step=step),
            swap=False,
        )
        checkpoints = artifacts.partial_path(out)  # complete; swapped in with the reports
        unit.replace_directory(checkpoints, out)
        result, task_kinds = trained.result, trained.task_kinds
        shares = plot_task_shares(
            result.weights_history, task_kinds, unit.path(plots / "train_task_share.png")
        )
        curves = plot_validation_curves(
            result.val_history, task_kinds, unit.path(plots / "train_val_loss.png")
        )
        for figure in (shares, curves):
            mlflow.log_artifact(str(figure), "plots")
        for name in ("last", "best_generative", "best_embedding"):
            if (checkpoints / name).exists():
                mlflow.log_artifacts(str(checkpoints / name), f"checkpoints/{name}")
        metrics = {
            "steps": result.steps,
            "trainable_parameters": trained.trainable_parameters,
            "tokens_per_s": result.tokens_per_s,
            **result.throughput,  # model_tflops_per_s; mfu where the device's peak is known
            "device": result.device,
            "processes": trained.processes,
            "final_val_loss": result.final_val_loss,
            "best_val_loss_ratio": result.best,
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_dict(metrics, "train.json")
        unit.write_json(reports / "train.json", metrics)
        unit.write_json(
            plots / "train_task_share.json",
            [
                {"step": s, "task": t, "probability": w}
                for s, ws in result.weights_history
                for t, w in ws.items()
            ],
        )
        unit.write_json(
            plots / "train_val_loss.json",
            [
                {"step": s, "task": k.split("/")[0], "loss": v}
                for s, vs in result.val_history
                for k, v in vs.items()
                if k.endswith("/loss")
            ],
        )
    log.info(
        "trained %d steps; final validation losses: %s",
        result.steps,
        json.dumps({k: round(v, 3) for k, v in result.final_val_loss.items()}),
    )
    return metrics
