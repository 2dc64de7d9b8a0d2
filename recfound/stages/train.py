"""Stage `train`: TMoLE (or LoRA) adapters on every task at once, S2Sched sampling, checkpoints.

Reads the task datasets and the backbone, trains, and writes ``paths.train``:
``last/``, ``best_generative/``, ``best_embedding/`` checkpoints and ``model_spec.json`` (what the
merge step needs to rebuild the model around the backbone); metrics
to ``reports/train.json``; plots (task shares, validation curves) to ``reports/plots/`` and MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
from accelerate import PartialState

from recfound import artifacts
from recfound.config import Config
from recfound.data.datasets import TaskDataError, read_task_frames, task_kind
from recfound.model.backbone import check_backbone_setting, load_backbone
from recfound.model.build import AdapterSpec
from recfound.model.bundle import SPEC_FILE, ModelSpec, build_from_spec
from recfound.model.recmodel import RecModel
from recfound.tracking.runs import TRAINING, stage_run, task_inputs
from recfound.train.plots import plot_task_shares, plot_validation_curves
from recfound.train.trainer import TaskData, Trainer, make_accelerator

log = logging.getLogger(__name__)


def adapter_spec(cfg: Config) -> AdapterSpec:
    m = cfg.model
    if m.adapter == "lora":
        return AdapterSpec(
            "lora", tuple(m.target_modules), m.lora.rank, m.lora.alpha, m.lora.dropout
        )
    if m.adapter == "option":
        o = m.option
        return AdapterSpec(
            "option",
            tuple(o.adapter_modules),
            o.adapter_rank,
            o.adapter_alpha,
            prompt_length=o.prompt_length,
            deep_prompts=o.deep,
        )
    t = m.tmole
    return AdapterSpec(
        "tmole",
        tuple(m.target_modules),
        t.rank,
        t.alpha,
        t.dropout,
        t.num_embedding_experts,
        t.num_shared_experts,
        t.num_generative_experts,
        t.task_embedding_dim,
        t.top_k,
        t.gate_temperature,
    )


def load_training_tasks(cfg: Config) -> list[TaskData]:
    frames = read_task_frames(cfg.paths.tasks, splits=("train", "valid"))
    tasks = []
    for name, splits in frames.items():
        if len(splits["train"]) == 0:
            log.warning("task %s has no training records; not trained", name)
            continue
        tasks.append(TaskData(name, task_kind(splits), splits["train"], splits["valid"]))
    return tasks


def read_catalogue(cfg: Config) -> pd.DataFrame:
    """The item catalogue (item_id, text, token) that build_tasks wrote."""
    path = Path(cfg.paths.tasks) / "items.parquet"
    if not path.is_file():
        raise TaskDataError(f"{path} is missing: run `recfound build-tasks` first")
    return pd.read_parquet(path)


def model_spec(cfg: Config, task_kinds: dict[str, str]) -> ModelSpec:
    m = cfg.model
    return ModelSpec(
        adapter=adapter_spec(cfg),
        task_kinds=dict(sorted(task_kinds.items())),
        seed=cfg.seed,
        pooling=m.pooling,
        embedding_attention=m.embedding_attention,
        max_length=m.max_length,
        temperature=m.infonce_temperature,
    )


def build_model_for(cfg: Config, task_kinds: dict[str, str]) -> RecModel:
    base, tokenizer = load_backbone(cfg.paths.backbone)
    return build_from_spec(base, tokenizer, model_spec(cfg, task_kinds))


def training_directory(cfg: Config, resume: bool) -> Path:
    """Where the run writes its checkpoints: a partial directory swapped in for paths.train at
    the end, so a failed or killed run keeps the previous paths.train (DVC persists it) and
    ``--resume`` continues the partial one. Under ``accelerate launch`` the main process
    prepares it while the others wait."""
    processes = PartialState()
    if processes.is_main_process:
        artifacts.partial_directory(cfg.paths.train, resume=resume)
    processes.wait_for_everyone()
    return artifacts.partial_path(cfg.paths.train)


def run_train(cfg: Config, resume: bool = False) -> dict:
    """Train on the accelerator's device(s). Under ``accelerate launch`` / ``torchrun`` every
    process runs this; the main process tracks (MLflow) and writes the reports (checkpoints go to
    :func:`training_directory`)."""
    check_backbone_setting(cfg.model.backbone)  # not silently the backbone already built
    tasks = load_training_tasks(cfg)
    task_kinds = {t.name: t.kind for t in tasks}
    rec = build_model_for(cfg, task_kinds)
    accelerator = make_accelerator(cfg.train)
    out = training_directory(cfg, resume)
    catalogue = read_catalogue(cfg)
    if not accelerator.is_main_process:
        Trainer(
            rec, tasks, cfg.train, out, seed=cfg.seed, accelerator=accelerator, catalogue=catalogue
        ).train(resume=resume)
        accelerator.wait_for_everyone()  # the main process swaps the directory after this
        return {}
    artifacts.write_json(out / SPEC_FILE, model_spec(cfg, task_kinds).to_dict())
    trainable = sum(p.numel() for p in rec.model.parameters() if p.requires_grad)
    log.info(
        "training a %s adapter (%d trainable parameters) on %d tasks for %d steps on %s "
        "(%d process(es))",
        cfg.model.adapter,
        trainable,
        len(tasks),
        cfg.train.steps,
        accelerator.device,
        accelerator.num_processes,
    )
    settings = {"model": cfg.model.model_dump(), "train": cfg.train.model_dump(), "seed": cfg.seed}
    with stage_run(
        cfg.tracking, "train", settings, log_system_metrics=True, inputs=task_inputs(cfg, *TRAINING)
    ) as run:
        trainer = Trainer(
            rec,
            tasks,
            cfg.train,
            out,
            seed=cfg.seed,
            log_metrics=lambda values, step: mlflow.log_metrics(values, step=step),
            accelerator=accelerator,
            catalogue=catalogue,
        )
        result = trainer.train(resume=resume)
        plots = Path(cfg.paths.reports) / "plots"
        shares = plot_task_shares(
            result.weights_history, task_kinds, plots / "train_task_share.png"
        )
        curves = plot_validation_curves(
            result.val_history, task_kinds, plots / "train_val_loss.png"
        )
        for figure in (shares, curves):
            mlflow.log_artifact(str(figure), "plots")
        for name in ("last", "best_generative", "best_embedding"):
            if (out / name).exists():
                mlflow.log_artifacts(str(out / name), f"checkpoints/{name}")
        metrics = {
            "steps": result.steps,
            "trainable_parameters": trainable,
            "tokens_per_s": result.tokens_per_s,
            "device": result.device,
            "processes": accelerator.num_processes,
            "final_val_loss": result.final_val_loss,
            "best_val_loss_ratio": result.best,
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_dict(metrics, "train.json")
    accelerator.wait_for_everyone()  # every process has written its last checkpoint
    artifacts.replace_directory(out, cfg.paths.train)
    artifacts.write_json(Path(cfg.paths.reports) / "train.json", metrics)
    artifacts.write_json(
        plots / "train_task_share.json",
        [
            {"step": s, "task": t, "probability": w}
            for s, ws in result.weights_history
            for t, w in ws.items()
        ],
    )
    artifacts.write_json(
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
