"""The multi-task trainer: S2Sched decides the batch mix, accelerate runs it on CPU or GPUs.

Reads top to bottom: :meth:`Trainer.draw_batch` returns a micro-batch as tensors
(:mod:`recfound.train.batches`), :meth:`Trainer.batch_loss` is the loss of one, :meth:`Trainer.
train_step` runs one micro-batch under ``accelerator.accumulate``, and :meth:`Trainer.train` is
the loop.

Loss. A step holds a generative batch and an embedding batch (as GritLM and RecFound train): the
mean answer-token cross-entropy of the generative samples (plus the closed-set samples' softmax
over their candidates) plus the mean InfoNCE of the embedding blocks (each block's queries against
its positives and ``catalogue_negatives`` catalogue items). The terms live in
:mod:`recfound.train.losses`, which validation uses too: a task's validation loss is the same
term on a fixed batch (an embedding task's with a fixed draw of catalogue negatives).

Processes. ``accelerator.prepare`` wraps the model's forward module (:class:`DecoderStates`) with
DDP or FSDP as the accelerate config says (``accelerate launch`` / ``torchrun``), and the
optimiser. Every forward pass of a step (the generative batch, each block's queries and
documents) goes through that wrapper, so DDP syncs and FSDP gathers the frozen backbone's shards
as usual, however many forward passes the step makes. Each process takes its share of the
micro-batch (:meth:`BatchDrawer.draw`); DDP and FSDP average the processes' gradients, so each
process divides its sums by the *mean per process* of answer tokens and of blocks, which makes the
average the gradient of the global means above.

Speed. On a GPU the optimiser is the fused AdamW, the forward runs under bf16 autocast
(``train.bf16``), the frozen backbone can be held in bf16 (``train.bf16_weights``) and the forward
module compiled (``train.compile``). Every step logs tokens/s and the model FLOP/s from the model's
shape (:class:`recfound.train.throughput.StepFlops`), with MFU where the device's peak is known.

Checkpoints. ``last`` (every ``checkpoint_every`` steps, at the end, and on SIGTERM), and
``best_generative`` / ``best_embedding`` (lowest mean validation-loss ratio of the group), which
the merge step combines. ``resume=True`` continues from ``last`` exactly: weights, optimiser,
sampler, sampling RNG, data positions and step.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, DistributedType
from tqdm.auto import tqdm

from recfound.config import TrainConfig
from recfound.errors import EXIT_INTERRUPTED, StageStopped, UserInputError
from recfound.model.recmodel import RecModel
from recfound.train.batches import BatchDrawer, StepBatch, TaskData
from recfound.train.checkpoint import (
    check_adapter_tensors,
    complete_checkpoint,
    read_checkpoint,
    restore_training_tensors,
    set_torch_rng_state,
    torch_rng_state,
    training_tensors,
    write_checkpoint,
)
from recfound.train.losses import answer_loss, block_infonce, closed_set_loss
from recfound.train.lr_schedule import lr_at
from recfound.train.s2sched import S2Scheduler
from recfound.train.throughput import StepFlops, throughput_metrics

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINTS",
    "NonFiniteLossError",
    "TaskData",
    "Trainer",
    "TrainingInterrupted",
    "TrainResult",
]

CHECKPOINTS = ("last", "best_generative", "best_embedding")
PREFIX = "causal_lm."  # parameter names in DecoderStates: the causal LM's, under this prefix


class TrainingInterrupted(StageStopped):
    """Training stopped on request (SIGTERM); the last checkpoint holds the progress."""

    exit_code = EXIT_INTERRUPTED


class NonFiniteLossError(UserInputError):
    """A training step's loss is NaN or infinite: the run stops before writing a checkpoint, so
    the checkpoints already written (and the previous ``paths.train``) are kept."""


@dataclass
class TrainResult:
    """What the run produced: checkpoints, the final validation losses and the curves."""

    output_dir: Path
    steps: int
    final_val_loss: dict[str, float]
    best: dict[str, float]
    weights_history: list[tuple[int, dict[str, float]]]
    val_history: list[tuple[int, dict[str, float]]]
    tokens_per_s: float
    device: str = "cpu"
    throughput: dict[str, float] = field(default_factory=dict)  # model_tflops_per_s, mfu


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The accelerator of a training run: the process group and strategy (DDP, FSDP) come from
    the launcher's environment (``accelerate launch``, ``torchrun``); bf16 autocast on GPUs when
    ``train.bf16``; accumulation over ``train.grad_accum`` micro-batches."""
    gpu = torch.cuda.is_available()
    return Accelerator(
        cpu=not gpu,
        mixed_precision="bf16" if gpu and config.bf16 else "no",
        gradient_accumulation_steps=config.grad_accum,
    )


def frozen_to_bf16(model: torch.nn.Module) -> None:
    """Hold ``model``'s frozen parameters in bf16 (the trainable ones, and so AdamW's state, stay
    in their dtype): half the backbone's memory, and no cast of its weights in each autocast
    step. Under autocast the matmuls run in bf16 either way."""
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.is_floating_point():
            parameter.data = parameter.data.to(torch.bfloat16)


class Trainer:
    """Trains a :class:`RecModel`'s adapter on several tasks at once."""

    def __init__(
        self,
        rec: RecModel,
        tasks: list[TaskData],
        config: TrainConfig,
        output_dir: str | Path,
        *,
        seed: int,
        log_metrics: Callable[[dict[str, float], int], None] | None = None,
        accelerator: Accelerator | None = None,
        catalogue: pd.DataFrame | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("no task to train on")
        self.rec = rec
        self.tasks = {t.name: t for t in tasks}
        self.config = config
        self.output_dir = Path(output_dir)
        self.spec = spec  # the ModelSpec (as a dict) every checkpoint's adapter_config.json holds
        self.log_metrics = log_metrics or (lambda values, step: None)
        self.accelerator = accelerator or make_accelerator(config)
        self.accelerator.gradient_accumulation_steps = config.grad_accum
        acc = self.accelerator
        has_generative = any(t.kind == "generative" for t in tasks)
        if has_generative and config.batch_size < acc.num_processes:
            raise ValueError(
                f"train.batch_size ({config.batch_size}) is smaller than the number of processes "
                f"({acc.num_processes}): every process needs a generative sample per micro-batch"
            )
        # generative rows of similar length run as separate passes (less padding); never more
        # passes than the fewest rows a process holds, so every process runs as many (FSDP)
        self.length_groups = max(
            1, min(config.length_groups, config.batch_size // acc.num_processes)
        )
        self.task_sampler = S2Scheduler(
            task_kinds={t.name: t.kind for t in tasks},
            data_sizes={t.name: len(t.train) for t in tasks},
            params=config.s2sched,
            strategy=config.strategy,
            task_weights=config.task_weights,
        )
        self.batches = BatchDrawer(
            rec,
            self.tasks,
            self.task_sampler,
            batch_size=config.batch_size,
            blocks=config.embedding_batch_size // config.samples_per_task,
            samples_per_task=config.samples_per_task,
            catalogue_negatives=config.catalogue_negatives,
            catalogue=catalogue,
            seed=seed,
            negatives_grad=config.negatives_grad,
        )
        rec.model.to(acc.device)
        on_gpu = acc.device.type == "cuda"
        if on_gpu and config.bf16_weights:
            if acc.distributed_type == DistributedType.FSDP:  # its flat shards hold one dtype
                log.warning("train.bf16_weights is ignored under FSDP (it shards the weights)")
            else:
                frozen_to_bf16(rec.model)
        trainable = [p for p in rec.states.parameters() if p.requires_grad]
        embedding = rec.model.get_input_embeddings().weight
        self.flops = StepFlops.of(
            rec.model, sum(p.numel() for p in trainable if p is not embedding)
        )
        optimizer = torch.optim.AdamW(
            trainable,
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            **({"fused": True} if on_gpu else {}),
        )
        if config.compile:  # in place: parameter names (and checkpoints) stay as they are
            rec.states.compile()
        rec.states, self.optimizer = acc.prepare(rec.states, optimizer)
        self.module = rec.states
        self.step = 0
        self.best: dict[str, float] = {}
        self.val_history: list[tuple[int, dict[str, float]]] = []
        self.stop_requested = False
        self._val_batches = {
            name: t.valid.sample(
                n=min(config.val_batch_size, len(t.valid)), random_state=seed
            ).reset_index(drop=True)
            for name, t in self.tasks.items()
            if len(t.valid)
        }
        # an embedding task's validation batch as one block with catalogue negatives drawn once
        self._val_blocks = {
            name: self.batches.validation_block(name, records, np.random.default_rng([seed, i]))
            for i, (name, records) in enumerate(sorted(self._val_batches.items()))
            if self.tasks[name].kind == "embedding"
        }
        log.info(
            "training on %s: %d process(es), %s, mixed precision %s",
            acc.device,
            acc.num_processes,
            acc.distributed_type.value,
            acc.mixed_precision,
        )

    # ---- one step ------------------------------------------------------------------------

    def draw_batch(self) -> StepBatch:
        """This process's share of the next micro-batch, as tensors on the training device."""
        return self.batches.draw(self.accelerator.process_index, self.accelerator.num_processes)

    def batch_loss(self, batch: StepBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of this process's share: summed answer-token cross-entropy over the mean number
        of answer tokens per process (``answer_loss: sample``: summed per-sample means over the
        mean number of samples per process), plus summed InfoNCE over the mean number of blocks
        per process. Also the mean loss of each task in the share (for the curves)."""
        device = self.accelerator.device
        total = torch.zeros((), device=device)
        per_task: dict[str, list[float]] = {}
        answer_units = 0.0  # what the answers' summed loss is averaged over
        closed = torch.zeros((), device=device)
        if batch.generative is not None:
            answer = self.rec.answer_tokens(
                batch.generative, batch.generative_tasks, self.length_groups
            )
            generative = answer_loss(answer)
            if self.config.answer_loss == "sample":
                total = generative.per_sample.sum()
                answer_units = float(len(batch.generative_tasks))
            else:
                total = generative.total
                answer_units = float(generative.tokens)
            sample_loss = generative.per_sample.tolist()
            for task, value in zip(batch.generative_tasks, sample_loss, strict=True):
                per_task.setdefault(task, []).append(value)
            closed = closed_set_loss(answer.first, batch.choices)
        infonce = []
        for block in batch.blocks:
            infonce.append(block_infonce(self.rec, block).loss)
            per_task.setdefault(block.task, []).append(float(infonce[-1].detach()))
        counts = torch.tensor(
            [answer_units, float(len(infonce)), float(len(batch.choices))], device=device
        )
        units_per_process, blocks_per_process, choices_per_process = self.accelerator.reduce(
            counts, "mean"
        ).tolist()
        total = total / max(units_per_process, 1.0)
        if batch.choices:
            total = total + self.config.closed_set_weight * closed / max(choices_per_process, 1.0)
        if infonce:
            total = total + torch.stack(infonce).sum() / blocks_per_process
        return total, {t: float(np.mean(v)) for t, v in per_task.items()}

    def batch_flops(self, batch: StepBatch) -> float:
        """Model FLOPs of training on ``batch`` (see :class:`StepFlops`): the head is read at the
        answer positions of the generative samples only."""
        flops = 0.0
        if batch.generative is not None:
            answers = int((batch.generative["labels"] != -100).sum())
            flops += self.flops.sequences(batch.generative["attention_mask"].sum(-1), answers)
        for block in batch.blocks:
            for part in (block.queries, block.documents):
                flops += self.flops.sequences(part["attention_mask"].sum(-1))
        return flops

    def train_step(self, batch: StepBatch) -> tuple[float, dict[str, float]]:
        """Forward and backward of one micro-batch; the optimiser steps (with gradients synced,
        clipped at norm 1) after every ``grad_accum``-th."""
        acc = self.accelerator
        with acc.accumulate(self.module):
            with acc.autocast():
                loss, per_task = self.batch_loss(batch)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.module.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), per_task

    # ---- the loop --------------------------------------------------------------------------

    def train(self, resume: bool = False) -> TrainResult:
        c = self.config
        if resume:
            self.resume()
        previous = signal.signal(signal.SIGTERM, self._request_stop)
        tokens, busy, flops = 0, 0.0, 0.0
        device = self.accelerator.device
        self.module.train()
        main = self.accelerator.is_main_process
        bar = tqdm(total=c.steps, initial=self.step, desc="train", unit="step", disable=not main)
        try:
            while self.step < c.steps:
                if self.task_sampler.due(self.step) or self.step % c.eval_every == 0:
                    self.validate_and_reweight(with_metrics=self.step % c.eval_every == 0)
                lr = lr_at(self.step, c.steps, c.warmup_steps, c.learning_rate)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                start = time.perf_counter()
                loss, per_task = 0.0, {}
                for _ in range(c.grad_accum):
                    batch = self.draw_batch()
                    micro_loss, micro_tasks = self.train_step(batch)
                    loss += micro_loss / c.grad_accum
                    tokens += batch.tokens
                    flops += self.batch_flops(batch)
                    for name, value in micro_tasks.items():
                        per_task.setdefault(name, []).append(value)
                busy += time.perf_counter() - start
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"training loss is {loss} at step {self.step + 1} (tasks "
                        f"{', '.join(sorted(per_task))}); stopped without writing a checkpoint, "
                        f"the earlier ones in {self.output_dir} are kept. Lower "
                        "train.learning_rate or check the model settings (e.g. model.tmole.alpha)"
                    )
                self.step += 1
                metrics = {"train/loss": loss, "lr": lr, "tokens_per_s": tokens / busy}
                metrics.update(throughput_metrics(tokens / busy, flops / max(tokens, 1), device))
                metrics.update({f"train/{n}/loss": float(np.mean(v)) for n, v in per_task.items()})
                metrics.update({f"prob/{n}": w for n, w in self.task_sampler.weights.items()})
                self.log_metrics(metrics, self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                    self.save("last")
                if self.stop_requested:
                    self.save("last")
                    raise TrainingInterrupted(
                        f"stopped at step {self.step}; `recfound train --resume` continues from "
                        f"{self.output_dir / 'last'}"
                    )
            final = self.validate_and_reweight(with_metrics=True, final=True)
            self.save("last")
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
        return TrainResult(
            output_dir=self.output_dir,
            steps=self.step,
            final_val_loss={k: v for k, v in final.items() if k.endswith("/loss")},
            best=dict(self.best),
            weights_history=list(self.task_sampler.history),
            val_history=list(self.val_history),
            tokens_per_s=tokens / max(busy, 1e-9),  # this process's
            device=str(self.accelerator.device),
            throughput=throughput_metrics(tokens / max(busy, 1e-9), flops / max(tokens, 1), device),
        )

    def _request_stop(self, signum: int, frame: object) -> None:
        log.warning("received signal %d: finishing this step and writing a checkpoint", signum)
        self.stop_requested = True

    # ---- validation --------------------------------------------------------------------------

    def validate_and_reweight(self, with_metrics: bool, final: bool = False) -> dict[str, float]:
        """Validate, let S2Sched reweight the tasks when due, keep the best checkpoints, log."""
        val = self.validate(with_metrics)
        self.val_history.append((self.step, val))
        if not final and self.task_sampler.due(self.step):
            self.task_sampler.observe(self.step, {n: val[f"{n}/loss"] for n in self._val_batches})
        self._track_best(val)
        self.log_metrics({f"val/{k}": v for k, v in val.items()}, self.step)
        return val

    @torch.no_grad()
    def validate(self, with_metrics: bool) -> dict[str, float]:
        """Validation loss per task on a fixed batch, plus one cheap metric per task (token
        accuracy, in-batch recall@1), averaged over the processes so that every process's
        sampler sees the same figures.

        The losses are training's terms (:mod:`recfound.train.losses`): a generative task's
        mean answer-token cross-entropy (without the closed-set term, which only some records
        have), an embedding task's InfoNCE against its batch's positives and its fixed
        catalogue negatives."""
        self.module.eval()
        out: dict[str, float] = {}
        for name, records in self._val_batches.items():
            if self.tasks[name].kind == "generative":
                prompts, targets = records["prompt"].tolist(), records["target"].tolist()
                answer = self.rec.answer_tokens(
                    self.rec.encode_with_answers(prompts, targets), name
                )
                generative = answer_loss(answer)
                out[f"{name}/loss"] = float(generative.mean)
                if with_metrics:
                    tokens = generative.tokens.clamp(min=1)
                    out[f"{name}/token_acc"] = float(answer.correct.sum() / tokens)
            else:
                block = block_infonce(self.rec, self._val_blocks[name])
                out[f"{name}/loss"] = float(block.loss)
                if with_metrics:  # in-batch recall@1: the query's positive among the batch's
                    inbatch = block.queries @ block.documents[: len(records)].T
                    labels = torch.arange(len(records), device=inbatch.device)
                    out[f"{name}/inbatch_recall1"] = float(
                        (inbatch.argmax(-1) == labels).float().mean()
                    )
        self.module.train()
        values = torch.tensor(list(out.values()), dtype=torch.float64, device=self.rec.device)
        return dict(zip(out, self.accelerator.reduce(values, "mean").tolist(), strict=True))

    def _track_best(self, val: dict[str, float]) -> None:
        ratios: dict[str, list[float]] = {"generative": [], "embedding": []}
        for name in self._val_batches:
            loss = val[f"{name}/loss"]
            initial = (
                self.task_sampler.initial_loss.get(name) or self.val_history[0][1][f"{name}/loss"]
            )
            ratios[self.tasks[name].kind].append(loss / max(initial, 1e-8))
        for kind, values in ratios.items():
            if not values:
                continue
            score = float(np.mean(values))
            if score < self.best.get(kind, math.inf):
                self.best[kind] = score
                self.save(f"best_{kind}")

    # ---- checkpoints -----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "task_sampler": self.task_sampler.state_dict(),
            "batches": self.batches.state_dict(),
            "torch_rng": torch_rng_state(),
            "best": self.best,
            "val_history": self.val_history,
            "tasks": sorted(self.tasks),
        }

    def save(self, name: str) -> None:
        """Write checkpoint ``name`` (every process takes part: FSDP gathers the shards)."""
        tensors = training_tensors(self.module, self.optimizer.optimizer, PREFIX)
        if self.accelerator.is_main_process:
            write_checkpoint(self.output_dir / name, tensors, self._state(), self.spec)
        self.accelerator.wait_for_everyone()

    def resume(self) -> bool:
        """Continue from ``last`` (repairing a replacement a crash interrupted); says so and
        returns False when there is nothing to resume from."""
        if self.accelerator.is_main_process:  # repair replacements a crash interrupted
            for name in CHECKPOINTS:
                complete_checkpoint(self.output_dir / name)
        self.accelerator.wait_for_everyone()
        directory = complete_checkpoint(self.output_dir / "last")
        if directory is None:
            log.warning(
                "--resume: no checkpoint in %s; training starts from step 0",
                self.output_dir / "last",
            )
            return False
        tensors, state = read_checkpoint(directory)
        if state["tasks"] != sorted(self.tasks):
            raise ValueError(
                f"checkpoint {directory} was trained on tasks {state['tasks']}, "
                f"not {sorted(self.tasks)}; train into another directory or without --resume"
            )
        check_adapter_tensors(self.rec.model, tensors, str(directory))
        restore_training_tensors(self.module, self.optimizer.optimizer, tensors, PREFIX)
        self.step = int(state["step"])
        self.task_sampler.load_state_dict(state["task_sampler"])
        self.batches.load_state_dict(state["batches"])
        set_torch_rng_state(state["torch_rng"])
        self.best = dict(state["best"])
        self.val_history = [(int(s), dict(v)) for s, v in state["val_history"]]
        log.info("resumed from %s at step %d", directory, self.step)
        return True
