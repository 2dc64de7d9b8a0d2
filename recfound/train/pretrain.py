"""Causal-LM pretraining of the builtin backbone on the corpus text (CPU-friendly, minutes).

The corpus is tokenized once, concatenated with EOS between texts and cut into blocks of
``seq_len`` tokens; a seeded share of the blocks is held out to measure the LM loss before and
after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm


@dataclass
class PretrainResult:
    """What pretraining did: held-out loss before/after, the curve and the speed."""

    heldout_loss_before: float
    heldout_loss_after: float
    steps: int
    tokens_per_s: float
    train_losses: list[float] = field(default_factory=list)
    heldout_curve: list[tuple[int, float]] = field(default_factory=list)
    num_train_blocks: int = 0
    num_heldout_blocks: int = 0


def pack_blocks(token_lists: list[list[int]], eos_id: int, seq_len: int) -> torch.Tensor:
    """Concatenate token lists (EOS-separated) and cut into ``(n_blocks, seq_len)``."""
    flat: list[int] = []
    for ids in token_lists:
        flat.extend(ids)
        flat.append(eos_id)
    n_blocks = len(flat) // seq_len
    if n_blocks == 0:
        raise ValueError(f"the corpus has {len(flat)} tokens, fewer than one block of {seq_len}")
    return torch.tensor(flat[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def split_blocks(
    blocks: torch.Tensor, heldout_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of blocks into (train, held-out); at least one block each."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=generator)
    n_heldout = min(max(1, round(len(blocks) * heldout_fraction)), len(blocks) - 1)
    return blocks[order[n_heldout:]], blocks[order[:n_heldout]]


@torch.no_grad()
def lm_loss(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy over ``blocks`` (token-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size]
        out = model(input_ids=batch, labels=batch)
        n = batch.numel() - len(batch)
        total += float(out.loss) * n
        count += n
    return total / max(count, 1)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pretrain_causal_lm(
    model: torch.nn.Module,
    train_blocks: torch.Tensor,
    heldout_blocks: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    eval_every: int,
    seed: int,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
) -> PretrainResult:
    """Train ``model`` with next-token loss for ``steps`` batches of random train blocks."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=weight_decay, betas=(0.9, 0.95)
    )
    before = lm_loss(model, heldout_blocks, batch_size)
    result = PretrainResult(
        heldout_loss_before=before,
        heldout_loss_after=before,
        steps=steps,
        tokens_per_s=0.0,
        heldout_curve=[(0, before)],
        num_train_blocks=len(train_blocks),
        num_heldout_blocks=len(heldout_blocks),
    )
    if log_metrics:
        log_metrics({"heldout_loss": before}, 0)
    tokens, train_time = 0, 0.0
    bar = tqdm(range(steps), desc="pretrain", unit="step", dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        model.train()
        lr = lr_at(step, steps, warmup_steps, learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(len(train_blocks), (batch_size,), generator=generator)
        batch = train_blocks[index]
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        train_time += time.perf_counter() - start
        tokens += batch.numel()
        loss_value = loss.item()
        result.train_losses.append(loss_value)
        metrics = {"train_loss": loss_value, "lr": lr, "tokens_per_s": tokens / train_time}
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            heldout = lm_loss(model, heldout_blocks, batch_size)
            result.heldout_curve.append((step + 1, heldout))
            metrics["heldout_loss"] = heldout
            bar.set_postfix(loss=f"{loss_value:.3f}", heldout=f"{heldout:.3f}")
        if log_metrics:
            log_metrics(metrics, step + 1)
    result.heldout_loss_after = result.heldout_curve[-1][1]
    result.tokens_per_s = tokens / max(train_time, 1e-9)
    return result
