"""Non-learned baselines scored on the same split and item index as the model.

Every ranker produces a dense ``(n_queries, n_items)`` float64 score matrix whose columns follow the
``item_ids`` (or ``item_texts``) order given to its constructor, so it plugs straight into
:func:`recfound.metrics.rank_of_targets`:

- :class:`PopularityRanker`: training interaction counts, the same for every query;
- :class:`ItemKNNRanker`: RecBole's ItemKNN, top-``k`` item-item cosine of training co-occurrence
  (score it with the user's whole training history);
- :class:`BM25Ranker`: lexical BM25 (``bm25s``) of a text query against item texts.

The learned baselines (SASRec in :mod:`recfound.baselines.sasrec`, biased MF in
:mod:`recfound.baselines.mf`) are trained once per data version by the `baselines` stage;
:func:`recfound.baselines.store.load_baselines` reads them back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import bm25s
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recfound.errors import UserInputError

_WORD_PATTERN = re.compile(r"\w+", re.UNICODE)


class BaselineError(UserInputError):
    """Inputs a baseline cannot use (missing columns, duplicate item ids, ...)."""


def item_position(item_ids: Sequence[str]) -> dict[str, int]:
    """Map each item id to its column; duplicate ids would make columns ambiguous."""
    position: dict[str, int] = {}
    for column, item_id in enumerate(item_ids):
        key = str(item_id)
        if key in position:
            raise BaselineError(f"item id {key!r} appears twice in the item index")
        position[key] = column
    if not position:
        raise BaselineError("the item index is empty; pass at least one item id")
    return position


def _known_interactions(
    interactions: pd.DataFrame, position: dict[str, int]
) -> tuple[pd.Series, pd.Series]:
    """Users and item columns of the interactions whose item is in the index (others dropped)."""
    missing = [c for c in ("user_id", "item_id") if c not in interactions.columns]
    if missing:
        raise BaselineError(
            f"interactions lack column(s) {missing}; expected user_id and item_id, got "
            f"{list(interactions.columns)}"
        )
    columns = interactions["item_id"].astype(str).map(position)
    known = columns.notna()
    return interactions.loc[known, "user_id"].astype(str), columns[known].astype(np.int64)


class PopularityRanker:
    """Scores every item by its number of training interactions, identically for all queries."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = [str(i) for i in item_ids]
        self._position = item_position(self.item_ids)
        self._counts: np.ndarray | None = None

    def fit(self, train_interactions: pd.DataFrame) -> PopularityRanker:
        """Count interactions per item (columns ``user_id``, ``item_id``; unknown items dropped)."""
        _, columns = _known_interactions(train_interactions, self._position)
        self._counts = np.bincount(columns.to_numpy(), minlength=len(self.item_ids)).astype(
            np.float64
        )
        return self

    def scores(self, n_queries: int) -> np.ndarray:
        """``(n_queries, n_items)`` interaction counts, one identical row per query."""
        if self._counts is None:
            raise RuntimeError("PopularityRanker.scores called before fit")
        if n_queries < 0:
            raise BaselineError(f"n_queries must be non-negative, got {n_queries}")
        return np.tile(self._counts, (n_queries, 1))


class ItemKNNRanker:
    """Item-based collaborative filtering on training co-occurrence, as RecBole's ItemKNN.

    ``fit`` builds the binary user-item matrix ``X`` (users x items) from the training
    interactions and the item-item cosine similarity
    ``S[i, j] = (X^T X)[i, j] / (|x_i| |x_j| + shrink + 1e-6)`` with a zero diagonal. Like
    RecBole's ``ComputeSimilarity``, each target item ``j`` keeps only its ``k`` most similar items
    (column ``j`` of ``S``; ties broken by the lower column), so a history scores
    ``score[j] = sum_{h in history} S[h, j]``.

    Call :meth:`scores` with each user's *whole* training history (plus the valid item for the
    test target), not a truncated recent window: the model is a sum over every item the user has
    met, which is how RecBole evaluates it.
    """

    def __init__(self, item_ids: Sequence[str], k: int = 100, shrink: float = 0.0) -> None:
        if k < 1:
            raise BaselineError(f"ItemKNN k (neighbours per item) must be >= 1, got {k}")
        if shrink < 0:
            raise BaselineError(f"ItemKNN shrink must be >= 0, got {shrink}")
        self.item_ids = [str(i) for i in item_ids]
        self._position = item_position(self.item_ids)
        self.k = k
        self.shrink = shrink
        self._similarity: sp.csr_matrix | None = None

    def fit(self, train_interactions: pd.DataFrame) -> ItemKNNRanker:
        """Build the similarity from ``user_id``, ``item_id`` pairs (unknown items dropped)."""
        users, columns = _known_interactions(train_interactions, self._position)
        user_codes, _ = pd.factorize(users)
        n_users, n_items = int(user_codes.max(initial=-1)) + 1, len(self.item_ids)
        matrix = sp.csr_matrix(
            (np.ones(len(user_codes)), (user_codes, columns.to_numpy())), shape=(n_users, n_items)
        )
        matrix.data[:] = 1.0  # repeated interactions count once
        co_occurrence = (matrix.T @ matrix).tocoo()
        norms = np.sqrt(co_occurrence.diagonal())
        rows, cols = co_occurrence.row, co_occurrence.col
        values = co_occurrence.data / (norms[rows] * norms[cols] + self.shrink + 1e-6)
        values[rows == cols] = 0.0
        similarity = sp.csc_matrix((values, (rows, cols)), shape=(n_items, n_items))
        similarity.eliminate_zeros()
        self._similarity = self._top_k_per_column(similarity).tocsr()
        return self

    def _top_k_per_column(self, similarity: sp.csc_matrix) -> sp.csc_matrix:
        """Keep the ``k`` largest entries of every column (ties: lower row first)."""
        similarity.sort_indices()
        keep = np.ones(similarity.nnz, dtype=bool)
        for column in range(similarity.shape[1]):
            start, end = similarity.indptr[column], similarity.indptr[column + 1]
            if end - start > self.k:
                order = np.argsort(-similarity.data[start:end], kind="stable")
                keep[start + order[self.k :]] = False
        pruned = similarity.copy()
        pruned.data[~keep] = 0.0
        pruned.eliminate_zeros()
        return pruned

    def scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """``(len(histories), n_items)`` summed similarities to each history's items.

        A history is a sequence of item ids; ids outside the index are ignored, repeats count
        once.
        """
        if self._similarity is None:
            raise RuntimeError("ItemKNNRanker.scores called before fit")
        rows: list[int] = []
        cols: list[int] = []
        for row, history in enumerate(histories):
            known = {self._position[str(i)] for i in history if str(i) in self._position}
            rows.extend([row] * len(known))
            cols.extend(sorted(known))
        queries = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(histories), len(self.item_ids))
        )
        return np.asarray((queries @ self._similarity).todense(), dtype=np.float64)


def bm25_tokens(text: str) -> list[str]:
    """Lowercased word tokens (punctuation dropped), the BM25 vocabulary."""
    return _WORD_PATTERN.findall(text.lower())


class BM25Ranker:
    """BM25 (``bm25s``, Lucene variant) of text queries against a fixed list of item texts.

    Column ``j`` of :meth:`scores` is ``item_texts[j]``; both sides use :func:`bm25_tokens`.
    """

    def __init__(self, item_texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        if not item_texts:
            raise BaselineError("BM25 needs at least one item text")
        self.n_items = len(item_texts)
        self._retriever = bm25s.BM25(k1=k1, b=b)
        self._retriever.index([bm25_tokens(str(t)) for t in item_texts], show_progress=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), n_items)`` BM25 scores; a query with no indexed word scores 0."""
        out = np.zeros((len(queries), self.n_items), dtype=np.float64)
        vocabulary = self._retriever.vocab_dict
        for row, query in enumerate(queries):
            tokens = [t for t in bm25_tokens(str(query)) if t in vocabulary]
            if tokens:
                out[row] = self._retriever.get_scores(tokens)
        return out
