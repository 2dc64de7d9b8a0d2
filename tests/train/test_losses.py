"""One set of loss terms for training and validation (recfound/train/losses.py): the step loss is
the formula the trainer had before the terms moved there, and validation's embedding loss is
training's InfoNCE, catalogue negatives included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recfound.train.batches import StepBatch, TaskData
from recfound.train.losses import block_infonce
from recfound.train.trainer import Trainer
from tests.train.tiny import tiny_model, tiny_tasks, tiny_train_config

SEED = 3
NEGATIVES = 10


def _tasks_and_catalogue() -> tuple[list[TaskData], pd.DataFrame]:
    """The tiny tasks with closed-set ``genre`` samples and ``match`` records that name their
    item, and a catalogue of every ``match`` item (train and valid)."""
    tasks = tiny_tasks()
    genre, match = tasks[0], tasks[2]
    labels = ["Comedy", "Drama"]
    genre.train = genre.train.assign(
        target=[labels[i % 2] for i in range(len(genre.train))],
        candidates=[labels] * len(genre.train),
    )
    for part in ("train", "valid"):
        frame = getattr(match, part)
        ids = [f"{part}{i}" for i in range(len(frame))]
        setattr(match, part, frame.assign(item_id=ids, history_ids=[[] for _ in ids]))
    catalogue = pd.DataFrame(
        {
            "item_id": [*match.train.item_id, *match.valid.item_id],
            "text": [*match.train.target, *match.valid.target],
        }
    )
    return tasks, catalogue


def _old_batch_loss(trainer: Trainer, batch: StepBatch, per_sample: bool = False) -> torch.Tensor:
    """``Trainer.batch_loss`` as it was written before the loss terms moved to
    ``recfound.train.losses`` (one process: the per-process means are the counts); with
    ``per_sample``, the answers' loss is the mean over samples of each one's token mean."""
    rec, device = trainer.rec, trainer.accelerator.device
    total = torch.zeros((), device=device)
    answer_tokens = torch.zeros((), device=device)
    closed = torch.zeros((), device=device)
    if batch.generative is not None:
        answer = rec.answer_tokens(batch.generative, batch.generative_tasks)
        if per_sample:
            means = -answer.logprobs.sum(-1) / answer.mask.sum(-1)
            total, answer_tokens = means.sum(), torch.tensor(float(len(means)))
        else:
            total = total - answer.logprobs.sum()
            answer_tokens = answer.mask.sum().float()
        for row, tokens, target in batch.choices:
            within = torch.log_softmax(answer.first[row, tokens], dim=0)
            closed = closed - within[target]
    infonce = []
    for block in batch.blocks:
        # the embeddings as block_infonce computes them; the loss on them is written out here
        _, queries, documents = block_infonce(rec, block)
        logits = (queries @ documents.T / rec.temperature).masked_fill(
            block.excluded, float("-inf")
        )
        infonce.append(F.cross_entropy(logits, torch.arange(len(queries), device=device)))
    total = total / max(float(answer_tokens), 1.0)
    if batch.choices:
        total = total + trainer.config.closed_set_weight * closed / max(len(batch.choices), 1)
    if infonce:
        total = total + torch.stack(infonce).sum() / len(infonce)
    return total


@pytest.mark.parametrize("negatives_grad", [False, True])
def test_batch_loss_is_the_formula_it_replaced(tmp_path: Path, negatives_grad: bool) -> None:
    tasks, catalogue = _tasks_and_catalogue()
    config = tiny_train_config(catalogue_negatives=NEGATIVES, negatives_grad=negatives_grad)
    trainer = Trainer(tiny_model(tasks), tasks, config, tmp_path, seed=SEED, catalogue=catalogue)
    for _ in range(2):
        batch = trainer.draw_batch()
        assert batch.blocks and batch.generative is not None
        assert (batch.blocks[0].negatives is None) == negatives_grad
        loss, _ = trainer.batch_loss(batch)
        torch.testing.assert_close(loss, _old_batch_loss(trainer, batch), rtol=1e-5, atol=1e-6)
        assert loss.requires_grad


def test_answer_loss_per_sample_averages_each_samples_own_mean(tmp_path: Path) -> None:
    """``train.answer_loss: sample``: every generative sample weighs the same, whatever the
    length of its answer; the other terms do not change."""
    tasks, catalogue = _tasks_and_catalogue()
    config = tiny_train_config(catalogue_negatives=NEGATIVES, answer_loss="sample")
    trainer = Trainer(tiny_model(tasks), tasks, config, tmp_path, seed=SEED, catalogue=catalogue)
    batch = trainer.draw_batch()
    lengths = (batch.generative["labels"] != -100).sum(-1)
    assert lengths.min() < lengths.max()  # answers of different lengths: the two means differ
    loss, _ = trainer.batch_loss(batch)
    expected = _old_batch_loss(trainer, batch, per_sample=True)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert abs(float(loss.detach()) - float(_old_batch_loss(trainer, batch).detach())) > 1e-3


def test_training_and_validation_compute_one_infonce(tmp_path: Path) -> None:
    """The validation block's InfoNCE is the same number whether validation or a training step
    computes it: both call ``block_infonce``."""
    tasks, catalogue = _tasks_and_catalogue()
    config = tiny_train_config(catalogue_negatives=NEGATIVES)
    trainer = Trainer(tiny_model(tasks), tasks, config, tmp_path, seed=SEED, catalogue=catalogue)
    block = trainer._val_blocks["match"]
    with torch.no_grad():
        expected = float(block_infonce(trainer.rec, block).loss)
    validated = trainer.validate(with_metrics=False)["match/loss"]
    trained, per_task = trainer.batch_loss(StepBatch(None, [], [block]))
    assert validated == pytest.approx(expected, rel=1e-6)
    assert float(trained.detach()) == pytest.approx(expected, rel=1e-6)
    assert per_task["match"] == pytest.approx(expected, rel=1e-6)


def test_validation_embedding_loss_sees_fixed_catalogue_negatives(tmp_path: Path) -> None:
    tasks, catalogue = _tasks_and_catalogue()
    rec = tiny_model(tasks)
    config = tiny_train_config(catalogue_negatives=NEGATIVES)
    trainer = Trainer(rec, tasks, config, tmp_path / "a", seed=SEED, catalogue=catalogue)
    block = trainer._val_blocks["match"]
    positives = len(trainer._val_batches["match"])
    assert block.excluded.shape == (positives, positives + NEGATIVES)
    # the negatives are never a validation positive
    assert block.negatives["input_ids"].shape[0] == NEGATIVES
    decode = rec.tokenizer.batch_decode
    negatives = set(decode(block.negatives["input_ids"], skip_special_tokens=True))
    assert not negatives & set(decode(block.documents["input_ids"], skip_special_tokens=True))

    # drawn once from the seed: the same in another trainer of this seed, fixed across steps
    again = Trainer(rec, tasks, config, tmp_path / "b", seed=SEED, catalogue=catalogue)
    assert torch.equal(
        again._val_blocks["match"].negatives["input_ids"], block.negatives["input_ids"]
    )
    first = trainer.validate(with_metrics=True)
    assert trainer.validate(with_metrics=True) == first

    # the negatives enter the softmax: higher than against the batch's positives alone
    inbatch = Trainer(rec, tasks, config, tmp_path / "c", seed=SEED)  # no catalogue
    assert inbatch._val_blocks["match"].negatives is None
    alone = inbatch.validate(with_metrics=True)
    assert first["match/loss"] > alone["match/loss"]
    assert first["match/inbatch_recall1"] == alone["match/inbatch_recall1"]
    assert first["genre/loss"] == alone["genre/loss"]  # generative validation is unchanged
    assert np.isfinite(first["match/loss"])
