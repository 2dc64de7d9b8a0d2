"""SASRec (Kang & McAuley, ICDM 2018): the sequential-recommendation baseline of the evaluation.

Item embedding + learned positional embedding → layer norm, dropout → causal self-attention blocks
(post-norm, GELU feed-forward, as RecBole's SASRec) → the hidden state at a position scores every
item by a dot product with the (tied) item embeddings. Training uses the full cross-entropy over
the whole catalogue at every position (RecBole's ``loss_type: CE``), Adam, and early stopping on the
validation split with the standard full-ranking protocol (history = the user's train items, those
items excluded from the ranking); the best epoch's weights are restored.

Sequences are left-aligned (position 0 = the oldest item of the window, padding at the end), so
under the causal mask a real position never attends to padding and predicting from a history of
length ``n`` reads the hidden state at position ``n - 1`` — the same positions the training windows
use. A user's train sequence longer than ``max_len + 1`` is cut into windows from its end, so every
train target is predicted once per epoch.
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
from recfound.baselines.rankers import BaselineError, item_position
from recfound.metrics import ndcg_at_k, rank_of_targets, recall_at_k

log = logging.getLogger(__name__)

FILES = ("sasrec.safetensors", "sasrec.json")  # weights, params + ids + history
_IGNORE = -100  # cross-entropy target of a padding position


@dataclass(frozen=True)
class SASRecParams:
    """Size, regularisation and schedule of SASRec (defaults: ML-100K in minutes on a CPU)."""

    hidden_size: int = 64
    """Width of item/position embeddings and of every block."""
    num_layers: int = 2
    """Self-attention blocks."""
    num_heads: int = 2
    """Attention heads per block (must divide ``hidden_size``)."""
    inner_size: int = 256
    """Width of each block's feed-forward layer."""
    max_len: int = 50
    """Most recent items of a history the model reads (RecBole's MAX_ITEM_LIST_LENGTH)."""
    dropout: float = 0.2
    """Dropout on the embeddings, attention weights and block outputs."""
    learning_rate: float = 2e-3
    """Adam step size."""
    batch_size: int = 128
    """Training windows per step."""
    max_epochs: int = 200
    """Upper bound on passes over the training windows."""
    patience: int = 10
    """Stop after this many epochs without a better validation NDCG@``valid_k``."""
    valid_k: int = 10
    """Cut-off of the validation NDCG used for early stopping (Recall@k is logged beside it)."""
    seed: int = 0
    """Seeds initialisation, dropout and the order of training windows."""

    def __post_init__(self) -> None:
        check_counts(
            self, "SASRec", "hidden_size", "num_layers", "num_heads", "inner_size", "max_len"
        )
        check_counts(self, "SASRec", "batch_size", "max_epochs", "patience", "valid_k")
        if self.hidden_size % self.num_heads:
            raise BaselineError(
                f"SASRec hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise BaselineError(f"SASRec dropout must lie in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise BaselineError(f"SASRec learning_rate must be > 0, got {self.learning_rate}")


class SASRecNetwork(nn.Module):
    """The network: ``(batch, length)`` item tokens (column + 1; 0 = padding) → hidden states."""

    def __init__(self, n_items: int, params: SASRecParams) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, params.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(params.max_len, params.hidden_size)
        self.norm = nn.LayerNorm(params.hidden_size)
        self.dropout = nn.Dropout(params.dropout)
        block = nn.TransformerEncoderLayer(
            params.hidden_size,
            params.num_heads,
            params.inner_size,
            params.dropout,
            activation="gelu",
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(block, params.num_layers, enable_nested_tensor=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # RecBole's initialisation: N(0, 0.02) weights, zero biases, unit layer norms.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` tokens → ``(B, L, H)``; position ``t`` sees tokens ``0..t`` only."""
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        x = self.item_embedding(tokens) + self.position_embedding(positions)[None]
        x = self.dropout(self.norm(x))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        return self.encoder(x, mask=causal, is_causal=True)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., H)`` hidden states → ``(..., n_items)`` scores (tied item embeddings)."""
        return hidden @ self.item_embedding.weight[1:].T


def _chronological_sequences(
    interactions: pd.DataFrame, position: dict[str, int]
) -> dict[str, list[int]]:
    """User → item columns in time order (ties keep row order; unknown items dropped)."""
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions.columns]
    if missing:
        raise BaselineError(
            f"interactions lack column(s) {missing}; got {list(interactions.columns)}"
        )
    frame = interactions.assign(
        _column=interactions["item_id"].astype(str).map(position),
        _user=interactions["user_id"].astype(str),
    )
    frame = frame[frame["_column"].notna()]
    frame = frame.sort_values(["_user", "timestamp"], kind="mergesort")
    return {
        user: group.astype(np.int64).tolist()
        for user, group in frame.groupby("_user", sort=True)["_column"]
    }


def training_windows(sequences: Sequence[Sequence[int]], max_len: int) -> tuple[np.ndarray, ...]:
    """``(inputs, targets)``, each ``(n_windows, max_len)``: next-item pairs of every sequence.

    Inputs are item tokens (column + 1, 0 = padding at the end); targets are item columns, with
    ``-100`` (ignored by the loss) at padding. A sequence of ``T`` items gives ``T - 1`` pairs, cut
    into windows of ``max_len`` from the end (the oldest window may be shorter).
    """
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for sequence in sequences:
        items = np.asarray(sequence, dtype=np.int64)
        for end in range(len(items) - 1, 0, -max_len):
            start = max(0, end - max_len)
            window_in = np.zeros(max_len, dtype=np.int64)
            window_out = np.full(max_len, _IGNORE, dtype=np.int64)
            window_in[: end - start] = items[start:end] + 1
            window_out[: end - start] = items[start + 1 : end + 1]
            inputs.append(window_in)
            targets.append(window_out)
    if not inputs:
        empty = np.zeros((0, max_len), dtype=np.int64)
        return empty, empty.copy()
    return np.stack(inputs), np.stack(targets)


class SASRecRanker:
    """SASRec as a full-ranking scorer whose columns follow ``item_ids``.

    ``fit`` learns from the ``train`` rows of a split-interactions frame and early-stops on its
    ``valid`` rows; ``scores`` ranks the whole catalogue after each given history.
    """

    def __init__(self, item_ids: Sequence[str], params: SASRecParams | None = None) -> None:
        self.item_ids = [str(i) for i in item_ids]
        self._position = item_position(self.item_ids)
        self.params = params or SASRecParams()
        self.network: SASRecNetwork | None = None
        self.history: list[dict[str, float]] = []
        """Per epoch: ``epoch``, ``loss`` (mean train CE), ``valid_ndcg``, ``valid_recall``."""
        self.best_epoch: int | None = None

    # ------------------------------------------------------------------ training

    def fit(
        self,
        split_interactions: pd.DataFrame,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        progress: bool = True,
        device: torch.device | str = "cpu",
    ) -> SASRecRanker:
        """Train on ``split == "train"`` rows; early-stop on NDCG of the ``valid`` targets.

        ``split_interactions`` needs ``user_id``, ``item_id``, ``timestamp``, ``split``. Each
        epoch's figures go to :attr:`history` and to ``on_epoch`` (e.g. MLflow step metrics).
        Without valid rows, training runs ``max_epochs`` and keeps the last epoch.
        """
        if "split" not in split_interactions.columns:
            raise BaselineError(
                "SASRec needs a 'split' column (train/valid/test) to train and early-stop; got "
                f"{list(split_interactions.columns)}"
            )
        p = self.params
        split = split_interactions["split"].astype(str)
        train = _chronological_sequences(split_interactions[split == "train"], self._position)
        valid = _chronological_sequences(split_interactions[split == "valid"], self._position)
        inputs, targets = training_windows(list(train.values()), p.max_len)
        if len(inputs) == 0:
            raise BaselineError("SASRec found no user with two train interactions to learn from")
        valid_users = [u for u in sorted(valid) if u in train]
        valid_histories = [train[u] for u in valid_users]
        valid_targets = np.array([valid[u][0] for u in valid_users], dtype=np.int64)

        torch.manual_seed(p.seed)
        self.network = SASRecNetwork(len(self.item_ids), p).to(device)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=p.learning_rate)
        order = torch.Generator().manual_seed(p.seed)
        inputs_t, targets_t = torch.from_numpy(inputs), torch.from_numpy(targets)

        def run_epoch() -> dict[str, float]:
            record = {"loss": self._train_epoch(optimizer, inputs_t, targets_t, order)}
            if valid_users:
                ranks = self._ranks(valid_histories, valid_targets)
                record["valid_ndcg"] = ndcg_at_k(ranks, p.valid_k)
                record["valid_recall"] = recall_at_k(ranks, p.valid_k)
            return record

        higher_ndcg = ("valid_ndcg", True)
        self.history, self.best_epoch = fit_epochs(
            self.network, run_epoch, p, higher_ndcg, on_epoch, progress
        )
        self.network.eval()
        log.info(
            "SASRec: %d epochs, best epoch %d (valid NDCG@%d %.4f)",
            len(self.history),
            self.best_epoch,
            p.valid_k,
            self.history[self.best_epoch - 1].get("valid_ndcg", float("nan")),
        )
        return self

    def _train_epoch(
        self,
        optimizer: torch.optim.Optimizer,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        order: torch.Generator,
    ) -> float:
        """One pass over the windows in a seeded order; returns the mean loss per target."""
        assert self.network is not None
        self.network.train()
        total, count = 0.0, 0
        permutation = torch.randperm(len(inputs), generator=order)
        for start in range(0, len(inputs), self.params.batch_size):
            batch = permutation[start : start + self.params.batch_size]
            device = next(self.network.parameters()).device
            hidden = self.network(inputs[batch].to(device))
            logits = self.network.item_logits(hidden)
            target = targets[batch].to(device)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=_IGNORE
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = int((target != _IGNORE).sum())
            total += loss.item() * n
            count += n
        return total / max(count, 1)

    def _ranks(self, histories: Sequence[Sequence[int]], targets: np.ndarray) -> np.ndarray:
        """Full-ranking rank of each target after its history, the history's items excluded."""
        scores = self._column_scores(histories)
        return rank_of_targets(scores, targets, exclude=[sorted(set(h)) for h in histories])

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def _column_scores(
        self, histories: Sequence[Sequence[int]], batch_size: int = 256
    ) -> np.ndarray:
        if self.network is None:
            raise RuntimeError("SASRecRanker.scores called before fit or load")
        self.network.eval()
        max_len = self.params.max_len
        out = np.empty((len(histories), len(self.item_ids)), dtype=np.float64)
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            tokens = np.zeros((len(chunk), max_len), dtype=np.int64)
            last = np.zeros(len(chunk), dtype=np.int64)
            for row, history in enumerate(chunk):
                recent = np.asarray(history[-max_len:], dtype=np.int64)
                tokens[row, : len(recent)] = recent + 1
                last[row] = max(len(recent) - 1, 0)  # an empty history reads the padding slot
            device = next(self.network.parameters()).device
            hidden = self.network(torch.from_numpy(tokens).to(device))
            rows = torch.arange(len(chunk), device=device)
            final = hidden[rows, torch.from_numpy(last).to(device)]
            out[start : start + len(chunk)] = self.network.item_logits(final).double().cpu().numpy()
        return out

    def scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """``(len(histories), n_items)`` float64 scores; column ``j`` is ``item_ids[j]``.

        A history is the user's item ids in time order (oldest first); only the last ``max_len``
        are read and ids outside the index are skipped. Excluding already seen items is the
        caller's job (the evaluation protocol), as for the other rankers.
        """
        columns = [
            [self._position[str(i)] for i in history if str(i) in self._position]
            for history in histories
        ]
        return self._column_scores(columns)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Weights as safetensors + params, item index and training history as JSON (atomic)."""
        config = {
            "params": dataclasses.asdict(self.params),
            "item_ids": self.item_ids,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }
        return save_trained(directory, self.network, FILES, config, "SASRecRanker")

    @classmethod
    def load(cls, directory: str | Path) -> SASRecRanker:
        """The ranker :meth:`save` wrote to ``directory``."""
        saved, weights = read_trained(directory, FILES, "SASRec")
        ranker = cls(saved["item_ids"], SASRecParams(**saved["params"]))
        ranker.network = SASRecNetwork(len(ranker.item_ids), ranker.params)
        ranker.network.load_state_dict(weights)
        ranker.network.eval()
        ranker.best_epoch = saved.get("best_epoch")
        ranker.history = saved.get("history", [])
        return ranker
