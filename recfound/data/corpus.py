"""What the backbone learns from before the multi-task stage: text and behaviour.

- **Text**: every item's text (exactly the text the tasks show: identifier, title, year,
  genres/categories, description) and a seeded sample of the tasks' train prompts, each followed
  by its answer (``pretrain.task_answers``).
- **Behaviour** (M6-Rec's behaviour as text): every user's *training* interactions in time order,
  written as identifier tokens after the same words next-item prompts end with
  (``History, oldest first: <item_3> <item_7> …``). Next-token prediction on it is next-item
  prediction at every position, so the backbone carries collaborative knowledge ("people who
  watched X watch Y") before any task is trained.

Only the train split is read (train prompts, train interactions), so no valid/test target is seen
in pretraining.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

BEHAVIOUR_PREFIX = "History, oldest first:"
IDENTIFIER_PATTERN = re.compile(r"\s*<item_[^>\s]+>")


def train_prompts(tasks_dir: str | Path, with_answers: bool = False) -> list[str]:
    """Prompts of every task's train split under ``tasks_dir`` (``<task>/train.parquet``), each
    followed by its answer (``prompt + " " + target``) when ``with_answers``."""
    prompts: list[str] = []
    for path in sorted(Path(tasks_dir).glob("*/train.parquet")):
        frame = pd.read_parquet(path, columns=["prompt", "target"])
        if with_answers:
            prompts.extend((frame["prompt"] + " " + frame["target"]).tolist())
        else:
            prompts.extend(frame["prompt"].tolist())
    return prompts


def text_corpus(
    items: pd.DataFrame,
    tasks_dir: str | Path,
    max_texts: int,
    seed: int,
    with_answers: bool = False,
) -> list[str]:
    """Item texts (column ``text``) plus a seeded sample of train prompts (with their answers
    when ``with_answers``: the backbone then reads every task's answer template, as an LM reads
    instructions with their responses), at most ``max_texts``."""
    texts = items["text"].astype(str).tolist()
    prompts = train_prompts(tasks_dir, with_answers)
    room = max(0, max_texts - len(texts))
    if len(prompts) > room:
        chosen = np.random.default_rng(seed).choice(len(prompts), size=room, replace=False)
        prompts = [prompts[i] for i in sorted(chosen)]
    return texts + prompts


def without_identifiers(text: str) -> str:
    """``text`` with its item identifier tokens removed (what the BPE tokenizer is trained on:
    identifiers are whole tokens of their own, added after)."""
    return IDENTIFIER_PATTERN.sub("", text)


def behaviour_sequences(
    train_interactions: pd.DataFrame, item_tokens: dict[str, str]
) -> list[list[str]]:
    """Per user, the identifier tokens of their training interactions in time order.

    Ties in time keep their row order (the order the leave-one-out split used); items without an
    identifier are skipped.
    """
    frame = train_interactions.assign(_row=np.arange(len(train_interactions)))
    frame = frame.sort_values(["user_id", "timestamp", "_row"], kind="mergesort")
    sequences = []
    for _, items in frame.groupby("user_id", sort=True)["item_id"]:
        tokens = [item_tokens[i] for i in items.astype(str) if i in item_tokens]
        if len(tokens) >= 2:
            sequences.append(tokens)
    return sequences


def behaviour_windows(
    sequences: list[list[str]], window: int, stride: int | None = None
) -> list[str]:
    """Texts of at most ``window`` identifiers each, covering every sequence.

    A long sequence is cut into windows starting every ``stride`` items (half a window by
    default), so every position is predicted with at least ``window - stride`` items of context
    (except the first ones of a user); a small stride shows each item in many contexts.
    """
    if window < 2:
        raise ValueError(f"a behaviour window needs at least 2 items, got {window}")
    stride = max(1, window // 2) if stride is None else max(1, min(stride, window))
    texts = []
    for tokens in sequences:
        starts = range(0, max(1, len(tokens) - window + stride), stride)
        for start in starts:
            chunk = tokens[start : start + window]
            if len(chunk) >= 2:
                texts.append(f"{BEHAVIOUR_PREFIX} {' '.join(chunk)}")
    return texts
