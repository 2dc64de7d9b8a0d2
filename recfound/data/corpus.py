"""The text the builtin backbone and its tokenizer learn from: item texts and training prompts.

Only the train split's prompts are used, so nothing a model is later evaluated on (valid/test
targets) is seen in pretraining.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def item_texts(items: pd.DataFrame) -> list[str]:
    """One line per item: title, year, categories and description where present."""
    texts = []
    for row in items.itertuples(index=False):
        parts = [str(row.title)]
        if pd.notna(row.year):
            parts[0] += f" ({int(row.year)})"
        if row.categories:
            parts.append("categories: " + ", ".join(str(row.categories).split("|")))
        if row.description:
            parts.append(str(row.description))
        texts.append(" — ".join(parts))
    return texts


def train_prompts(tasks_dir: str | Path) -> list[str]:
    """Prompts of every task's train split under ``tasks_dir`` (``<task>/train.parquet``)."""
    prompts: list[str] = []
    for path in sorted(Path(tasks_dir).glob("*/train.parquet")):
        prompts.extend(pd.read_parquet(path, columns=["prompt"])["prompt"].tolist())
    return prompts


def pretraining_texts(
    items: pd.DataFrame, tasks_dir: str | Path, max_texts: int, seed: int
) -> list[str]:
    """Item texts plus a seeded sample of train prompts, at most ``max_texts`` in all."""
    texts = item_texts(items)
    prompts = train_prompts(tasks_dir)
    room = max(0, max_texts - len(texts))
    if len(prompts) > room:
        chosen = np.random.default_rng(seed).choice(len(prompts), size=room, replace=False)
        prompts = [prompts[i] for i in sorted(chosen)]
    return texts + prompts
