from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from recfound.model.adapter_format import WEIGHTS_FILE
from recfound.model.bundle import adapter_tensors
from recfound.train.checkpoint import CheckpointError, load_checkpoint
from recfound.train.throughput import StepFlops, train_flops_per_token
from recfound.train.trainer import Trainer, TrainingInterrupted, frozen_to_bf16
from tests.train.tiny import tiny_model, tiny_tasks, tiny_train_config

PARAMS = tiny_train_config()
SEED = 3


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in adapter_tensors(trainer.rec.model).items()}


def test_training_lowers_validation_loss_and_writes_checkpoints(tmp_path: Path) -> None:
    tasks = tiny_tasks()
    trainer = Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path, seed=SEED)
    result = trainer.train()
    first = result.val_history[0][1]
    assert result.final_val_loss["genre/loss"] < first["genre/loss"]
    assert result.final_val_loss["match/loss"] < first["match/loss"]
    for name in ("last", "best_generative", "best_embedding"):
        assert (tmp_path / name / WEIGHTS_FILE).is_file()
    last = result.weights_history[-1][1]  # each group (generative, embedding) sums to 1
    assert last["genre"] + last["year"] == pytest.approx(1.0)
    assert last["match"] == pytest.approx(1.0)


def test_interrupt_and_resume_gives_the_same_weights(tmp_path: Path) -> None:
    tasks = tiny_tasks()
    straight = Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path / "straight", seed=SEED)
    straight.train()

    def stop_at_six(values: dict, step: int) -> None:
        if step == 6 and "train/loss" in values:
            interrupted.stop_requested = True

    interrupted = Trainer(
        tiny_model(tasks), tasks, PARAMS, tmp_path / "resumed", seed=SEED, log_metrics=stop_at_six
    )
    with pytest.raises(TrainingInterrupted, match="--resume"):
        interrupted.train()
    state = json.loads((tmp_path / "resumed" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 6
    # a crash in the middle of replacing `last`: the new complete folder parked, `last` moved off
    os.replace(tmp_path / "resumed" / "last", tmp_path / "resumed" / ".last.next")

    resumed = Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path / "resumed", seed=SEED)
    resumed.train(resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_sigterm_writes_a_checkpoint_before_exiting(tmp_path: Path) -> None:
    tasks = tiny_tasks()

    def terminate_at_three(values: dict, step: int) -> None:
        if step == 3 and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(
        tiny_model(tasks), tasks, PARAMS, tmp_path, seed=SEED, log_metrics=terminate_at_three
    )
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert state["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is not trainer._request_stop  # handler restored


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    tasks = tiny_tasks()
    Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path, seed=SEED).save("last")
    other = tiny_model(tasks[:1])  # one task: other task embeddings
    with pytest.raises(CheckpointError, match="does not match|shapes differ"):
        load_checkpoint(tmp_path / "last", other.model)
    (tmp_path / "last" / WEIGHTS_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "last", tiny_model(tasks).model)


def test_resume_without_a_checkpoint_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = tiny_tasks()
    trainer = Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path, seed=SEED)
    with caplog.at_level(logging.WARNING, logger="recfound.train.trainer"):
        assert trainer.resume() is False
    assert "no checkpoint" in caplog.text and "step 0" in caplog.text
    assert trainer.step == 0


def test_closed_set_samples_add_a_softmax_over_their_candidates(tmp_path: Path) -> None:
    """A record whose target is one of its candidates (each starting with its own token) joins
    the step's closed-set loss: the softmax over its candidates at the first answer token, on
    top of the answer-token cross-entropy; catalogue negatives without gradients cost nothing in
    the loss's value."""
    tasks = tiny_tasks()
    genre = tasks[0]
    labels = ["Comedy", "Drama"]
    genre.train = genre.train.assign(
        target=[labels[i % 2] for i in range(len(genre.train))],
        candidates=[labels] * len(genre.train),
    )
    rec = tiny_model(tasks)
    if rec.closed_set_tokens([labels]) is None:
        pytest.skip("this tiny tokenizer writes both labels with the same first token")
    with_set = Trainer(rec, tasks, PARAMS, tmp_path / "a", seed=SEED)
    batch = with_set.draw_batch()
    rows = [r for r, _, _ in batch.choices]
    assert rows and all(batch.generative_tasks[r] == genre.name for r in rows)
    loss, _ = with_set.batch_loss(batch)
    without = PARAMS.model_copy(update={"closed_set_weight": 0.0})
    plain, _ = Trainer(rec, tasks, without, tmp_path / "b", seed=SEED).batch_loss(batch)
    # the softmax term is a positive cross-entropy
    assert float(loss.detach()) > float(plain.detach())


def test_a_non_finite_loss_stops_training_and_keeps_the_earlier_checkpoints(
    tmp_path: Path,
) -> None:
    from recfound.train.checkpoint import read_checkpoint
    from recfound.train.trainer import NonFiniteLossError

    tasks = tiny_tasks(n_train=40, n_valid=8)
    trainer = Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path, seed=SEED)
    step = trainer.train_step

    def diverging(batch):  # as a too-large learning rate or alpha does after a few steps
        loss, per_task = step(batch)
        return (float("nan") if trainer.step >= 5 else loss), per_task

    trainer.train_step = diverging
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at step 6 .* are kept"):
        trainer.train()
    _, state = read_checkpoint(tmp_path / "last")
    assert state["step"] == 4  # the checkpoint of step 4, not one of the diverged model
    assert (tmp_path / "best_generative" / WEIGHTS_FILE).is_file()


def test_every_step_logs_tokens_per_s_and_model_flops(tmp_path: Path) -> None:
    tasks = tiny_tasks()
    logged: list[dict[str, float]] = []
    config = PARAMS.model_copy(update={"steps": 2, "eval_every": 10, "checkpoint_every": 10})
    trainer = Trainer(
        tiny_model(tasks),
        tasks,
        config,
        tmp_path,
        seed=SEED,
        log_metrics=lambda v, s: logged.append(v),
    )
    result = trainer.train()
    steps = [values for values in logged if "train/loss" in values]
    assert len(steps) == 2
    for values in steps:
        assert values["tokens_per_s"] > 0 and values["model_tflops_per_s"] > 0
        assert "mfu" not in values  # a CPU has no known peak
    assert result.throughput["model_tflops_per_s"] > 0


def test_step_flops_without_a_separate_head_is_the_per_token_formula() -> None:
    tasks = tiny_tasks(n_train=8, n_valid=2)
    model = tiny_model(tasks).model
    trainable = 1234
    flops = StepFlops.of(model, trainable)
    assert flops.head == model.get_output_embeddings().weight.numel()
    lengths = torch.tensor([20, 20, 20])
    # the head read at every position: PaLM's accounting of 60 tokens of 20 positions each
    expected = 60 * train_flops_per_token(model, 20, trainable)
    assert flops.sequences(lengths, head_positions=60) == pytest.approx(expected, rel=1e-12)


def test_compile_compiles_the_forward_module_in_place(tmp_path: Path) -> None:
    tasks = tiny_tasks(n_train=16, n_valid=4)
    rec = tiny_model(tasks)
    names = [n for n, _ in rec.states.named_parameters()]
    config = PARAMS.model_copy(update={"compile": True})
    trainer = Trainer(rec, tasks, config, tmp_path, seed=SEED)
    assert trainer.module._compiled_call_impl is not None
    assert [n for n, _ in trainer.module.named_parameters()] == names  # checkpoints unchanged


def test_frozen_bf16_backbone_trains_an_fp32_adapter_under_autocast(tmp_path: Path) -> None:
    tasks = tiny_tasks(n_train=16, n_valid=4)
    trainer = Trainer(tiny_model(tasks), tasks, PARAMS, tmp_path, seed=SEED)
    frozen_to_bf16(trainer.rec.model)
    parameters = list(trainer.rec.model.parameters())
    assert {p.dtype for p in parameters if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in parameters if p.requires_grad} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = trainer.batch_loss(trainer.draw_batch())
    loss.backward()
    grads = [p.grad for p in parameters if p.requires_grad and p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
