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

import numpy as np
import torch
from tqdm.auto import tqdm

from recfound.metrics import ndcg_at_k, rank_of_targets, recall_at_k
from recfound.train.lr_schedule import lr_at


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
    behaviour_curve: list[tuple[int, float]] = field(default_factory=list)
    # (step, training seconds so far, held-out figures and probe metrics) at every evaluation
    probe_curve: list[tuple[int, float, dict[str, float]]] = field(default_factory=list)
    kept_step: int = 0  # the step whose weights were kept (the last, or the best by the probe)
    kept_metrics: dict[str, float] = field(default_factory=dict)


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


def pad_rows(token_lists: list[list[int]], pad_id: int, seq_len: int) -> torch.Tensor:
    """``(len(token_lists), seq_len)`` rows, each list cut to ``seq_len`` and right-padded."""
    rows = torch.full((len(token_lists), seq_len), pad_id, dtype=torch.long)
    for i, ids in enumerate(token_lists):
        ids = ids[:seq_len]
        rows[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return rows


def lm_batch(rows: torch.Tensor, pad_id: int | None) -> dict[str, torch.Tensor]:
    """Inputs, attention mask and labels of a batch of rows; padding is neither attended nor
    predicted (``pad_id`` None: packed blocks without padding)."""
    if pad_id is None:
        return {"input_ids": rows, "labels": rows}
    mask = rows != pad_id
    return {
        "input_ids": rows,
        "attention_mask": mask.long(),
        "labels": rows.masked_fill(~mask, -100),
    }


@torch.no_grad()
def lm_loss(
    model: torch.nn.Module, blocks: torch.Tensor, batch_size: int, pad_id: int | None = None
) -> float:
    """Mean next-token cross-entropy over ``blocks`` (token-weighted, padding excluded)."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(blocks), batch_size):
        batch = lm_batch(blocks[start : start + batch_size].to(device), pad_id)
        out = model(**batch)
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    return total / max(count, 1)


def pretrain_causal_lm(
    model: torch.nn.Module,
    train_blocks: torch.Tensor,
    heldout_blocks: torch.Tensor,
    *,
    behaviour_rows: torch.Tensor | None = None,
    heldout_behaviour: torch.Tensor | None = None,
    behaviour_fraction: float = 0.0,
    pad_id: int | None = None,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    eval_every: int,
    seed: int,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
    probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    keep_best: str | None = None,
    parameter_groups: list[dict] | None = None,
    bf16: bool = False,
) -> PretrainResult:
    """Train ``model`` with next-token loss for ``steps`` batches.

    A step holds ``batch_size`` rows: random train text blocks and, when ``behaviour_rows`` are
    given, a ``behaviour_fraction`` share of random behaviour rows (padded with ``pad_id``); the
    loss is the two parts' token means weighted by their shares. Each part runs as its own forward
    pass, so short behaviour rows are not padded to the text blocks' length.

    ``keep_best`` names a probe metric (higher is better): the trainable weights of the
    evaluation where it peaked are restored at the end (early stopping; behaviour overfits long
    before the text loss stops falling).

    ``parameter_groups`` are AdamW's groups (None: every parameter at ``weight_decay``; see
    :func:`recfound.train.pretrain_fit.prepare_trainable`). On a GPU the optimiser is the fused
    AdamW and ``bf16`` runs the forward under bf16 autocast; on a CPU both are ignored.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    on_gpu = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        model.parameters() if parameter_groups is None else parameter_groups,
        lr=learning_rate,
        weight_decay=weight_decay,
        betas=(0.9, 0.95),
        **({"fused": True} if on_gpu else {}),
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and bf16)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    has_behaviour = behaviour_rows is not None and len(behaviour_rows) > 0
    n_behaviour = round(batch_size * behaviour_fraction) if has_behaviour else 0
    n_text = batch_size - n_behaviour

    result = PretrainResult(
        heldout_loss_before=0.0,
        heldout_loss_after=0.0,
        steps=steps,
        tokens_per_s=0.0,
        num_train_blocks=len(train_blocks),
        num_heldout_blocks=len(heldout_blocks),
    )
    tokens, train_time = 0, 0.0

    def evaluate(step: int) -> dict[str, float]:
        """Held-out losses (and the probe's metrics) after ``step`` steps, recorded in result."""
        out = {"heldout_loss": lm_loss(model, heldout_blocks, batch_size)}
        result.heldout_curve.append((step, out["heldout_loss"]))
        if has_behaviour and heldout_behaviour is not None and len(heldout_behaviour):
            out["heldout_behaviour_loss"] = lm_loss(model, heldout_behaviour, batch_size, pad_id)
            result.behaviour_curve.append((step, out["heldout_behaviour_loss"]))
        if probe is not None:
            out.update(probe(model))
        result.probe_curve.append((step, train_time, dict(out)))
        return out

    best: dict[str, torch.Tensor] | None = None
    best_value = -math.inf

    def keep(step: int, values: dict[str, float]) -> None:
        nonlocal best, best_value
        if keep_best is None or values.get(keep_best, -math.inf) <= best_value:
            return
        best_value = values[keep_best]
        best = {k: v.detach().clone() for k, v in trainable.items()}
        result.kept_step, result.kept_metrics = step, dict(values)

    before = evaluate(0)
    keep(0, before)
    result.heldout_loss_before = before["heldout_loss"]
    if log_metrics:
        log_metrics(before, 0)
    bar = tqdm(range(steps), desc="pretrain", unit="step", dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        model.train()
        lr = lr_at(step, steps, warmup_steps, learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        parts = []
        if n_text:
            index = torch.randint(len(train_blocks), (n_text,), generator=generator)
            parts.append((n_text / batch_size, lm_batch(train_blocks[index].to(device), None)))
        if n_behaviour:
            index = torch.randint(len(behaviour_rows), (n_behaviour,), generator=generator)
            rows = behaviour_rows[index]
            rows = rows[:, : int((rows != pad_id).sum(1).max())]  # drop all-pad columns
            parts.append((n_behaviour / batch_size, lm_batch(rows.to(device), pad_id)))
        start = time.perf_counter()
        with autocast:
            loss = sum(share * model(**batch).loss for share, batch in parts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        train_time += time.perf_counter() - start
        tokens += sum(int((b["labels"] != -100).sum()) for _, b in parts)
        loss_value = loss.item()
        result.train_losses.append(loss_value)
        metrics = {"train_loss": loss_value, "lr": lr, "tokens_per_s": tokens / train_time}
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            heldout = evaluate(step + 1)
            keep(step + 1, heldout)
            metrics.update(heldout)
            bar.set_postfix_str(
                f"loss {loss_value:.3f}, "
                + ", ".join(f"{k.replace('_loss', '')} {v:.3f}" for k, v in heldout.items())
            )
        if log_metrics:
            log_metrics(metrics, step + 1)
    if best is not None and result.kept_step != steps:
        with torch.no_grad():
            for name, value in best.items():
                trainable[name].copy_(value)
    else:
        result.kept_step, result.kept_metrics = steps, result.probe_curve[-1][2]
    result.heldout_loss_after = dict(result.heldout_curve)[result.kept_step]
    result.tokens_per_s = tokens / max(train_time, 1e-9)
    return result


def next_item_probe(
    tokenizer,
    prompts: list[str],
    item_token_ids: torch.Tensor,
    targets: np.ndarray,
    exclude: list[list[int]],
    k: int = 10,
    batch_size: int = 64,
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """A probe of what behaviour pretraining buys: full-ranking next-item Recall/NDCG@``k`` of
    the bare backbone on validation targets (catalogue ranked by the identifier logits after the
    prompt, the user's earlier items excluded).

    ``item_token_ids`` holds each catalogue item's token id (-1: none, never ranked);
    ``targets`` the catalogue row of each prompt's target; ``exclude`` its earlier items' rows.
    """
    known = item_token_ids >= 0

    @torch.no_grad()
    def probe(model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        rows = []
        try:
            for start in range(0, len(prompts), batch_size):
                batch = tokenizer(
                    prompts[start : start + batch_size], return_tensors="pt", padding=True
                )
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits[:, -1]
                scores = torch.full((len(logits), len(item_token_ids)), -1e30)
                scores[:, known] = logits.float().cpu()[:, item_token_ids[known]]
                rows.append(scores)
        finally:
            tokenizer.padding_side = side
        ranks = rank_of_targets(torch.cat(rows).numpy(), targets, exclude)
        return {f"valid_recall@{k}": recall_at_k(ranks, k), f"valid_ndcg@{k}": ndcg_at_k(ranks, k)}

    return probe
