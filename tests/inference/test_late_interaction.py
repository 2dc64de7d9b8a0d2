"""Late interaction scores candidates like RecModel.score: exactly at split 0, and the layer-by-
layer runner is transformers' own Llama forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recfound.inference.decoder import DecoderSteps
from recfound.inference.late_interaction import LateInteractionScorer
from recfound.model.bundle import load_bundle
from recfound.model.folded import fold_rec_model
from recfound.model.tmole import TaskSelectionError

PROMPTS = [
    "History: Toy Story (1995). Choose one:",
    "Which one?",
]
CANDIDATES = [
    ["GoldenEye (1995)", "Jumanji (1995)", "Casino (1995)"],
    ["Heat (1995)", "Sabrina (1995) and a much longer title than the others"],
]


@pytest.fixture(scope="module")
def folded(tiny_bundle: tuple[Path, Path]):
    backbone, bundle = tiny_bundle
    return fold_rec_model(load_bundle(backbone, bundle), "genre")


def test_decoder_steps_equal_transformers_forward(folded) -> None:
    batch = folded._encode(["Toy Story (1995)", "a longer text, padded on the right side"])
    steps = DecoderSteps(folded.model)
    hidden, _ = steps.run(batch["input_ids"], batch["attention_mask"])
    expected = folded.decoder(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(steps.norm(hidden)[real], expected[real], atol=1e-5, rtol=1e-5)


def test_split_zero_equals_full_scoring(folded) -> None:
    longest = max(len(folded.tokenizer(p)["input_ids"]) for p in PROMPTS)
    assert longest + 20 < folded.max_length  # no prompt is cut: the two must agree
    scorer = LateInteractionScorer(folded, split_layer=0)
    expected = folded.score(PROMPTS, CANDIDATES, "genre")
    got = scorer.score(PROMPTS, CANDIDATES)
    for row, want in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.tensor(row), torch.tensor(want), atol=1e-4, rtol=1e-4)


def test_upper_split_uses_cached_items_and_stays_close(folded) -> None:
    scorer = LateInteractionScorer(folded, split_layer=1)
    assert scorer.cache_catalogue(c for cands in CANDIDATES for c in cands) == 5
    assert scorer.cache_catalogue(["Heat (1995)"]) == 0  # cached once per catalogue
    got = scorer.score(PROMPTS, CANDIDATES)
    expected = folded.score(PROMPTS, CANDIDATES, "genre")
    assert [len(r) for r in got] == [3, 2]
    # lower layers no longer see the prompt: close, not equal
    flat_got = [a for row in got for a in row]
    flat_expected = [b for row in expected for b in row]
    diff = max(abs(a - b) for a, b in zip(flat_got, flat_expected, strict=True))
    assert 0 < diff < 1.0


def test_folded_model_refuses_another_task(folded) -> None:
    with pytest.raises(TaskSelectionError, match="genre"):
        folded.score(PROMPTS[:1], CANDIDATES[:1], "year")


def test_split_layer_out_of_range(folded) -> None:
    with pytest.raises(ValueError, match="split_layer"):
        LateInteractionScorer(folded, split_layer=5)
