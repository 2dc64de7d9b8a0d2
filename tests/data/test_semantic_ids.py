"""Semantic identifiers: unique codes, trie-constrained beam search only emits valid codes, and
a beam as wide as the catalogue equals exhaustive scoring."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from recfound.data.semantic_ids import (
    CodeTrie,
    constrained_beam_search,
    exhaustive_scores,
    semantic_codes,
    with_suffix,
)


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    vectors = centres[rng.integers(0, 8, n)] + 0.2 * rng.standard_normal((n, dim))
    vectors[: n // 10] = vectors[n // 10 : 2 * (n // 10)]  # exact duplicates: codes collide
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def step_scores(vocab: int, seed: int):
    """Log-probabilities over ``vocab`` tokens that depend only on the prefix (a fake model)."""

    def scores(prefixes):
        rows = []
        for prefix in prefixes:
            rng = np.random.default_rng([seed, zlib.crc32(repr(prefix).encode())])
            logits = rng.standard_normal(vocab) * 2
            rows.append(logits - np.log(np.exp(logits).sum()))
        return np.stack(rows)

    return scores


def test_every_item_gets_a_unique_code() -> None:
    codes = semantic_codes(clustered(2000), levels=2, codebook_size=8, seed=1)
    assert codes.codes.shape == (2000, 3)
    assert len({tuple(c) for c in codes.codes.tolist()}) == 2000
    assert codes.level_sizes[:2] == (8, 8) and codes.level_sizes[2] >= 2  # duplicates collided
    assert codes.tokens_added == sum(codes.level_sizes) < 2000
    names = codes.token_names(0)
    assert names[0].startswith("<item_a") and names[-1].startswith("<item_s")
    assert set(names) <= set(codes.vocabulary()) and len(codes.vocabulary()) == codes.tokens_added


def test_suffix_numbers_each_collision_group() -> None:
    unique, size = with_suffix(np.array([[1, 2], [1, 2], [0, 0], [1, 2]]))
    assert unique[:, -1].tolist() == [0, 1, 0, 2] and size == 3


@pytest.mark.parametrize("beam", [1, 3, 10])
def test_constrained_beam_search_never_emits_an_invalid_code(beam: int) -> None:
    codes = semantic_codes(clustered(300, seed=2), levels=3, codebook_size=6, seed=2).codes
    trie = CodeTrie(codes)
    vocab = int(codes.max()) + 1
    for seed in range(5):
        found = constrained_beam_search(step_scores(vocab, seed), trie, beam)
        assert len(found) == beam
        assert all(item is not None and 0 <= item < len(codes) for item, _ in found)
        assert len({item for item, _ in found}) == beam


def test_a_beam_as_wide_as_the_catalogue_equals_exhaustive_scoring() -> None:
    codes = semantic_codes(clustered(60, seed=3), levels=2, codebook_size=4, seed=3).codes
    trie = CodeTrie(codes)
    scorer = step_scores(int(codes.max()) + 1, 7)
    found = constrained_beam_search(scorer, trie, beam=len(codes))
    exhaustive = exhaustive_scores(scorer, codes)
    order = sorted(range(len(codes)), key=lambda i: (-exhaustive[i], tuple(codes[i])))
    assert [item for item, _ in found] == order
    np.testing.assert_allclose([s for _, s in found], exhaustive[order], atol=1e-9)
    narrow = constrained_beam_search(scorer, trie, beam=5)
    assert [i for i, _ in narrow] != [] and all(i in order for i, _ in narrow)


def test_trie_refuses_duplicate_codes() -> None:
    with pytest.raises(ValueError, match="share the code"):
        CodeTrie(np.array([[0, 1], [0, 1]]))
