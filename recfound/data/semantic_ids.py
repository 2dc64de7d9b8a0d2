"""Semantic identifiers (the TIGER / LC-Rec line): a few tokens per item instead of one.

An atomic identifier adds one vocabulary row per item (10^6 items × hidden 4,096 = 4B parameters
per embedding matrix). A semantic identifier is a short code from **residual k-means** of item
embeddings: level 1 clusters the embeddings into ``codebook_size`` centroids, level 2 clusters
what is left after subtracting each item's level-1 centroid, and so on. Items with similar
embeddings share prefixes, so the model can learn "people who watched X watch something in
cluster 17" once for the whole cluster. ``levels × codebook_size`` new tokens cover the catalogue
(3 × 256 = 768 rows for any number of items), plus one **suffix** level that tells apart the items
whose codes collide (the suffix is the item's position within its collision group; its vocabulary
is as large as the largest group).

Which embeddings, in the pipeline (``tasks.item_ids: semantic``): **collaborative** vectors of
the training interactions (:func:`collaborative_item_vectors`, a truncated SVD of the
normalised item × user matrix). The codes must exist when ``build_tasks`` writes the prompts,
before any model is pretrained, so a content embedding from our own backbone is not available
then (TIGER and LC-Rec use a separately trained text encoder; we ship none); and next-item
prediction is about behaviour: items the same users choose share prefixes, so a prefix is a
"taste cluster" the model can learn once. Only items of training interactions get a code, as
they get an atomic token (cold items stay title-only). ``bench/recommend_scale.py`` quantises
synthetic embeddings of 10^6 items to count the parameters the codes add at that scale.

Generation must only emit codes that exist: :func:`constrained_beam_search` walks a
:class:`CodeTrie` level by level and keeps, at each step, only continuations the trie allows, so
every finished beam is an item. With a beam as wide as the catalogue it keeps every prefix and
equals exhaustive scoring (tests/data/test_semantic_ids.py). Evaluation and ``recommend`` score
a code by the sum of its tokens' log-probabilities after the prompt
(:meth:`recfound.model.recmodel.RecModel.catalogue_scores`); on catalogues the size of ml-100k
they score every code exhaustively in one tree-masked forward pass per batch of prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds

# Scores of one decoding step: given the prefixes (each a tuple of the code tokens so far, one
# per beam), the log-probabilities of every token of the next level, ``(len(prefixes), vocab)``.
StepScores = Callable[[Sequence[tuple[int, ...]]], np.ndarray]


@dataclass(frozen=True)
class SemanticCodes:
    """``codes`` ``(items, levels + 1)``: the residual k-means codes, then the suffix."""

    codes: np.ndarray
    codebooks: list[np.ndarray]  # per level, (codebook_size, dim) centroids
    level_sizes: tuple[int, ...]  # vocabulary of each position (suffix last)

    @property
    def tokens_added(self) -> int:
        """New vocabulary rows: the codebooks' tokens and the suffix tokens."""
        return int(sum(self.level_sizes))

    def token_names(self, item: int) -> list[str]:
        """``['<item_a3>', '<item_b17>', '<item_c5>', '<item_s0>']``: one token per position
        (written like atomic identifiers, so the corpus and the field cleaning treat them alike)."""
        names = [chr(ord("a") + n) for n in range(len(self.level_sizes) - 1)] + ["s"]
        return [f"<item_{p}{int(c)}>" for p, c in zip(names, self.codes[item], strict=True)]

    def identifier(self, item: int) -> str:
        """The item's identifier as prompts write it: its tokens without spaces."""
        return "".join(self.token_names(item))

    def vocabulary(self) -> list[str]:
        """Every token a code may use (what the backbone's vocabulary gains)."""
        names = [chr(ord("a") + n) for n in range(len(self.level_sizes) - 1)] + ["s"]
        return [
            f"<item_{p}{c}>"
            for p, size in zip(names, self.level_sizes, strict=True)
            for c in range(size)
        ]


def collaborative_item_vectors(
    interactions: pd.DataFrame, item_ids: Sequence[str], dim: int = 32, seed: int = 0
) -> np.ndarray:
    """``(len(item_ids), dim)`` unit vectors of items from who interacted with them: the top
    singular vectors (scaled by their singular values) of the item × user matrix normalised
    ``D_items^-1/2 · A · D_users^-1/2`` (popular items and heavy users do not dominate).

    ``interactions`` holds ``user_id`` and ``item_id`` (training interactions only: the codes
    must not see held-out targets); ``dim`` is capped below the matrix's smaller side."""
    index = {str(i): n for n, i in enumerate(item_ids)}
    frame = interactions[interactions["item_id"].astype(str).isin(index)]
    users = {u: n for n, u in enumerate(sorted(frame["user_id"].astype(str).unique()))}
    rows = frame["item_id"].astype(str).map(index).to_numpy()
    cols = frame["user_id"].astype(str).map(users).to_numpy()
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(index), max(len(users), 1)))
    matrix.data[:] = 1.0  # a repeated interaction counts once
    item_degree = np.asarray(matrix.sum(1)).ravel()
    user_degree = np.asarray(matrix.sum(0)).ravel()
    scale_items = 1.0 / np.sqrt(np.maximum(item_degree, 1.0))
    scale_users = 1.0 / np.sqrt(np.maximum(user_degree, 1.0))
    normalised = csr_matrix(matrix.multiply(scale_items[:, None]).multiply(scale_users[None, :]))
    k = max(1, min(dim, min(normalised.shape) - 1))
    start = np.random.default_rng(seed).standard_normal(min(normalised.shape))
    left, values, _ = svds(normalised, k=k, v0=start)
    order = np.argsort(-values)
    vectors = left[:, order] * values[order]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def residual_kmeans(
    embeddings: np.ndarray,
    levels: int = 3,
    codebook_size: int = 256,
    seed: int = 0,
    iterations: int = 20,
    max_train: int = 100_000,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(codes (n, levels), codebooks)``: k-means per level on what the earlier levels left
    (faiss k-means, seeded; at most ``max_train`` points train each level)."""
    residual = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
    n, dim = residual.shape
    size = min(codebook_size, n)
    codes = np.zeros((n, levels), dtype=np.int64)
    codebooks = []
    rng = np.random.default_rng(seed)
    for level in range(levels):
        kmeans = faiss.Kmeans(dim, size, niter=iterations, seed=seed + level, verbose=False)
        rows = rng.choice(n, size=min(n, max_train), replace=False) if n > max_train else None
        kmeans.train(residual if rows is None else residual[np.sort(rows)])
        _, assigned = kmeans.index.search(residual, 1)
        codes[:, level] = assigned[:, 0]
        centroids = kmeans.centroids.copy()
        residual -= centroids[assigned[:, 0]]
        codebooks.append(centroids)
    return codes, codebooks


def with_suffix(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes made unique by a last position: the item's rank within its group of items with the
    same code (0 for the first). Returns the codes and the suffix vocabulary (the largest
    group's size)."""
    codes = np.asarray(codes, dtype=np.int64)
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    suffix = np.empty(len(codes), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = np.arange(len(codes)) - np.repeat(starts, counts)
    suffix[order] = ranks
    return np.column_stack([codes, suffix]), int(counts.max()) if len(counts) else 0


def semantic_codes(
    embeddings: np.ndarray, levels: int = 3, codebook_size: int = 256, seed: int = 0
) -> SemanticCodes:
    """Unique semantic identifiers of the items whose embeddings are the rows given."""
    codes, codebooks = residual_kmeans(embeddings, levels, codebook_size, seed)
    unique, suffix_size = with_suffix(codes)
    sizes = tuple(len(c) for c in codebooks) + (suffix_size,)
    return SemanticCodes(unique, codebooks, sizes)


class CodeTrie:
    """Every valid code as a path from the root; ``children(prefix)`` are the tokens that may
    follow ``prefix``; a full-length prefix ``item(prefix)`` is one item."""

    def __init__(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        self.depth = codes.shape[1]
        self._children: dict[tuple[int, ...], np.ndarray] = {}
        self._items: dict[tuple[int, ...], int] = {}
        nodes: dict[tuple[int, ...], set[int]] = {}
        for item, code in enumerate(map(tuple, codes.tolist())):
            if code in self._items:
                raise ValueError(f"items {self._items[code]} and {item} share the code {code}")
            self._items[code] = item
            for level in range(self.depth):
                nodes.setdefault(code[:level], set()).add(code[level])
        self._children = {p: np.array(sorted(t), dtype=np.int64) for p, t in nodes.items()}

    def children(self, prefix: tuple[int, ...]) -> np.ndarray:
        return self._children.get(prefix, np.empty(0, dtype=np.int64))

    def item(self, code: tuple[int, ...]) -> int | None:
        return self._items.get(tuple(code))

    def __len__(self) -> int:
        return len(self._items)


def constrained_beam_search(
    step_scores: StepScores, trie: CodeTrie, beam: int
) -> list[tuple[int, float]]:
    """``(item, log-probability)`` of up to ``beam`` items, best first: beam search over the
    code positions that expands a prefix only by the tokens the trie allows after it (the
    others get no probability mass), so every result is a valid code. Ties keep the smaller
    code first."""
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for _ in range(trie.depth):
        scores = np.asarray(step_scores([p for p, _ in beams]), dtype=np.float64)
        candidates = []
        for row, (prefix, total) in enumerate(beams):
            for token in trie.children(prefix):
                candidates.append((prefix + (int(token),), total + float(scores[row, token])))
        candidates.sort(key=lambda c: (-c[1], c[0]))
        beams = candidates[:beam]
    return [(trie.item(code), score) for code, score in beams]


def exhaustive_scores(step_scores: StepScores, codes: np.ndarray) -> np.ndarray:
    """Every item's code log-probability (the sum of its tokens' step scores), one step call
    per position over all distinct prefixes: what beam search approximates."""
    codes = np.asarray(codes, dtype=np.int64)
    totals = np.zeros(len(codes), dtype=np.float64)
    for level in range(codes.shape[1]):
        prefixes = sorted({tuple(c[:level]) for c in codes.tolist()})
        row_of = {p: n for n, p in enumerate(prefixes)}
        scores = np.asarray(step_scores(prefixes), dtype=np.float64)
        rows = [row_of[tuple(c[:level])] for c in codes.tolist()]
        totals += scores[rows, codes[:, level]]
    return totals
