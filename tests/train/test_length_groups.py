"""A training step's generative samples run as a few forward passes of similar-length rows
(``train.length_groups``) instead of one pass padded to the longest prompt: the same answer
log-probabilities, loss and gradients, on less padding."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from recfound.model.recmodel import in_row_order, length_groups
from recfound.train.trainer import Trainer
from tests.train.tiny import tiny_model, tiny_tasks, tiny_train_config


def _padded(lengths: list[int], groups: list[list[int]]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_take_every_row_once_and_pad_least(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, size=int(rng.integers(4, 9))).tolist()
    for k in (1, 2, 3, len(lengths) + 2):
        found = [g.tolist() for g in length_groups(lengths, k)]
        assert len(found) == min(k, len(lengths))
        assert sorted(i for g in found for i in g) == list(range(len(lengths)))
        assert all(g for g in found)
        # the best contiguous cut of the rows sorted by length, found by trying every cut
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        cuts = itertools.combinations(range(1, len(order)), len(found) - 1)
        best = min(
            _padded(lengths, [order[a:b] for a, b in zip((0, *c), (*c, len(order)), strict=True)])
            for c in cuts
        )
        assert _padded(lengths, found) == best


def test_in_row_order_restores_the_batch_order() -> None:
    groups = length_groups([5, 1, 4, 1, 9], 2)
    values = torch.tensor([5.0, 1.0, 4.0, 1.5, 9.0])
    parts = [values[g] for g in groups]
    torch.testing.assert_close(in_row_order(parts, groups), values)


def _mixed_batch(rec, tasks):
    """Prompts of very different lengths from two tasks, in one padded batch."""
    genre, year = tasks[0].train, tasks[1].train
    prompts = [p * (1 + i % 3) for i, p in enumerate(genre.prompt[:5])] + list(year.prompt[:4])
    targets = list(genre.target[:5]) + list(year.target[:4])
    names = ["genre"] * 5 + ["year"] * 4
    return rec.encode_with_answers(prompts, targets), names


def test_answer_tokens_in_length_groups_equal_one_padded_pass() -> None:
    tasks = tiny_tasks()
    rec = tiny_model(tasks)
    rec.model.eval()
    batch, names = _mixed_batch(rec, tasks)
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) > 2 * int(lengths.min())  # the grouping has padding to save
    with torch.no_grad():
        one = rec.answer_tokens(batch, names)
        for groups in (2, 3, 9):
            split = rec.answer_tokens(batch, names, groups)
            assert torch.equal(split.mask, one.mask)
            assert torch.equal(split.correct, one.correct)
            scale = float(one.logprobs.abs().max())
            torch.testing.assert_close(split.logprobs, one.logprobs, rtol=1e-5, atol=1e-6 * scale)
            torch.testing.assert_close(
                split.first, one.first, rtol=1e-5, atol=1e-6 * float(one.first.abs().max())
            )


def test_a_step_in_length_groups_has_the_one_pass_loss_and_gradients(tmp_path: Path) -> None:
    tasks = tiny_tasks()
    losses, grads = [], []
    for groups in (1, 3):
        rec = tiny_model(tasks)  # the same seed: the same initial weights
        config = tiny_train_config(length_groups=groups, embedding_batch_size=0)
        trainer = Trainer(rec, tasks, config, tmp_path / str(groups), seed=3)
        assert trainer.length_groups == min(groups, config.batch_size)
        batch = trainer.draw_batch()
        loss, _ = trainer.batch_loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append(
            {n: p.grad.clone() for n, p in rec.model.named_parameters() if p.grad is not None}
        )
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0.0)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, expected in grads[0].items():
        scale = float(expected.abs().max()) or 1.0
        torch.testing.assert_close(grads[1][name], expected, rtol=1e-4, atol=1e-5 * scale)


def test_length_groups_never_exceed_the_rows_of_a_process(tmp_path: Path) -> None:
    tasks = tiny_tasks()
    config = tiny_train_config(length_groups=16, batch_size=4)
    trainer = Trainer(tiny_model(tasks), tasks, config, tmp_path, seed=3)
    assert trainer.length_groups == 4
