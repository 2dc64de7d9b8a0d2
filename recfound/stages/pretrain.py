"""Stage `pretrain`: build and pretrain the builtin backbone, or record that a checkpoint is used.

- ``model.backbone: builtin`` → train a BPE tokenizer on the corpus (item texts + train prompts),
  build the small Llama-style model, pretrain it with causal-LM loss and save both with
  ``save_pretrained`` to ``paths.backbone``. Loss curve and tokens/s go to MLflow.
- ``model.backbone: /path/to/checkpoint`` → nothing to train; ``paths.backbone`` gets a pointer to
  the checkpoint and the stage's metrics say it was skipped and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import torch

from recfound import artifacts
from recfound.config import Config
from recfound.data.corpus import pretraining_texts
from recfound.data.ingest import read_tables
from recfound.model.backbone import (
    BackboneError,
    BuiltinSpec,
    build_builtin_backbone,
    save_backbone,
    train_bpe_tokenizer,
    write_pointer,
)
from recfound.tracking.runs import stage_run
from recfound.train.pretrain import pack_blocks, pretrain_causal_lm, split_blocks

log = logging.getLogger(__name__)


def metrics_path(cfg: Config) -> Path:
    return Path(cfg.paths.reports) / "pretrain.json"


def curve_path(cfg: Config) -> Path:
    return Path(cfg.paths.reports) / "plots" / "pretrain_heldout_loss.json"


def run_pretrain(cfg: Config) -> dict:
    """Run the stage; returns the metrics written to ``reports/pretrain.json``."""
    if cfg.model.backbone != "builtin":
        return _use_checkpoint(cfg)
    return _pretrain_builtin(cfg)


def _use_checkpoint(cfg: Config) -> dict:
    checkpoint = Path(cfg.model.backbone)
    if not (checkpoint / "config.json").is_file():
        raise BackboneError(
            f"model.backbone is {cfg.model.backbone!r}, which is not a local Hugging Face "
            "checkpoint directory (no config.json); use 'builtin' or a directory saved with "
            "save_pretrained"
        )
    reason = f"model.backbone is a given checkpoint ({checkpoint}); nothing to pretrain"
    with artifacts.staged_directory(cfg.paths.backbone) as staging:
        write_pointer(staging, checkpoint)
    metrics = {"pretrained": False, "reason": reason}
    with stage_run(
        cfg.tracking,
        "pretrain",
        {"model.backbone": cfg.model.backbone},
        tags={"recfound.pretrain": "skipped"},
    ):
        mlflow.log_dict(metrics, "pretrain.json")
    artifacts.write_json(metrics_path(cfg), metrics)
    artifacts.write_json(curve_path(cfg), [])
    log.info(reason)
    return metrics


def _pretrain_builtin(cfg: Config) -> dict:
    spec_cfg, p = cfg.model.builtin, cfg.pretrain
    tables = read_tables(cfg.paths.interim)
    texts = pretraining_texts(tables.items, cfg.paths.tasks, p.max_corpus_texts, cfg.seed)
    log.info("pretraining corpus: %d texts (item texts + train prompts)", len(texts))
    tokenizer = train_bpe_tokenizer(texts, spec_cfg.vocab_size)
    spec = BuiltinSpec(**spec_cfg.model_dump())
    model = build_builtin_backbone(spec, tokenizer, seed=cfg.seed)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    seq_len = min(p.seq_len, spec.max_length)
    train_blocks, heldout_blocks = split_blocks(
        pack_blocks(ids, tokenizer.eos_token_id, seq_len), p.heldout_fraction, cfg.seed
    )
    n_params = sum(t.numel() for t in model.parameters())
    log.info(
        "builtin backbone: %.2fM parameters, vocab %d; %d train / %d held-out blocks of %d tokens",
        n_params / 1e6,
        len(tokenizer),
        len(train_blocks),
        len(heldout_blocks),
        seq_len,
    )
    settings = {
        "model.builtin": spec_cfg.model_dump(),
        "pretrain": p.model_dump(),
        "seed": cfg.seed,
    }
    with stage_run(cfg.tracking, "pretrain", settings) as run:
        result = pretrain_causal_lm(
            model,
            train_blocks,
            heldout_blocks,
            steps=p.steps,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            warmup_steps=p.warmup_steps,
            weight_decay=p.weight_decay,
            eval_every=p.eval_every,
            seed=cfg.seed,
            log_metrics=lambda values, step: mlflow.log_metrics(values, step=step),
        )
        metrics = {
            "pretrained": True,
            "heldout_loss_before": result.heldout_loss_before,
            "heldout_loss_after": result.heldout_loss_after,
            "heldout_perplexity_after": float(torch.tensor(result.heldout_loss_after).exp()),
            "tokens_per_s": result.tokens_per_s,
            "steps": result.steps,
            "parameters": n_params,
            "vocab_size": len(tokenizer),
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        with artifacts.staged_directory(cfg.paths.backbone) as staging:
            save_backbone(model, tokenizer, staging)
    artifacts.write_json(metrics_path(cfg), metrics)
    artifacts.write_json(
        curve_path(cfg), [{"step": s, "heldout_loss": v} for s, v in result.heldout_curve]
    )
    log.info(
        "pretrained %d steps: held-out LM loss %.3f → %.3f (%.0f tokens/s)",
        result.steps,
        result.heldout_loss_before,
        result.heldout_loss_after,
        result.tokens_per_s,
    )
    return metrics
