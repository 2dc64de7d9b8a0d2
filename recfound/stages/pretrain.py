"""Stage `pretrain`: a backbone that knows the catalogue's text and its users' behaviour.

- ``model.backbone: builtin`` → train a BPE tokenizer on the text corpus (item texts + train
  prompts, identifiers removed), add one identifier token per item, build the small Llama-style
  model and pretrain it with causal-LM loss on text blocks and behaviour sequences
  (:mod:`recfound.data.corpus`).
- ``model.backbone: /path/to/checkpoint`` → the user's model and tokenizer are loaded, the
  identifier tokens are *added* (embeddings resized, nothing replaced) and the same pretraining
  runs on top, by default with the backbone frozen and only the identifier rows trained
  (``pretrain.trainable``, :mod:`recfound.train.pretrain_fit`).

Before training, the memory the setting needs is estimated and logged; a setting that cannot fit
the device stops with :class:`~recfound.train.pretrain_fit.PretrainMemoryError`.

Either way the result is saved with ``save_pretrained`` to ``paths.backbone``; the loss curves and
tokens/s go to MLflow and ``reports/``. The backbone, ``reports/pretrain.json`` and its two plots
are one unit (``reports/manifests/pretrain.json``, :func:`recfound.artifacts.publish_unit`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from recfound import artifacts
from recfound.accelerator import stage_device
from recfound.config import Config, ConfigError
from recfound.data.corpus import (
    BEHAVIOUR_PREFIX,
    behaviour_sequences,
    behaviour_windows,
    text_corpus,
    without_identifiers,
)
from recfound.data.datasets import TaskDataError
from recfound.data.tasks.base import identifier_vocabulary
from recfound.layout import (
    ITEMS_FILE,
    SPLIT_INTERACTIONS_FILE,
    TRAIN_INTERACTIONS_FILE,
    unit_manifest,
)
from recfound.model.backbone import (
    BuiltinSpec,
    add_item_tokens,
    build_builtin_backbone,
    check_backbone_setting,
    load_backbone,
    save_backbone,
    train_bpe_tokenizer,
)
from recfound.tracking.runs import stage_run, task_inputs
from recfound.train.plots import plot_pretraining
from recfound.train.pretrain import (
    next_item_probe,
    pack_blocks,
    pad_rows,
    pretrain_causal_lm,
    split_blocks,
)
from recfound.train.pretrain_fit import (
    GIB,
    PretrainTarget,
    available_memory,
    check_fits,
    estimate_memory,
    prepare_trainable,
    resolve_trainable,
)
from recfound.train.throughput import (
    matmul_parameters,
    throughput_metrics,
    train_flops_per_token,
)

log = logging.getLogger(__name__)

# held-out rows scored at every evaluation: enough for a stable loss, few enough to stay cheap
MAX_HELDOUT_ROWS = 128
PROBE_USERS = 500  # validation users the next-item probe ranks the catalogue for


def metrics_path(cfg: Config) -> Path:
    return Path(cfg.paths.reports) / "pretrain.json"


def curve_path(cfg: Config) -> Path:
    return Path(cfg.paths.reports) / "plots" / "pretrain_heldout_loss.json"


def _read_task_table(cfg: Config, name: str) -> pd.DataFrame:
    path = Path(cfg.paths.tasks) / name
    if not path.is_file():
        raise TaskDataError(f"{path} is missing: run `recfound build-tasks` before `pretrain`")
    return pd.read_parquet(path)


def run_pretrain(cfg: Config) -> dict:
    """Run the stage; returns the metrics written to ``reports/pretrain.json``."""
    p = cfg.pretrain
    check_backbone_setting(cfg.model.backbone)
    items = _read_task_table(cfg, ITEMS_FILE)
    interactions = _read_task_table(cfg, TRAIN_INTERACTIONS_FILE)
    item_tokens = {
        str(i): str(t) for i, t in zip(items["item_id"], items["token"], strict=True) if t
    }
    vocabulary = identifier_vocabulary(item_tokens)  # one per item, or the codes' tokens
    texts = text_corpus(items, cfg.paths.tasks, p.max_corpus_texts, cfg.seed, p.task_answers)
    if cfg.model.backbone == "builtin":
        spec_cfg = cfg.model.builtin
        tokenizer = train_bpe_tokenizer(
            [without_identifiers(t) for t in texts] + [BEHAVIOUR_PREFIX], spec_cfg.vocab_size
        )
        add_item_tokens(None, tokenizer, vocabulary)
        model = build_builtin_backbone(BuiltinSpec(**spec_cfg.model_dump()), tokenizer, cfg.seed)
        source = "builtin"
    else:
        checkpoint = Path(cfg.model.backbone)
        model, tokenizer = load_backbone(checkpoint)
        added = add_item_tokens(model, tokenizer, vocabulary)
        log.info("extended %s with %d item identifier tokens", checkpoint, added)
        source = str(checkpoint.resolve())
    device = stage_device()
    trainable = resolve_trainable(p.trainable, cfg.model.backbone == "builtin")
    seq_len = min(p.seq_len, model.config.max_position_embeddings)

    def estimate(setting: str, checkpointing: bool):
        return estimate_memory(
            model,
            setting,
            batch_size=p.batch_size,
            seq_len=seq_len,
            gradient_checkpointing=checkpointing,
            adapter_rank=p.adapter_rank,
        )

    chosen, available = estimate(trainable, p.gradient_checkpointing), available_memory(device)
    log.info("memory estimate: %s; %.2f GiB free on %s", chosen.describe(), available / GIB, device)
    check_fits(chosen, available, estimate, str(device))
    model.to(device)
    if p.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    identifier_ids = tokenizer.convert_tokens_to_ids(vocabulary)
    target = prepare_trainable(
        model,
        trainable,
        identifier_ids,
        weight_decay=p.weight_decay,
        adapter_rank=p.adapter_rank,
        seed=cfg.seed,
    )
    log.info(
        "pretraining on %s: trainable=%s (%d trainable parameters)",
        device,
        trainable,
        target.trainable_parameters,
    )
    probe = None
    if len(vocabulary) == len(item_tokens):  # atomic (one token per item): the probe's logit
        probe = validation_probe(cfg, tokenizer, items, item_tokens)
    elif p.keep_best:
        raise ConfigError(
            "pretrain.keep_best: true needs the next-item probe, which ranks atomic identifiers "
            "(one token per item); with tasks.item_ids: semantic set pretrain.keep_best: false"
        )
    else:
        log.info("semantic identifiers: no next-item probe during pretraining (atomic only)")
    fit = {"trainable": trainable, "memory_estimate": chosen.to_dict()}
    return _pretrain(
        cfg, model, target, tokenizer, texts, interactions, item_tokens, source, probe, fit
    )


def validation_probe(cfg: Config, tokenizer, items: pd.DataFrame, item_tokens: dict[str, str]):
    """The next-item probe on (a seeded sample of) the users' validation targets: the prompt is
    their last ``tasks.sequence_length`` training items in the behaviour format."""
    split = _read_task_table(cfg, SPLIT_INTERACTIONS_FILE)
    split = split.assign(_row=range(len(split))).sort_values(
        ["user_id", "timestamp", "_row"], kind="mergesort"
    )
    row_of = {str(i): n for n, i in enumerate(items["item_id"])}
    valid = split[split["split"] == "valid"]
    if len(valid) > PROBE_USERS:
        valid = valid.sample(n=PROBE_USERS, random_state=cfg.seed)
    train = split[split["split"] == "train"]
    histories = train.groupby("user_id")["item_id"].agg(list)
    prompts, targets, exclude = [], [], []
    for user, target in zip(valid["user_id"], valid["item_id"].astype(str), strict=True):
        history = [str(i) for i in histories.get(user, [])]
        shown = [item_tokens[i] for i in history[-cfg.tasks.sequence_length :] if i in item_tokens]
        prompts.append(f"{BEHAVIOUR_PREFIX} {' '.join(shown)}")
        targets.append(row_of[target])
        exclude.append([row_of[i] for i in history if i in row_of])
    token_ids = torch.tensor(
        [tokenizer.convert_tokens_to_ids(t) if t else -1 for t in items["token"]],
        dtype=torch.long,
    )
    return next_item_probe(tokenizer, prompts, token_ids, np.array(targets), exclude)


def _pretrain(
    cfg,
    model,
    target: PretrainTarget,
    tokenizer,
    texts,
    interactions,
    item_tokens,
    source,
    probe,
    fit: dict,
) -> dict:
    p = cfg.pretrain
    seq_len = min(p.seq_len, model.config.max_position_embeddings)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    train_blocks, heldout_blocks = split_blocks(
        pack_blocks(ids, tokenizer.eos_token_id, seq_len), p.heldout_fraction, cfg.seed
    )
    heldout_blocks = heldout_blocks[:MAX_HELDOUT_ROWS]
    windows = behaviour_windows(
        behaviour_sequences(interactions, item_tokens),
        cfg.tasks.sequence_length,
        p.window_stride,
    )
    behaviour = tokenizer(windows)["input_ids"]
    behaviour_rows = pad_rows(
        [row + [tokenizer.eos_token_id] for row in behaviour], tokenizer.pad_token_id, seq_len
    )
    train_behaviour, heldout_behaviour = split_blocks(behaviour_rows, p.heldout_fraction, cfg.seed)
    heldout_behaviour = heldout_behaviour[:MAX_HELDOUT_ROWS]
    n_params = sum(t.numel() for t in model.parameters())
    log.info(
        "backbone (%s): %.2fM parameters, vocab %d (%d item identifiers); text: %d train / %d "
        "held-out blocks of %d tokens; behaviour: %d train / %d held-out windows of up to %d items",
        source,
        n_params / 1e6,
        len(tokenizer),
        len(item_tokens),
        len(train_blocks),
        len(heldout_blocks),
        seq_len,
        len(train_behaviour),
        len(heldout_behaviour),
        cfg.tasks.sequence_length,
    )
    settings = {
        "model.backbone": cfg.model.backbone,
        "model.builtin": cfg.model.builtin.model_dump(),
        "pretrain": p.model_dump(),
        "seed": cfg.seed,
    }
    reports = Path(cfg.paths.reports)
    manifest = unit_manifest(reports, "pretrain")
    published = artifacts.publish_unit(manifest, writer="recfound pretrain")
    with (
        published as unit,
        stage_run(cfg.tracking, "pretrain", settings, inputs=task_inputs(cfg, "training")) as run,
    ):
        result = pretrain_causal_lm(
            target.module,
            train_blocks,
            heldout_blocks,
            behaviour_rows=train_behaviour,
            heldout_behaviour=heldout_behaviour,
            behaviour_fraction=p.behaviour_fraction,
            pad_id=tokenizer.pad_token_id,
            steps=p.steps,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            warmup_steps=p.warmup_steps,
            weight_decay=p.weight_decay,
            eval_every=p.eval_every,
            seed=cfg.seed,
            log_metrics=lambda values, step: mlflow.log_metrics(
                {k.replace("@", "_at_"): v for k, v in values.items()}, step=step
            ),
            probe=probe,
            keep_best="valid_ndcg@10" if p.keep_best else None,
            parameter_groups=target.parameter_groups,
            bf16=p.bf16,
        )
        model = target.finish()  # the plain model (an adapter merged into its weights)
        full = fit["trainable"] == "full"
        learned = matmul_parameters(model) if full else target.trainable_parameters
        flops = train_flops_per_token(model, seq_len, learned)
        speed = throughput_metrics(result.tokens_per_s, flops, next(model.parameters()).device)
        metrics = {
            "pretrained": True,
            "backbone": source,
            "heldout_loss_before": result.heldout_loss_before,
            "heldout_loss_after": result.heldout_loss_after,
            "heldout_perplexity_after": float(torch.tensor(result.heldout_loss_after).exp()),
            "heldout_behaviour_loss_before": result.behaviour_curve[0][1],
            "heldout_behaviour_loss_after": dict(result.behaviour_curve)[result.kept_step],
            **{f"{k}_after": v for k, v in result.kept_metrics.items() if "@" in k},
            "tokens_per_s": result.tokens_per_s,
            **speed,
            "trainable": fit["trainable"],
            "trainable_parameters": target.trainable_parameters,
            "memory_estimate_gib": fit["memory_estimate"]["total"] / GIB,
            "device": str(next(model.parameters()).device),
            "steps": result.steps,
            "kept_step": result.kept_step,
            "parameters": n_params,
            "vocab_size": len(tokenizer),
            "item_tokens": len(item_tokens),
            "behaviour_windows": len(behaviour_rows),
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metrics(
            {k.replace("@", "_at_"): v for k, v in metrics.items() if isinstance(v, float)}
        )
        figure = plot_pretraining(
            result.probe_curve, unit.path(reports / "plots" / "pretrain_curves.png")
        )
        mlflow.log_artifact(str(figure), "plots")
        save_backbone(model, tokenizer, unit.directory(cfg.paths.backbone))
        unit.write_json(metrics_path(cfg), metrics)
        unit.write_json(
            curve_path(cfg),
            [
                {"step": s, "train_seconds": round(t, 1), **values}
                for s, t, values in result.probe_curve
            ],
        )
    log.info(
        "pretrained %d steps (kept step %d): held-out text loss %.3f → %.3f, behaviour loss "
        "%.3f → %.3f; next-item validation Recall@10 %.4f, NDCG@10 %.4f (%.0f tokens/s)",
        result.steps,
        result.kept_step,
        result.heldout_loss_before,
        result.heldout_loss_after,
        metrics["heldout_behaviour_loss_before"],
        metrics["heldout_behaviour_loss_after"],
        metrics.get("valid_recall@10_after", float("nan")),  # no probe for semantic identifiers
        metrics.get("valid_ndcg@10_after", float("nan")),
        result.tokens_per_s,
    )
    return metrics
