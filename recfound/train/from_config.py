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
from recfound.model.bundle import ModelSpec, build_from_spec, write_spec
from recfound.model.recmodel import RecModel
from recfound.train.s2sched import check_task_weights
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


@dataclass(frozen=True)
class CutRecords:
    """Records of one task whose model input is longer than ``model.max_length`` tokens."""

    task: str
    cut: int
    total: int
    needed: int  # the model.max_length that keeps every record of the task whole


def _token_counts(tokenizer, texts: list[str], **kwargs) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, **kwargs)["input_ids"]] if texts else []


def count_cut_records(tokenizer, tasks: list[TaskData], max_length: int) -> list[CutRecords]:
    """Per task, how many training and validation records the model reads cut short.

    A generative record is ``prompt + " " + answer + EOS``: its answer is cut at
    ``max_length // 2`` tokens and its prompt from the left to fit ``max_length``; an embedding
    record's prompt and its document are each cut at ``max_length`` (see
    :func:`recfound.model.recmodel.answer_rows` and ``RecModel.encode_texts``). A record whose
    UTF-8 bytes fit is not tokenized: a byte-level BPE token covers at least one byte, and a
    tokenizer adds at most a few tokens of its own (``slack``)."""
    slack = 4 + tokenizer.num_special_tokens_to_add()
    counts = []
    for task in tasks:
        records = pd.concat([task.train, task.valid], ignore_index=True)
        prompts = records["prompt"].astype(str).tolist()
        targets = records["target"].astype(str).tolist()
        maybe = [
            i
            for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
            if len(p.encode()) + len(t.encode()) + 2 * slack > max_length
            or len(t.encode()) + slack > max_length // 2
        ]
        prompt_tokens = _token_counts(tokenizer, [prompts[i] for i in maybe])
        if task.kind == "generative":
            answers = _token_counts(
                tokenizer, [" " + targets[i] for i in maybe], add_special_tokens=False
            )
            # the answer gets at most half of max_length: it needs twice its length
            needed = [
                max(p + a + 1, 2 * (a + 1)) for p, a in zip(prompt_tokens, answers, strict=True)
            ]
        else:
            documents = _token_counts(tokenizer, [targets[i] for i in maybe])
            needed = [max(p, d) for p, d in zip(prompt_tokens, documents, strict=True)]
        cut = sum(n > max_length for n in needed)
        counts.append(CutRecords(task.name, cut, len(records), max(needed, default=0)))
    return counts


def warn_cut_records(tokenizer, tasks: list[TaskData], max_length: int) -> list[CutRecords]:
    """Log a warning naming ``model.max_length`` when it cuts any record (the count per task);
    the counts of the tasks that have cut records."""
    counts = count_cut_records(tokenizer, tasks, max_length)
    cut = [c for c in counts if c.cut]
    if cut:
        log.warning(
            "model.max_length (%d tokens) is too short for %d of %d training/validation "
            "records: the model reads them cut short (prompts from the left, answers at half of "
            "it). Per task: %s. Set model.max_length to %d to keep every record whole",
            max_length,
            sum(c.cut for c in cut),
            sum(c.total for c in counts),
            ", ".join(f"{c.task} {c.cut}/{c.total}" for c in cut),
            max(c.needed for c in cut),
        )
    return cut


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
    swap: bool = True,
) -> TrainedAdapters:
    """Build the adapted model from ``cfg``, train it on every task, and swap the checkpoints into
    ``paths.train`` (see the module docstring). With ``swap=False`` the complete checkpoints stay
    in :func:`recfound.artifacts.partial_path` for the caller to swap in with its other outputs
    (the train stage publishes them with its reports as one unit)."""
    check_backbone_setting(cfg.model.backbone)  # not silently the backbone already built
    tasks = load_training_tasks(cfg)
    check_task_weights(cfg.train.task_weights, (t.name for t in tasks))
    task_kinds = {t.name: t.kind for t in tasks}
    rec = build_model_for(cfg, task_kinds)
    accelerator = make_accelerator(cfg.train)
    out = training_directory(cfg, resume)
    trainable = sum(p.numel() for p in rec.model.parameters() if p.requires_grad)
    if accelerator.is_main_process:
        warn_cut_records(rec.tokenizer, tasks, cfg.model.max_length)
        write_spec(out, model_spec(cfg, task_kinds))
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
        spec=model_spec(cfg, task_kinds).to_dict(),
    )
    result = trainer.train(resume=resume)
    accelerator.wait_for_everyone()  # every process has written its last checkpoint
    if accelerator.is_main_process and swap:
        artifacts.replace_directory(out, cfg.paths.train)
    return TrainedAdapters(result, task_kinds, trainable, accelerator.num_processes)
