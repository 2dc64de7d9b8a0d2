"""A tiny, real training setup shared by the trainer tests: a small Llama built from a config,
a tokenizer trained on ml-100k titles, three tasks made from ml-100k item attributes, and a
training budget a CPU runs in seconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recfound.config import S2SchedConfig, TMoLEParams, TrainConfig
from recfound.data.sources import load_ml100k
from recfound.model.backbone import (
    BuiltinSpec,
    add_item_tokens,
    build_builtin_backbone,
    train_bpe_tokenizer,
)
from recfound.model.build import AdapterSpec, build_rec_model
from recfound.model.recmodel import RecModel
from recfound.train.trainer import TaskData

SPEC = BuiltinSpec(
    hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=64, vocab_size=600
)
ADAPTER = AdapterSpec(
    TMoLEParams(
        rank=4,
        alpha=8.0,
        num_embedding_experts=1,
        num_shared_experts=1,
        num_generative_experts=1,
        task_embedding_dim=8,
    ),
    ("q_proj", "v_proj", "down_proj"),
)


# The trainer tests' budget: every feature (S2Sched updates, validation, checkpoints) happens
TRAIN = dict(
    steps=12,
    batch_size=8,
    embedding_batch_size=8,
    samples_per_task=4,
    eval_every=4,
    val_batch_size=8,
    checkpoint_every=4,
    learning_rate=5e-3,
    warmup_steps=2,
    s2sched=S2SchedConfig(warmup_steps=2, update_every=2, window=3),
)


def tiny_train_config(**changes: object) -> TrainConfig:
    """:data:`TRAIN` with ``changes``, validated as ``params.yaml`` would be."""
    return TrainConfig(**{**TRAIN, **changes})


def tiny_backbone(
    texts: Sequence[str], seed: int = 0, item_tokens: Sequence[str] = (), **spec_changes: object
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A builtin backbone of :data:`SPEC` (with ``spec_changes``) and a BPE tokenizer trained on
    ``texts``, extended by ``item_tokens`` (identifiers) before the model is built."""
    spec = replace(SPEC, **spec_changes)
    tokenizer = train_bpe_tokenizer(list(texts), spec.vocab_size)
    add_item_tokens(None, tokenizer, item_tokens)
    return build_builtin_backbone(spec, tokenizer, seed=seed), tokenizer


def tiny_tasks(n_train: int = 120, n_valid: int = 24, questions: bool = False) -> list[TaskData]:
    """``genre`` and ``year`` (generative: a title → its genres or year) and ``match``
    (embedding: a title → its attributes). ``questions``: the generative prompts say what they
    ask for (``"Genres of …"``)."""
    items = load_ml100k().items.head(n_train + n_valid).reset_index(drop=True)
    genres = items["categories"].str.replace("|", ", ")
    years = items["year"].astype("string").fillna("unknown")
    titles = items["title"]
    frames = {
        "genre": ("generative", "Genres of " + titles if questions else titles, genres),
        "year": ("generative", "Year of " + titles if questions else titles, years),
        "match": ("embedding", titles, "genres: " + genres + "; year " + years),
    }
    tasks = []
    for name, (kind, prompts, targets) in frames.items():
        frame = pd.DataFrame({"prompt": prompts.astype(str), "target": targets.astype(str)})
        tasks.append(TaskData(name, kind, frame.iloc[:n_train], frame.iloc[n_train:]))
    return tasks


def tiny_model(tasks: list[TaskData], seed: int = 0, adapter: AdapterSpec = ADAPTER) -> RecModel:
    texts = [str(t) for task in tasks for t in pd.concat([task.train.prompt, task.train.target])]
    base, tokenizer = tiny_backbone(texts, seed=seed)
    return build_rec_model(
        base, tokenizer, adapter, {t.name: t.kind for t in tasks}, seed=seed, max_length=48
    )
