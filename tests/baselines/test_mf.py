"""Biased MF recovers synthetic low-rank ratings; unknown ids fall back to the biases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recfound.baselines.mf import BiasedMF, BiasedMFParams
from recfound.baselines.rankers import BaselineError
from recfound.stages.baselines import torch_threads

TINY = BiasedMFParams(
    factors=4, l2=0.01, learning_rate=0.02, batch_size=256, max_epochs=60, patience=5, seed=0
)


def synthetic_ratings(n_users: int = 120, n_items: int = 80, seed: int = 0) -> pd.DataFrame:
    """``3.5 + b_u + b_i + p_u·q_i + noise`` (rank 3) on 40% of the pairs, split 80/10/10."""
    rng = np.random.default_rng(seed)
    user_bias, item_bias = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    p, q = rng.normal(0, 0.6, (n_users, 3)), rng.normal(0, 0.6, (n_items, 3))
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.4)
    rating = 3.5 + user_bias[users] + item_bias[items] + (p[users] * q[items]).sum(1)
    rating += rng.normal(0, 0.2, len(users))
    split = rng.choice(["train", "valid", "test"], size=len(users), p=[0.8, 0.1, 0.1])
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in items],
            "rating": rating,
            "split": split,
        }
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[BiasedMF, pd.DataFrame]:
    data = synthetic_ratings()
    with torch_threads(1):
        model = BiasedMF(TINY).fit(
            data[data["split"] == "train"], data[data["split"] == "valid"], progress=False
        )
    return model, data


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_mf_beats_the_global_mean_on_test(fitted: tuple[BiasedMF, pd.DataFrame]) -> None:
    model, data = fitted
    train, test = data[data["split"] == "train"], data[data["split"] == "test"]
    predicted = model.predict(test["user_id"].tolist(), test["item_id"].tolist())
    mf_rmse = _rmse(predicted, test["rating"])
    mean_rmse = _rmse(np.full(len(test), train["rating"].mean()), test["rating"])
    assert mf_rmse < 0.6 * mean_rmse, (mf_rmse, mean_rmse)
    assert model.history[model.best_epoch - 1]["valid_rmse"] == min(
        r["valid_rmse"] for r in model.history
    )


def test_unknown_users_and_items_fall_back_to_biases(
    fitted: tuple[BiasedMF, pd.DataFrame],
) -> None:
    model, _ = fitted
    net = model.network
    mean = net.global_mean.item()
    item_bias = net.item_bias[model.item_ids.index("i5")].item()
    user_bias = net.user_bias[model.user_ids.index("u7")].item()
    predicted = model.predict(["nobody", "u7", "nobody"], ["i5", "no-item", "no-item"])
    np.testing.assert_allclose(
        predicted, [mean + item_bias, mean + user_bias, mean], rtol=1e-6, atol=1e-6
    )


def test_mf_save_load_predicts_the_same(
    fitted: tuple[BiasedMF, pd.DataFrame], tmp_path: Path
) -> None:
    model, data = fitted
    users, items = data["user_id"].tolist()[:50] + ["x"], data["item_id"].tolist()[:50] + ["y"]
    model.save(tmp_path / "mf")
    loaded = BiasedMF.load(tmp_path / "mf")
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
    assert loaded.rating_range == model.rating_range


def test_mf_rejects_bad_input() -> None:
    with pytest.raises(BaselineError, match="rating"):
        BiasedMF(TINY).fit(pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}))
    with pytest.raises(BaselineError, match="l2"):
        BiasedMFParams(l2=-1.0)
    with pytest.raises(RuntimeError, match="before fit"):
        BiasedMF(TINY).predict(["u"], ["i"])
