"""Early exit: no exit equals the full model, a zero threshold exits at the first head, heads
learn from the last layer and save/load, calibration stops where the score drops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recfound.inference.early_exit import (
    NEVER,
    EarlyExitScorer,
    ExitHeads,
    ExitHeadsError,
    calibrate_threshold,
    exit_divergence,
    train_exit_heads,
)
from recfound.model.bundle import load_bundle
from recfound.model.folded import fold_rec_model

PROMPTS = ["History: Toy Story (1995). Choose one:", "Which one?"]
CANDIDATES = [["GoldenEye (1995)", "Jumanji (1995)", "Casino (1995)"], ["Heat (1995)", "Sabrina"]]


@pytest.fixture(scope="module")
def folded(tiny_bundle: tuple[Path, Path]):
    backbone, bundle = tiny_bundle
    return fold_rec_model(load_bundle(backbone, bundle), "genre")


def test_never_exiting_equals_full_scoring(folded) -> None:
    heads = ExitHeads(32, (1,))
    result = EarlyExitScorer(folded, heads, NEVER).score(PROMPTS, CANDIDATES)
    expected = folded.score(PROMPTS, CANDIDATES, "genre")
    assert result.layers == [2, 2]
    for row, want in zip(result.scores, expected, strict=True):
        torch.testing.assert_close(torch.tensor(row), torch.tensor(want), atol=1e-5, rtol=1e-5)


def test_zero_threshold_exits_at_the_first_head(folded) -> None:
    result = EarlyExitScorer(folded, ExitHeads(32, (1,)), 0.0).score(PROMPTS, CANDIDATES)
    assert result.layers == [1, 1]
    assert [len(r) for r in result.scores] == [3, 2]


def test_trained_heads_move_towards_the_last_layer_and_reload(folded, tmp_path: Path) -> None:
    prompts = [f"History: item {i}. Choose one:" for i in range(8)]
    answers = ["Heat (1995)", "Jumanji (1995)"] * 4

    before = exit_divergence(folded, ExitHeads(32, (1,)), prompts, answers)
    trained = train_exit_heads(folded, prompts, answers, steps=30, batch_size=4, learning_rate=1e-2)
    assert exit_divergence(folded, trained, prompts, answers) < 0.8 * before
    trained.save(tmp_path / "heads")
    again = ExitHeads.load(tmp_path / "heads")
    assert again.layers == (1,)
    torch.testing.assert_close(again.maps[0].weight, trained.maps[0].weight.cpu())


def test_heads_for_deeper_models_are_refused(folded, tmp_path: Path) -> None:
    with pytest.raises(ExitHeadsError, match="do not fit"):
        EarlyExitScorer(folded, ExitHeads(32, (1, 2)), 0.5)
    with pytest.raises(ExitHeadsError, match="fit them again"):
        ExitHeads.load(tmp_path / "nothing")


def test_calibration_stops_at_the_first_threshold_that_loses_too_much() -> None:
    table = {
        NEVER: (0.50, 3.0),
        0.9: (0.50, 2.5),
        0.7: (0.495, 2.0),
        0.5: (0.40, 1.5),
        0.3: (0.5, 1.0),
    }
    calibration = calibrate_threshold(lambda t: table[t], [0.3, 0.5, 0.7, 0.9], tolerance=0.01)
    assert calibration.threshold == 0.7
    assert [t.threshold for t in calibration.trials] == [NEVER, 0.9, 0.7, 0.5]
    assert calibration.to_dict()["trials"][0]["threshold"] is None
