"""SASRec learns a strongly ordered synthetic catalogue; save/load and seeding are exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recfound.baselines.rankers import BaselineError, PopularityRanker
from recfound.baselines.sasrec import SASRecParams, SASRecRanker, training_windows
from recfound.metrics import rank_of_targets, recall_at_k
from recfound.stages.baselines import torch_threads

N_ITEMS = 50
ITEMS = [f"i{k}" for k in range(N_ITEMS)]
TINY = SASRecParams(
    hidden_size=32,
    num_layers=1,
    num_heads=1,
    inner_size=64,
    max_len=8,
    dropout=0.1,
    learning_rate=5e-3,
    batch_size=64,
    max_epochs=40,
    patience=5,
    seed=0,
)


def ordered_interactions(n_users: int = 200, length: int = 10, seed: int = 0) -> pd.DataFrame:
    """Each user walks i, i+1, i+2, ... (mod 50) from a random start; last = test, then valid."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        start = int(rng.integers(N_ITEMS))
        for step in range(length):
            split = "test" if step == length - 1 else "valid" if step == length - 2 else "train"
            rows.append((f"u{user}", ITEMS[(start + step) % N_ITEMS], 4.0, 1000 + step, split))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "split"])


def next_item_recall(scores: np.ndarray, data: pd.DataFrame) -> tuple[float, list[list[str]]]:
    """Full-ranking Recall@10 of each user's test item, train + valid items excluded."""
    position = {item: k for k, item in enumerate(ITEMS)}
    histories, targets = [], []
    for _, group in data.groupby("user_id", sort=True):
        histories.append(group.loc[group["split"] != "test", "item_id"].tolist())
        targets.append(position[group.loc[group["split"] == "test", "item_id"].iloc[0]])
    exclude = [[position[i] for i in h] for h in histories]
    ranks = rank_of_targets(scores, np.array(targets), exclude=exclude)
    return recall_at_k(ranks, 10), histories


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is many times faster on a busy shared CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def fitted() -> tuple[SASRecRanker, pd.DataFrame]:
    data = ordered_interactions()
    return SASRecRanker(ITEMS, TINY).fit(data, progress=False), data


def test_sasrec_beats_popularity_on_next_item(fitted: tuple[SASRecRanker, pd.DataFrame]) -> None:
    ranker, data = fitted
    histories = [
        g.loc[g["split"] != "test", "item_id"].tolist() for _, g in data.groupby("user_id")
    ]
    sasrec_recall, _ = next_item_recall(ranker.scores(histories), data)
    train = data[data["split"] == "train"]
    popularity_recall, _ = next_item_recall(
        PopularityRanker(ITEMS).fit(train).scores(len(histories)), data
    )
    assert sasrec_recall >= popularity_recall + 0.5, (sasrec_recall, popularity_recall)
    assert ranker.best_epoch is not None and ranker.history[-1]["epoch"] == len(ranker.history)
    assert {"loss", "valid_ndcg", "valid_recall"} <= set(ranker.history[0])


def test_sasrec_scores_shape_and_unseen_items(fitted: tuple[SASRecRanker, pd.DataFrame]) -> None:
    ranker, _ = fitted
    scores = ranker.scores([["i3", "i4"], [], ["not-an-item", "i7"]])
    assert scores.shape == (3, N_ITEMS) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    unseen = scores[0].copy()
    unseen[[3, 4]] = -np.inf  # the protocol excludes the history (tied embeddings score it high)
    assert unseen.argmax() == ITEMS.index("i5")
    # An item outside the catalogue is skipped: the history reads as just ["i7"].
    np.testing.assert_allclose(scores[2], ranker.scores([["i7"]])[0], rtol=1e-5, atol=1e-6)


def test_sasrec_save_load_gives_identical_scores(
    fitted: tuple[SASRecRanker, pd.DataFrame], tmp_path: Path
) -> None:
    ranker, _ = fitted
    histories = [["i1", "i2", "i3"], ["i40"] * 20, []]
    ranker.save(tmp_path / "sasrec")
    loaded = SASRecRanker.load(tmp_path / "sasrec")
    np.testing.assert_array_equal(loaded.scores(histories), ranker.scores(histories))
    assert loaded.item_ids == ITEMS and loaded.best_epoch == ranker.best_epoch
    with pytest.raises(BaselineError, match="no saved SASRec"):
        SASRecRanker.load(tmp_path / "missing")


def test_sasrec_is_deterministic_given_the_seed() -> None:
    data = ordered_interactions(n_users=40)
    quick = SASRecParams(**{**TINY.__dict__, "max_epochs": 2})
    first = SASRecRanker(ITEMS, quick).fit(data, progress=False)
    second = SASRecRanker(ITEMS, quick).fit(data, progress=False)
    np.testing.assert_array_equal(first.scores([["i1", "i2"]]), second.scores([["i1", "i2"]]))
    assert first.history == second.history


def test_training_windows_cover_every_next_item_pair() -> None:
    inputs, targets = training_windows([[0, 1, 2, 3, 4], [7]], max_len=3)
    # 4 pairs cut from the end: (1,2,3)->(2,3,4) and (0)->(1); the 1-item sequence gives none.
    np.testing.assert_array_equal(inputs, [[2, 3, 4], [1, 0, 0]])
    np.testing.assert_array_equal(targets, [[2, 3, 4], [1, -100, -100]])


def test_sasrec_rejects_bad_params_and_input() -> None:
    with pytest.raises(BaselineError, match="divisible"):
        SASRecParams(hidden_size=30, num_heads=4)
    with pytest.raises(BaselineError, match="split"):
        SASRecRanker(ITEMS, TINY).fit(pd.DataFrame({"user_id": ["u"], "item_id": ["i1"]}))
    with pytest.raises(RuntimeError, match="before fit"):
        SASRecRanker(ITEMS, TINY).scores([["i1"]])
