"""Folded serving models: per-task folded weights (TMoLE) or one merged model (LoRA) answer as the
adapter does, and a folded model refuses another task's rows."""

from __future__ import annotations

import pytest
import torch

from recfound.config import LoRAParams
from recfound.model.build import AdapterSpec
from recfound.model.folded import FoldedModels, fold_rec_model
from recfound.model.tmole import TaskSelectionError
from tests.numeric import assert_close_scaled
from tests.train import tiny

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)"]
CANDIDATES = [["Comedy", "Drama"], ["Action", "Thriller"], ["Crime", "Romance"]]


@torch.no_grad()
def nudge(rec, seed: int = 0) -> None:
    """Move the adapter off its initial values (B = 0 would make every fold trivial)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in rec.model.parameters():
        if parameter.requires_grad:
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("kind", ["tmole", "lora"])
def test_folded_models_answer_as_the_adapter(kind: str) -> None:
    tasks = tiny.tiny_tasks(n_train=40, n_valid=4)
    lora = AdapterSpec(LoRAParams(rank=4, alpha=8.0), ("q_proj", "v_proj"))
    adapter = tiny.ADAPTER if kind == "tmole" else lora
    rec = tiny.tiny_model(tasks, adapter=adapter)
    nudge(rec)
    rec.model.eval()
    models = FoldedModels(rec)
    for task in ("genre", "year", "match"):
        folded = models.for_task(task)
        assert models.for_task(task) is folded  # cached
        assert_close_scaled(folded.embed(TITLES, task), rec.embed(TITLES, task))
        got = torch.tensor(folded.score(TITLES, CANDIDATES, task))
        expected = torch.tensor(rec.score(TITLES, CANDIDATES, task))
        assert_close_scaled(got, expected)
        assert folded.generate(TITLES, task, max_new_tokens=4) == rec.generate(
            TITLES, task, max_new_tokens=4
        )
    assert models.built() == (["genre", "match", "year"] if kind == "tmole" else ["*"])


def test_a_folded_model_refuses_rows_of_another_task() -> None:
    rec = tiny.tiny_model(tiny.tiny_tasks(n_train=40, n_valid=4))
    folded = fold_rec_model(rec, "genre")
    with pytest.raises(TaskSelectionError, match="folded for task 'genre'; got \\['year'\\]"):
        folded.embed(TITLES, "year")
    with pytest.raises(TaskSelectionError, match="unknown tasks"):
        FoldedModels(rec).for_task("nope")
