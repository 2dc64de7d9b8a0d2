"""Semantic identifiers (several tokens per item) are scored exhaustively in one tree-masked
pass: every item's score equals the summed log-probabilities of its code tokens read one plain
causal pass at a time, and items without a code are never ranked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recfound.data.semantic_ids import semantic_codes
from recfound.model.backbone import load_backbone, save_backbone
from recfound.model.build import build_rec_model
from recfound.model.code_tree import CodeTreeTooLarge, build_code_tree, rows_per_pass
from tests.train.tiny import ADAPTER, tiny_backbone


def _codes():
    vectors = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    return semantic_codes(vectors, levels=2, codebook_size=4, seed=0)


def _perturbed_model(tmp_path: Path, vocabulary: list[str]):
    texts = ["Which movie will this user choose next? History, oldest first:"] * 30
    model, tokenizer = tiny_backbone(texts, item_tokens=vocabulary, vocab_size=300)
    save_backbone(model, tokenizer, tmp_path / "b")
    base, tokenizer = load_backbone(tmp_path / "b")
    rec = build_rec_model(base, tokenizer, ADAPTER, {"next": "generative"}, seed=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the weights off their initial values so tokens differ
        for p in rec.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return rec


def test_tree_has_one_node_per_distinct_proper_prefix() -> None:
    codes = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7], [4, 6, 7]])
    tree = build_code_tree(codes)
    # prefixes (5), (4), (5,6), (5,9), (4,6)
    assert tree.node_tokens.tolist() == [5, 4, 6, 9, 6]
    assert tree.node_depth.tolist() == [1, 1, 2, 2, 2]
    assert tree.reads.tolist() == [[-1, 0, 2], [-1, 0, 2], [-1, 0, 3], [-1, 1, 4]]
    assert tree.visible[4].tolist() == [False, True, False, False, True]


def test_tree_scores_equal_scoring_each_code_alone(tmp_path: Path) -> None:
    codes = _codes()
    rec = _perturbed_model(tmp_path, codes.vocabulary())
    identifiers = [codes.identifier(i) for i in range(len(codes.codes))] + [""]
    prompts = [
        f"Which movie will this user choose next? History, oldest first: {identifiers[3]} "
        f"{identifiers[17]}",
        f"Which movie? {identifiers[1]}",
    ]
    fast = rec.catalogue_scores(prompts, identifiers, "next", batch_size=8)
    assert fast.shape == (2, len(identifiers))
    assert torch.isinf(fast[:, -1]).all()  # no identifier: never ranked
    answers = identifiers[:-1]
    for row, prompt in enumerate(prompts):
        picked, mask = rec.answer_token_logprobs([prompt] * len(answers), answers, "next")
        # answer tokens are the code's tokens and EOS: the code is all but the last
        depth = codes.codes.shape[1]
        assert (mask.sum(-1) == depth + 1).all()
        brute = torch.stack([picked[n][mask[n]][:depth].sum() for n in range(len(answers))]).float()
        torch.testing.assert_close(fast[row, :-1], brute, rtol=1e-4, atol=1e-4)


def test_identifiers_with_an_unknown_token_are_reported(tmp_path: Path) -> None:
    codes = _codes()
    rec = _perturbed_model(tmp_path, codes.vocabulary())
    identifiers = [codes.identifier(i) for i in range(5)]
    assert rec.unknown_identifiers(identifiers) == 0
    assert rec.unknown_identifiers([*identifiers, "<item_a99><item_b0><item_s0>", ""]) == 1
    scores = rec.catalogue_scores(
        ["History:"], [*identifiers, "<item_a99><item_b0><item_s0>"], "next"
    )
    assert torch.isinf(scores[0, -1]) and torch.isfinite(scores[0, :-1]).all()


def test_too_many_prefixes_is_a_clear_error_and_passes_stay_small(monkeypatch) -> None:
    codes = torch.tensor([[a, b, 0] for a in range(10) for b in range(10)])
    tree = build_code_tree(codes)  # 10 + 100 nodes
    assert rows_per_pass(tree, vocab=1000, batch_size=32) == 32
    monkeypatch.setattr("recfound.model.code_tree.MAX_LOGPROB_ENTRIES", 111 * 1000 * 4)
    assert rows_per_pass(tree, vocab=1000, batch_size=32) == 4
    monkeypatch.setattr("recfound.model.code_tree.MAX_NODES", 100)
    with pytest.raises(CodeTreeTooLarge, match="beam search is not wired"):
        build_code_tree(codes)
