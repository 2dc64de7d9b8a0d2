"""The multi-task trainer: S2Sched decides the batch mix, accelerate runs it on CPU or GPUs.

Batches. A step holds a generative batch and an embedding batch (as GritLM and RecFound train):
``batch_size`` generative samples whose tasks come from the generative group's S2Sched
probabilities, and ``embedding_batch_size`` embedding samples in blocks of ``samples_per_task``
samples of one task (tasks from the embedding group's probabilities). Generative samples of all
tasks go through the model together (TMoLE gates are per sample, by task id). Each embedding block
is one InfoNCE: its queries against the block's positives and ``catalogue_negatives`` random
catalogue items embedded in the same pass. The step's loss is the mean answer-token cross-entropy
plus the blocks' mean InfoNCE; the scheduler acts through how many samples each task gets.

Data parallel. With several processes every process draws the same batches (same seed) and takes
its share of the generative samples (every N-th); the embedding blocks are computed whole on
every process, since InfoNCE needs all of a block's samples (see ``batch_loss``). Gradients are
averaged with an all-reduce before the optimiser step, which is what DDP does, without DDP's
restriction to one forward per backward (InfoNCE needs two).

Checkpoints. ``last`` (every ``checkpoint_every`` steps, at the end, and on SIGTERM), and
``best_generative`` / ``best_embedding`` (lowest mean validation-loss ratio of the group), which
the merge step combines. ``resume=True`` continues from ``last`` exactly: weights, optimiser,
scheduler, sampling RNG, data positions and step.
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
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from recfound.model.recmodel import RecModel
from recfound.train.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    set_torch_rng_state,
    torch_rng_state,
)
from recfound.train.pretrain import lr_at
from recfound.train.s2sched import S2SchedParams, S2Scheduler, Strategy

log = logging.getLogger(__name__)

CHECKPOINTS = ("last", "best_generative", "best_embedding")


class TrainingInterrupted(RuntimeError):
    """Training stopped on request (SIGTERM); the last checkpoint holds the progress."""


@dataclass(frozen=True)
class TrainParams:
    """Settings of one training run (``train`` in params.yaml)."""

    steps: int = 200
    batch_size: int = 16
    embedding_batch_size: int = 32
    samples_per_task: int = 4
    catalogue_negatives: int = 64
    grad_accum: int = 1
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    eval_every: int = 20
    val_batch_size: int = 16
    checkpoint_every: int = 50
    strategy: Strategy = "s2sched"
    s2sched: S2SchedParams = field(default_factory=S2SchedParams)
    bf16: bool = False
    seed: int = 42


@dataclass
class TaskData:
    """One task's training and validation records (TaskRecord columns)."""

    name: str
    kind: str
    train: pd.DataFrame
    valid: pd.DataFrame


@dataclass
class TaskStream:
    """Endless seeded passes over one task's training records."""

    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        order = self._order()
        while len(out) < n:
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            out.append(int(order[self.position]))
            self.position += 1
        return out


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


class Trainer:
    """Trains a :class:`RecModel`'s adapter on several tasks at once."""

    def __init__(
        self,
        rec: RecModel,
        tasks: list[TaskData],
        params: TrainParams,
        output_dir: str | Path,
        log_metrics: Callable[[dict[str, float], int], None] | None = None,
        accelerator: Accelerator | None = None,
        catalogue: pd.DataFrame | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("no task to train on")
        # the item catalogue (item_id, text): every item is a negative of every embedding query
        self.catalogue_texts = [] if catalogue is None else catalogue["text"].astype(str).tolist()
        self.catalogue_index = (
            {} if catalogue is None else {str(i): n for n, i in enumerate(catalogue["item_id"])}
        )

        self.rec = rec
        self.tasks = {t.name: t for t in tasks}
        self.params = params
        self.output_dir = Path(output_dir)
        self.log_metrics = log_metrics or (lambda values, step: None)
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision="bf16" if params.bf16 else "no"
        )
        self.rec.model.to(self.accelerator.device)
        self.trainable = [p for p in rec.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=params.learning_rate, weight_decay=params.weight_decay
        )
        self.scheduler = S2Scheduler(
            task_kinds={t.name: t.kind for t in tasks},
            data_sizes={t.name: len(t.train) for t in tasks},
            params=params.s2sched,
            strategy=params.strategy,
        )
        self.streams = {
            t.name: TaskStream(len(t.train), seed=params.seed * 1000 + i)
            for i, t in enumerate(sorted(tasks, key=lambda t: t.name))
        }
        self.rng = np.random.default_rng(params.seed)
        self.step = 0
        self.best: dict[str, float] = {}
        self.val_history: list[tuple[int, dict[str, float]]] = []
        self.stop_requested = False
        self._val_batches = {
            name: t.valid.sample(
                n=min(params.val_batch_size, len(t.valid)), random_state=params.seed
            ).reset_index(drop=True)
            for name, t in self.tasks.items()
            if len(t.valid)
        }

    # ---- losses ----------------------------------------------------------------------------

    def _all_sum(self, value: float) -> float:
        if self.accelerator.num_processes == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item())

    def draw_batch(self) -> tuple[list[tuple[str, pd.Series]], list[tuple[list, list[int]]]]:
        """One step's data: ``batch_size`` generative (task, record) pairs, and the embedding
        batch as blocks of ``samples_per_task`` records of one task each, each block with
        ``catalogue_negatives`` random catalogue rows as extra negatives.

        Each group is drawn from its own S2Sched probabilities; every process draws the same
        lists (same seed), so data parallel needs no communication here.
        """
        p = self.params
        generative = self.scheduler.allocate(p.batch_size, self.rng, "generative")
        blocks = self.scheduler.allocate(
            p.embedding_batch_size // p.samples_per_task, self.rng, "embedding"
        )
        names = generative + [name for name in blocks for _ in range(p.samples_per_task)]
        counts = {n: names.count(n) for n in set(names)}
        picked = {n: self.streams[n].take(c) for n, c in sorted(counts.items())}

        def row(name: str) -> tuple[str, pd.Series]:
            return name, self.tasks[name].train.iloc[picked[name].pop(0)]

        gen_rows = [row(name) for name in generative]
        emb_blocks = [[row(name) for _ in range(p.samples_per_task)] for name in blocks]
        negatives = [self._draw_negatives() for _ in blocks]
        return gen_rows, list(zip(emb_blocks, negatives, strict=True))

    def _draw_negatives(self) -> list[int]:
        """Catalogue rows drawn uniformly (without replacement) as one block's extra negatives."""
        n = min(self.params.catalogue_negatives, len(self.catalogue_texts))
        if n <= 0:
            return []
        return sorted(self.rng.choice(len(self.catalogue_texts), size=n, replace=False).tolist())

    def batch_loss(
        self,
        gen_rows: list[tuple[str, pd.Series]],
        emb_blocks: list[tuple[list[tuple[str, pd.Series]], list[int]]],
    ) -> tuple[torch.Tensor, dict]:
        """This process's share of one step's loss: answer-token cross-entropy of the generative
        batch plus the mean InfoNCE of the embedding blocks (GritLM's sum of the two).

        With N processes, process r takes generative samples r, r+N, r+2N, …, scaled so that the
        average of the processes' gradients is the gradient of the mean over all answer tokens.
        The embedding blocks are computed whole on every process (InfoNCE needs all of a block's
        samples and negatives), so their average gradient is exact too.
        """
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        total = torch.zeros((), device=self.accelerator.device)
        per_task: dict[str, list[float]] = {}
        tokens = 0
        gen = gen_rows[rank::world]
        if gen_rows:
            local_tokens = 0.0
            if gen:
                batch = self.rec.encode_with_answers(
                    [r.prompt for _, r in gen], [r.target for _, r in gen]
                )
                picked, mask = self.rec.logprobs_of(batch, [t for t, _ in gen])
                local_tokens = float(mask.sum())
                tokens += int(batch["attention_mask"].sum())
            global_tokens = self._all_sum(local_tokens)
            if gen:
                total = total - picked.sum() * world / max(global_tokens, 1.0)
                sample_loss = (-(picked.sum(-1)) / mask.sum(-1).clamp(min=1)).detach()
                for i, (task, _) in enumerate(gen):
                    per_task.setdefault(task, []).append(float(sample_loss[i]))
        for block, negatives in emb_blocks:
            task, records = block[0][0], [r for _, r in block]
            loss = self.rec.contrastive_loss(
                [r.prompt for r in records],
                [r.target for r in records],
                task,
                negatives=[self.catalogue_texts[i] for i in negatives],
                exclude=self._negatives_exclude(records, negatives),
                in_batch_exclude=self._in_batch_exclude(records),
            )
            total = total + loss / len(emb_blocks)
            per_task.setdefault(task, []).append(float(loss.detach()))
            tokens += self.rec.count_tokens(
                [r.prompt for r in records] + [r.target for r in records]
            )
        return total, {
            "per_task": {t: float(np.mean(v)) for t, v in per_task.items()},
            "tokens": tokens,
        }

    # ---- negatives beyond the batch ----------------------------------------------------------

    def _items_of(self, record: pd.Series) -> tuple[int | None, list[int]]:
        """Catalogue rows of a record's positive item and of the items the query already shows."""
        index = self.catalogue_index
        history = [index[h] for h in record.get("history_ids", []) if h in index]
        return index.get(str(record.get("item_id", ""))), history

    def _negatives_exclude(self, records: list[pd.Series], negatives: list[int]) -> torch.Tensor:
        """``(B, len(negatives))``: a drawn catalogue item that is some query's positive is in the
        batch already, and one a query already shows (its history) is no negative of it.

        Catalogue-wide negatives are what full-ranking evaluation contrasts a query with. They
        are drawn afresh each step and embedded with the current weights: a stale memory bank
        lets fresh queries and positives drift away from it together, and the embeddings
        collapse while the loss falls (seen here: cosine 0.998 between any two texts).
        """
        column = {item: j for j, item in enumerate(negatives)}
        exclude = torch.zeros((len(records), len(negatives)), dtype=torch.bool)
        for row, record in enumerate(records):
            positive, history = self._items_of(record)
            for item in history:
                if item in column:
                    exclude[row, column[item]] = True
            if positive in column:
                exclude[:, column[positive]] = True
        return exclude.to(self.accelerator.device)

    def _in_batch_exclude(self, records: list[pd.Series]) -> torch.Tensor:
        """``(B, B)``: another query's positive that this query already shows (its history) or
        that is the same item as this query's positive is not a negative of it."""
        items = [self._items_of(r) for r in records]
        exclude = torch.zeros((len(records), len(records)), dtype=torch.bool)
        for i, (positive, history) in enumerate(items):
            for j, (other, _) in enumerate(items):
                if i != j and other is not None and (other == positive or other in history):
                    exclude[i, j] = True
        return exclude.to(self.accelerator.device)

    @torch.no_grad()
    def validate(self, with_metrics: bool) -> dict[str, float]:
        """Validation loss per task on a fixed batch, plus one cheap metric per task."""
        self.rec.model.eval()
        out: dict[str, float] = {}
        for name, batch in self._val_batches.items():
            prompts, targets = batch["prompt"].tolist(), batch["target"].tolist()
            if self.tasks[name].kind == "generative":
                picked, mask = self.rec.answer_token_logprobs(prompts, targets, name)
                out[f"{name}/loss"] = float(-(picked.sum() / mask.sum().clamp(min=1)))
                if with_metrics:  # share of answers whose first token is predicted right
                    out[f"{name}/first_token_acc"] = self._first_token_accuracy(
                        prompts, targets, name
                    )
            else:
                q = self.rec.embed_batch(prompts, name)
                d = self.rec.embed_batch(targets, name)
                logits = q @ d.T / self.rec.temperature
                labels = torch.arange(len(prompts), device=logits.device)
                out[f"{name}/loss"] = float(F.cross_entropy(logits, labels))
                if with_metrics:  # in-batch recall@1
                    out[f"{name}/inbatch_recall1"] = float(
                        (logits.argmax(-1) == labels).float().mean()
                    )
        self.rec.model.train()
        return out

    def _first_token_accuracy(self, prompts: list[str], targets: list[str], task: str) -> float:
        batch = self.rec.encode_with_answers(prompts, targets)
        with self.rec.adapter.task([task] * len(prompts)):
            logits = self.rec.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        labels = batch["labels"]
        first = (labels != -100).float().argmax(-1)  # first answer position
        rows = torch.arange(len(prompts), device=labels.device)
        predicted = logits[rows, first - 1].argmax(-1)
        return float((predicted == labels[rows, first]).float().mean())

    # ---- checkpoints -----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.bit_generator.state,
            "streams": {k: [s.epoch, s.position] for k, s in self.streams.items()},
            "torch_rng": torch_rng_state(),
            "best": self.best,
            "val_history": self.val_history,
            "tasks": sorted(self.tasks),
        }

    def save(self, name: str) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(self.output_dir / name, self.rec.model, self.optimizer, self._state())
        self.accelerator.wait_for_everyone()

    def resume(self) -> bool:
        """Continue from ``last`` if it exists; returns whether it did."""
        directory = self.output_dir / "last"
        if not directory.exists():
            return False
        state = load_checkpoint(directory, self.rec.model, self.optimizer)
        if state["tasks"] != sorted(self.tasks):
            raise ValueError(
                f"checkpoint {directory} was trained on tasks {state['tasks']}, "
                f"not {sorted(self.tasks)}; train into another directory or without --resume"
            )
        self.step = int(state["step"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["rng"]
        for name, (epoch, position) in state["streams"].items():
            self.streams[name].epoch, self.streams[name].position = epoch, position
        set_torch_rng_state(state["torch_rng"])
        self.best = dict(state["best"])
        self.val_history = [(int(s), dict(v)) for s, v in state["val_history"]]
        log.info("resumed from %s at step %d", directory, self.step)
        return True

    def _track_best(self, val: dict[str, float]) -> None:
        ratios: dict[str, list[float]] = {"generative": [], "embedding": []}
        for name in self._val_batches:
            loss = val[f"{name}/loss"]
            initial = (
                self.scheduler.initial_loss.get(name) or self.val_history[0][1][f"{name}/loss"]
            )
            ratios[self.tasks[name].kind].append(loss / max(initial, 1e-8))
        for kind, values in ratios.items():
            if not values:
                continue
            score = float(np.mean(values))
            if score < self.best.get(kind, math.inf):
                self.best[kind] = score
                self.save(f"best_{kind}")

    # ---- the loop --------------------------------------------------------------------------

    def _request_stop(self, signum: int, frame: object) -> None:
        log.warning("received signal %d: finishing this step and writing a checkpoint", signum)
        self.stop_requested = True

    def _average_gradients(self) -> None:
        if self.accelerator.num_processes == 1:
            return
        for param in self.trainable:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
            param.grad /= self.accelerator.num_processes

    def train(self, resume: bool = False) -> TrainResult:
        p = self.params
        if resume:
            self.resume()
        previous = signal.signal(signal.SIGTERM, self._request_stop)
        tokens, busy = 0, 0.0
        self.rec.model.train()
        bar = tqdm(
            total=p.steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.accelerator.is_main_process,
            mininterval=2.0,
        )
        try:
            while self.step < p.steps:
                step = self.step
                if self.scheduler.due(step) or step % p.eval_every == 0:
                    val = self.validate(with_metrics=step % p.eval_every == 0)
                    self.val_history.append((step, val))
                    if self.scheduler.due(step):
                        self.scheduler.observe(
                            step, {n: val[f"{n}/loss"] for n in self._val_batches}
                        )
                    self._track_best(val)
                    self.log_metrics({f"val/{k}": v for k, v in val.items()}, step)
                lr = lr_at(step, p.steps, p.warmup_steps, p.learning_rate)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                start = time.perf_counter()
                per_task: dict[str, list[float]] = {}
                loss_sum = 0.0
                for _ in range(p.grad_accum):
                    gen_rows, emb_blocks = self.draw_batch()
                    with self.accelerator.autocast():
                        loss, info = self.batch_loss(gen_rows, emb_blocks)
                    if loss.requires_grad:  # a process may get no sample of this micro-batch
                        (loss / p.grad_accum).backward()
                    loss_sum += float(loss.detach()) / p.grad_accum
                    tokens += info["tokens"]
                    for name, value in info["per_task"].items():
                        per_task.setdefault(name, []).append(value)
                self._average_gradients()
                torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                busy += time.perf_counter() - start
                self.step += 1
                metrics = {"train/loss": loss_sum, "lr": lr, "tokens_per_s": tokens / busy}
                metrics.update({f"train/{n}/loss": float(np.mean(v)) for n, v in per_task.items()})
                metrics.update({f"prob/{n}": w for n, w in self.scheduler.weights.items()})
                self.log_metrics(metrics, self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
                if self.step % p.checkpoint_every == 0 or self.step == p.steps:
                    self.save("last")
                if self.stop_requested:
                    self.save("last")
                    raise TrainingInterrupted(
                        f"stopped at step {self.step}; `recfound train --resume` continues from "
                        f"{self.output_dir / 'last'}"
                    )
            final = self.validate(with_metrics=True)
            self.val_history.append((self.step, final))
            self._track_best(final)
            self.log_metrics({f"val/{k}": v for k, v in final.items()}, self.step)
            self.save("last")
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
        return TrainResult(
            output_dir=self.output_dir,
            steps=self.step,
            final_val_loss={k: v for k, v in final.items() if k.endswith("/loss")},
            best=dict(self.best),
            weights_history=list(self.scheduler.history),
            val_history=list(self.val_history),
            tokens_per_s=tokens / max(busy, 1e-9),
        )
