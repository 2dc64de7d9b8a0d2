"""Adapter training from the validated config: what `recfound train` and the ablation's variants
share (the model spec, the task data, where checkpoints are written, the training run itself).

:func:`train_adapters` trains in a partial directory swapped in for ``paths.train`` at the end, so
a failed or killed run keeps the previous ``paths.train`` (DVC persists it) and ``--resume``
continues the partial one. Under ``accelerate launch`` / ``torchrun`` every process calls it; only
the main process swaps the directory. Tracking (MLflow) stays with the callers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from accelerate import PartialState

from recfound import artifacts
from recfound.config import Config
from recfound.data.datasets import TaskDataError, read_task_frames, task_kind
from recfound.model.backbone import check_backbone_setting, load_backbone
from recfound.model.build import AdapterSpec
from recfound.model.bundle import SPEC_FILE, ModelSpec, build_from_spec
from recfound.model.recmodel import RecModel
from recfound.train.trainer import TaskData, Trainer, TrainResult, make_accelerator

log = logging.getLogger(__name__)


def adapter_spec(cfg: Config) -> AdapterSpec:
    m = cfg.model
    if m.adapter == "option":  # its settings name the layers of its small adapters
        return AdapterSpec(m.option)
    return AdapterSpec(getattr(m, m.adapter), tuple(m.target_modules))


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


@dataclass
class TrainedAdapters:
    """What one training run produced (``paths.train`` holds its checkpoints)."""

    result: TrainResult
    task_kinds: dict[str, str]
    trainable_parameters: int
    processes: int


def train_adapters(
    cfg: Config,
    resume: bool = False,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
) -> TrainedAdapters:
    """Build the adapted model from ``cfg``, train it on every task, and swap the checkpoints into
    ``paths.train`` (see the module docstring)."""
    check_backbone_setting(cfg.model.backbone)  # not silently the backbone already built
    tasks = load_training_tasks(cfg)
    task_kinds = {t.name: t.kind for t in tasks}
    rec = build_model_for(cfg, task_kinds)
    accelerator = make_accelerator(cfg.train)
    out = training_directory(cfg, resume)
    trainable = sum(p.numel() for p in rec.model.parameters() if p.requires_grad)
    if accelerator.is_main_process:
        artifacts.write_json(out / SPEC_FILE, model_spec(cfg, task_kinds).to_dict())
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
    trainer = Trainer(
        rec,
        tasks,
        cfg.train,
        out,
        seed=cfg.seed,
        log_metrics=log_metrics if accelerator.is_main_process else None,
        accelerator=accelerator,
        catalogue=read_catalogue(cfg),
    )
    result = trainer.train(resume=resume)
    accelerator.wait_for_everyone()  # every process has written its last checkpoint
    if accelerator.is_main_process:
        artifacts.replace_directory(out, cfg.paths.train)
    return TrainedAdapters(result, task_kinds, trainable, accelerator.num_processes)
