"""The embedding side learns: InfoNCE with catalogue negatives lifts retrieval far above chance on
a task that no lexical overlap can solve (queries name colours and shapes in other words)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recfound import metrics as M
from recfound.config import S2SchedConfig
from recfound.model.build import build_rec_model
from recfound.train.trainer import TaskData, Trainer
from tests.train.tiny import ADAPTER, tiny_backbone, tiny_train_config

COLOURS = {"red": "rojo", "blue": "azul", "green": "verde", "black": "negro", "white": "blanco"}
SHAPES = {"circle": "kreis", "square": "quadrat", "star": "stern", "ring": "reif", "cube": "wurfel"}


def _catalogue_and_queries() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, queries = [], []
    for c, (colour, farbe) in enumerate(COLOURS.items()):
        for s, (shape, form) in enumerate(SHAPES.items()):
            item_id = str(c * len(SHAPES) + s)
            text = f"a {colour} {shape}"
            rows.append({"item_id": item_id, "text": text})
            queries.append(
                {
                    "prompt": f"Find the object.\n{form} {farbe}",
                    "target": text,
                    "item_id": item_id,
                    "history_ids": [],
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(queries)


def _mrr(trainer: Trainer, catalogue: pd.DataFrame, queries: pd.DataFrame) -> float:
    q = trainer.rec.embed(queries["prompt"].tolist(), "match")
    d = trainer.rec.embed(catalogue["text"].tolist(), "match")
    ranks = M.rank_of_targets((q @ d.T).numpy(), np.arange(len(queries)))
    return M.mrr_at_k(ranks)


def test_infonce_with_catalogue_negatives_learns_retrieval(tmp_path: Path) -> None:
    catalogue, queries = _catalogue_and_queries()
    words = [*catalogue["text"], *queries["prompt"]] * 10
    base, tokenizer = tiny_backbone(words, max_length=32, vocab_size=300)
    rec = build_rec_model(base, tokenizer, ADAPTER, {"match": "embedding"}, seed=0, max_length=32)
    task = TaskData("match", "embedding", queries, queries)
    params = tiny_train_config(
        steps=40,
        batch_size=1,  # no generative task
        samples_per_task=8,
        catalogue_negatives=12,
        learning_rate=1e-2,
        warmup_steps=5,
        eval_every=30,
        checkpoint_every=100,
        s2sched=S2SchedConfig(warmup_steps=10, update_every=10),
    )
    trainer = Trainer(rec, [task], params, tmp_path, seed=0, catalogue=catalogue)
    chance = float(np.mean(1.0 / np.arange(1, len(catalogue) + 1)))  # a random ranking's MRR
    before = _mrr(trainer, catalogue, queries)
    trainer.train()
    after = _mrr(trainer, catalogue, queries)
    assert before < 2.5 * chance  # nothing lexical to go by before training
    print(f"MRR before {before:.3f}, after {after:.3f}, chance {chance:.3f}")
    assert after > 0.5 and after > 4 * chance, (before, after, chance)
