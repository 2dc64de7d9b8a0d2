"""``tasks.item_ids: semantic`` end to end on a tiny ml-100k slice: items get short unique codes
from the codebooks, prompts and answers are written with them, the backbone gains the codebook
tokens (not one per item), training runs, and evaluation ranks the whole catalogue by code
log-probability with the standard full-ranking protocol, and `recommend` answers from the same
scores."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recfound.config import ConfigError, load_config
from recfound.data.tasks.base import IDENTIFIER_TOKEN, identifier_vocabulary
from recfound.evaluation.model_eval import evaluate_bundle
from recfound.model.recmodel import top_k_items
from recfound.serving.ann import IndexSettings
from recfound.serving.catalogue import build_catalogue
from recfound.serving.recommend import Recommender
from recfound.serving.snapshot import build_index
from recfound.stages.ablate import load_last_checkpoint
from recfound.stages.pretrain import run_pretrain
from recfound.stages.train import run_train
from tests.conftest import (
    build_task_data,
    dirs_under,
    sqlite_tracking,
    write_ml100k_slice,
    write_tiny_params,
)

LEVELS, CODEBOOK = 2, 4


def _config(root: Path, **pretrain):
    raw = write_ml100k_slice(root / "raw", num_users=40)
    params = write_tiny_params(
        root / "params.yaml",
        data={"source": "recbole_atomic", "path": str(raw), "dataset_name": "mini"},
        tasks={
            "enabled": ["sequential_recommendation", "user2item"],
            "sequence_length": 8,
            "item_ids": "semantic",
            "semantic_levels": LEVELS,
            "semantic_codebook_size": CODEBOOK,
        },
        pretrain=pretrain,
        evaluate={"fusion": {}},
        paths=dirs_under(
            root, "interim", "tasks", "backbone", "train", "merged", "baselines", "reports"
        ),
        tracking=sqlite_tracking(root),
    )
    return load_config(params)


@pytest.mark.slow
def test_semantic_identifiers_train_and_evaluate_end_to_end(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    build_task_data(cfg)

    items = pd.read_parquet(Path(cfg.paths.tasks) / "items.parquet")
    named = items.loc[items["token"] != "", "token"].tolist()
    assert len(named) > 100 and len(set(named)) == len(named)  # every warm item, unique
    assert all(len(IDENTIFIER_TOKEN.findall(t)) == LEVELS + 1 for t in named)
    vocabulary = identifier_vocabulary(dict(enumerate(named)))
    assert len(vocabulary) < len(named) / 3  # codebooks + suffixes, not a token per item
    train = pd.read_parquet(Path(cfg.paths.tasks) / "sequential_recommendation" / "train.parquet")
    assert set(train["target"]) <= set(named)  # answers are codes
    shown = [IDENTIFIER_TOKEN.findall(p) for p in train["prompt"]]
    assert all(shown) and set().union(*map(set, shown)) <= set(vocabulary)  # histories as codes

    pretrained = run_pretrain(cfg)
    assert pretrained["vocab_size"] >= len(vocabulary)
    run_train(cfg)
    rec, kinds = load_last_checkpoint(cfg.paths.backbone, cfg.paths.train)
    document, records = evaluate_bundle(rec, kinds, cfg)
    task = document["tasks"]["sequential_recommendation"]
    assert task["protocol"] == "next_item"  # the whole catalogue, not the candidate list
    test_users = pd.read_parquet(
        Path(cfg.paths.tasks) / "sequential_recommendation" / "test.parquet"
    )
    assert task["n_records"] == len(test_users)
    assert 0.0 <= task["recall@10"] <= 1.0 and task["ci"]["recall@10"][0] is not None

    # `recommend` ranks by the same code scores: k valid items, none seen, evaluation's order
    catalogue = build_catalogue(cfg.paths.tasks, cfg.paths.interim, cfg.tasks.sequence_length)
    index = build_index(rec, kinds, catalogue, IndexSettings())
    recommender = Recommender(catalogue, index, lambda _t: rec, kinds)
    users = test_users["user_id"].astype(str).tolist()[:3]
    prompts = [catalogue.next_item_prompt(catalogue.histories[u]) for u in users]
    assert prompts == test_users["prompt"].tolist()[:3]
    scores = rec.catalogue_scores(prompts, catalogue.tokens, "sequential_recommendation")
    exclude = [[catalogue.item_index[i] for i in catalogue.histories[u]] for u in users]
    expected = top_k_items(scores, exclude, 10)
    answers = recommender.recommend([{"user_id": u, "k": 10} for u in users])
    for user, row, answer in zip(users, expected.tolist(), answers, strict=True):
        assert answer.item_ids == [catalogue.item_ids[i] for i in row]
        assert answer.path == "generative" and len(answer.item_ids) == 10
        assert not set(answer.item_ids) & set(catalogue.histories[user])
        assert all(catalogue.tokens[catalogue.item_index[i]] for i in answer.item_ids)


def test_keep_best_needs_atomic_identifiers(tmp_path: Path) -> None:
    cfg = _config(tmp_path, keep_best=True)
    build_task_data(cfg)
    with pytest.raises(ConfigError, match="pretrain.keep_best"):
        run_pretrain(cfg)
