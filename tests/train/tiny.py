"""A tiny, real training setup shared by the trainer tests: a small Llama built from a config,
a tokenizer trained on ml-100k titles, and three tasks made from ml-100k item attributes."""

from __future__ import annotations

import pandas as pd

from recfound.config import TMoLEParams
from recfound.data.sources import load_ml100k
from recfound.model.backbone import BuiltinSpec, build_builtin_backbone, train_bpe_tokenizer
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


def tiny_tasks(n_train: int = 120, n_valid: int = 24) -> list[TaskData]:
    items = load_ml100k().items.head(n_train + n_valid).reset_index(drop=True)
    genres = items["categories"].str.replace("|", ", ")
    years = items["year"].astype("string").fillna("unknown")
    frames = {
        "genre": ("generative", items["title"], genres),
        "year": ("generative", items["title"], years),
        "match": ("embedding", items["title"], "genres: " + genres + "; year " + years),
    }
    tasks = []
    for name, (kind, prompts, targets) in frames.items():
        frame = pd.DataFrame({"prompt": prompts.astype(str), "target": targets.astype(str)})
        tasks.append(TaskData(name, kind, frame.iloc[:n_train], frame.iloc[n_train:]))
    return tasks


def tiny_model(tasks: list[TaskData], seed: int = 0, adapter: AdapterSpec = ADAPTER) -> RecModel:
    texts = [str(t) for task in tasks for t in pd.concat([task.train.prompt, task.train.target])]
    tokenizer = train_bpe_tokenizer(texts, SPEC.vocab_size)
    base = build_builtin_backbone(SPEC, tokenizer, seed=seed)
    return build_rec_model(
        base, tokenizer, adapter, {t.name: t.kind for t in tasks}, seed=seed, max_length=48
    )
