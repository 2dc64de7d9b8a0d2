"""Biased matrix factorisation (Koren, Bell & Volinsky 2009): the rating-prediction baseline.

``r̂(u, i) = μ + b_u + b_i + p_u · q_i``, fitted to the train ratings by mini-batch Adam on the
squared error with an L2 penalty on the parameters a batch touches, early-stopped on the validation
RMSE (the best epoch's parameters are kept). A user or item never seen in training has no learned
bias or factors, so its prediction falls back to ``μ + b_i`` / ``μ + b_u`` / ``μ``. Predictions
are clipped to the range of the training ratings.

The evaluation uses it for ``rating_prediction`` (RMSE/MAE; the rating class closest to the
prediction for F1) and ``ctr_prediction`` (the predicted rating as the score of "like", for AUC).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from recfound.baselines.fitting import check_counts, fit_epochs, read_trained, save_trained
from recfound.baselines.rankers import BaselineError

log = logging.getLogger(__name__)

FILES = ("mf.safetensors", "mf.json")  # weights, params + ids + history


@dataclass(frozen=True)
class BiasedMFParams:
    """Size, regularisation and training schedule of the biased MF."""

    factors: int = 32
    """Dimension of the user and item factors ``p_u``, ``q_i``."""
    l2: float = 0.1
    """Weight of the L2 penalty on the biases and factors of each batch's users and items."""
    learning_rate: float = 0.005
    """Adam step size."""
    batch_size: int = 1024
    """Ratings per step."""
    max_epochs: int = 100
    """Upper bound on passes over the train ratings."""
    patience: int = 5
    """Stop after this many epochs without a lower validation RMSE."""
    seed: int = 0
    """Seeds initialisation and the order of ratings."""

    def __post_init__(self) -> None:
        check_counts(self, "MF", "factors", "batch_size", "max_epochs", "patience")
        if self.l2 < 0:
            raise BaselineError(f"MF l2 must be >= 0, got {self.l2}")
        if self.learning_rate <= 0:
            raise BaselineError(f"MF learning_rate must be > 0, got {self.learning_rate}")


class _BiasedMFNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, mean: float) -> None:
        super().__init__()
        self.global_mean = nn.Parameter(torch.tensor(float(mean)))
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.user_factors = nn.Parameter(0.01 * torch.randn(n_users, factors))
        self.item_factors = nn.Parameter(0.01 * torch.randn(n_items, factors))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors[users] * self.item_factors[items]).sum(-1)
        return self.global_mean + self.user_bias[users] + self.item_bias[items] + dot

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``b_u² + b_i² + |p_u|² + |q_i|²``."""
        return (
            self.user_bias[users] ** 2
            + self.item_bias[items] ** 2
            + (self.user_factors[users] ** 2).sum(-1)
            + (self.item_factors[items] ** 2).sum(-1)
        ).mean()


def _ratings(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in ("user_id", "item_id", "rating") if c not in frame.columns]
    if missing:
        raise BaselineError(f"{what} ratings lack column(s) {missing}; got {list(frame.columns)}")
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str).to_numpy(),
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "rating": pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64),
        }
    )
    if out["rating"].isna().any():
        raise BaselineError(f"{what} ratings hold missing or non-numeric values")
    return out


class BiasedMF:
    """``μ + b_u + b_i + p_u·q_i`` on the train ratings; :meth:`predict` takes ids."""

    def __init__(self, params: BiasedMFParams | None = None) -> None:
        self.params = params or BiasedMFParams()
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.rating_range: tuple[float, float] = (-np.inf, np.inf)
        self.network: _BiasedMFNetwork | None = None
        self.history: list[dict[str, float]] = []
        """Per epoch: ``epoch``, ``loss`` (train MSE + penalty), ``valid_rmse`` when validated."""
        self.best_epoch: int | None = None

    def fit(
        self,
        train: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        progress: bool = True,
    ) -> BiasedMF:
        """Fit to ``train`` (``user_id``, ``item_id``, ``rating``); early-stop on ``valid``'s RMSE.

        Without ``valid`` (or with an empty one), training runs ``max_epochs`` and keeps the last.
        """
        p = self.params
        ratings = _ratings(train, "train")
        if ratings.empty:
            raise BaselineError("MF needs at least one train rating")
        check = _ratings(valid, "valid") if valid is not None and len(valid) else None
        self.user_ids = sorted(ratings["user_id"].unique())
        self.item_ids = sorted(ratings["item_id"].unique())
        self.rating_range = (float(ratings["rating"].min()), float(ratings["rating"].max()))
        users = torch.from_numpy(self._codes(ratings["user_id"], self.user_ids))
        items = torch.from_numpy(self._codes(ratings["item_id"], self.item_ids))
        targets = torch.from_numpy(ratings["rating"].to_numpy(np.float32))

        torch.manual_seed(p.seed)
        self.network = _BiasedMFNetwork(
            len(self.user_ids), len(self.item_ids), p.factors, float(ratings["rating"].mean())
        )
        network = self.network
        optimizer = torch.optim.Adam(network.parameters(), lr=p.learning_rate)
        order = torch.Generator().manual_seed(p.seed)

        def run_epoch() -> dict[str, float]:
            network.train()
            total = 0.0
            permutation = torch.randperm(len(targets), generator=order)
            for start in range(0, len(targets), p.batch_size):
                batch = permutation[start : start + p.batch_size]
                u, i = users[batch], items[batch]
                error = network(u, i) - targets[batch]
                loss = (error**2).mean() + p.l2 * network.penalty(u, i)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            record = {"loss": total / len(targets)}
            if check is not None:
                predicted = self.predict(check["user_id"], check["item_id"])
                record["valid_rmse"] = float(
                    np.sqrt(np.mean((predicted - check["rating"].to_numpy()) ** 2))
                )
            return record

        lower_rmse = ("valid_rmse", False)
        self.history, self.best_epoch = fit_epochs(
            network, run_epoch, p, lower_rmse, on_epoch, progress
        )
        log.info(
            "MF: %d epochs, best epoch %d (valid RMSE %.4f)",
            len(self.history),
            self.best_epoch,
            self.history[self.best_epoch - 1].get("valid_rmse", float("nan")),
        )
        return self

    @staticmethod
    def _codes(ids: pd.Series | Sequence[str], known: Sequence[str]) -> np.ndarray:
        """Position of each id in ``known``; ``-1`` for an id never trained on."""
        index = {key: code for code, key in enumerate(known)}
        return np.fromiter((index.get(str(i), -1) for i in ids), dtype=np.int64, count=len(ids))

    @torch.no_grad()
    def predict(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """``(n,)`` float64 predicted ratings of the pairs ``(user_ids[k], item_ids[k])``.

        Unknown users contribute no bias and no factors, unknown items likewise: the prediction
        falls back to ``μ + b_i``, ``μ + b_u`` or ``μ``. Clipped to the training rating range.
        """
        if self.network is None:
            raise RuntimeError("BiasedMF.predict called before fit or load")
        if len(user_ids) != len(item_ids):
            raise BaselineError(
                f"predict needs one item per user, got {len(user_ids)} users and "
                f"{len(item_ids)} items"
            )
        net = self.network
        users = torch.from_numpy(self._codes(user_ids, self.user_ids))
        items = torch.from_numpy(self._codes(item_ids, self.item_ids))
        known_user, known_item = users >= 0, items >= 0
        u, i = users.clamp(min=0), items.clamp(min=0)
        user_bias = torch.where(known_user, net.user_bias[u], 0.0)
        item_bias = torch.where(known_item, net.item_bias[i], 0.0)
        dot = (net.user_factors[u] * net.item_factors[i]).sum(-1)
        dot = torch.where(known_user & known_item, dot, 0.0)
        predicted = (net.global_mean + user_bias + item_bias + dot).double().numpy()
        return np.clip(predicted, *self.rating_range)

    def save(self, directory: str | Path) -> Path:
        """Parameters as safetensors + params, id lists and training history as JSON (atomic)."""
        config = {
            "params": dataclasses.asdict(self.params),
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "rating_range": list(self.rating_range),
            "best_epoch": self.best_epoch,
            "history": self.history,
        }
        return save_trained(directory, self.network, FILES, config, "BiasedMF")

    @classmethod
    def load(cls, directory: str | Path) -> BiasedMF:
        """The model :meth:`save` wrote to ``directory``."""
        saved, weights = read_trained(directory, FILES, "MF")
        model = cls(BiasedMFParams(**saved["params"]))
        model.user_ids, model.item_ids = saved["user_ids"], saved["item_ids"]
        model.rating_range = (float(saved["rating_range"][0]), float(saved["rating_range"][1]))
        model.network = _BiasedMFNetwork(
            len(model.user_ids), len(model.item_ids), model.params.factors, 0.0
        )
        model.network.load_state_dict(weights)
        model.best_epoch = saved.get("best_epoch")
        model.history = saved.get("history", [])
        return model
