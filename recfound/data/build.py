"""Normalized tables → every enabled task's train/valid/test records.

Besides the records, the build keeps the item catalogue (every item's id and the text retrieval
targets use) and the warm training interactions, for full-ranking evaluation and the baselines.

The :class:`~recfound.data.tasks.base.TaskContext` (cold items, leave-one-out split, per-user
timelines) is computed once; each enabled builder then reads it. A task is *skipped*, with a plain
reason, when the source lacks a signal it needs or when it yields no training records (for the
evaluation-only ``zero_shot``: no evaluation records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from recfound.config import TasksConfig
from recfound.data.schema import SPLITS, Tables, records_to_frame
from recfound.data.tasks import TASK_BUILDERS
from recfound.data.tasks.base import TaskContext


@dataclass
class TaskDatasets:
    """The built tasks: ``frames[task][split]`` (TaskRecord columns), the skipped tasks with
    reasons, the cold items held out of all training, and how derived tasks were made."""

    frames: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cold_items: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)
    item_texts: pd.DataFrame = field(default_factory=pd.DataFrame)
    train_interactions: pd.DataFrame = field(default_factory=pd.DataFrame)
    # every warm interaction with its leave-one-out ``split`` (train/valid/test): what full-ranking
    # evaluation excludes, what SASRec/MF learn from, and what `export-split` writes
    split_interactions: pd.DataFrame = field(default_factory=pd.DataFrame)


def build_task_datasets(tables: Tables, cfg: TasksConfig, seed: int) -> TaskDatasets:
    """Build ``cfg.enabled`` tasks from ``tables``; deterministic given ``seed``."""
    ctx = TaskContext.from_tables(
        tables,
        seed=seed,
        history_length=cfg.history_length,
        sequence_length=cfg.sequence_length,
        max_train_next_item=cfg.max_train_next_item,
        next_item_train_positions=cfg.next_item_train_positions,
        queries_per_train_item=cfg.queries_per_train_item,
        num_candidates=cfg.num_candidates,
        max_train_per_task=cfg.max_train_per_task,
        max_eval_per_task=cfg.max_eval_per_task,
        cold_item_fraction=cfg.cold_item_fraction,
        identifiers=cfg.item_ids,
        semantic_levels=cfg.semantic_levels,
        semantic_codebook_size=cfg.semantic_codebook_size,
    )
    datasets = TaskDatasets(
        cold_items=sorted(ctx.cold_items),
        item_texts=pd.DataFrame(
            {
                "item_id": list(ctx.items),
                "text": [ctx.item_text(i) for i in ctx.items],
                "cold": [i in ctx.cold_items for i in ctx.items],
                # the identifier token in the model vocabulary ('' for items without one)
                "token": [ctx.item_tokens.get(i, "") for i in ctx.items],
            }
        ),
        train_interactions=ctx.train_interactions[
            ["user_id", "item_id", "rating", "timestamp"]
        ].reset_index(drop=True),
        split_interactions=ctx.interactions[
            ["user_id", "item_id", "rating", "timestamp", "split"]
        ].reset_index(drop=True),
    )
    signals = set(tables.info.signals)
    for name in tqdm(cfg.enabled, desc="build tasks", unit="task"):
        builder = TASK_BUILDERS[name]
        missing = sorted(builder.needs - signals)
        if missing:
            datasets.skipped[name] = (
                f"needs {', '.join(missing)}; source {tables.info.name} has: "
                f"{', '.join(tables.info.signals)}"
            )
            continue
        records = builder.build(ctx)
        frames = {
            split: records_to_frame([r for r in records if r.split == split]) for split in SPLITS
        }
        if builder.eval_only and all(frames[s].empty for s in ("valid", "test")):
            datasets.skipped[name] = "produced no evaluation records (e.g. no cold items chosen)"
            continue
        if not builder.eval_only and frames["train"].empty:
            datasets.skipped[name] = f"produced no train records from source {tables.info.name}"
            continue
        datasets.frames[name] = frames
        if builder.derived:
            datasets.derived[name] = builder.derived
    return datasets
