"""Every stage computes on the accelerator's device: models are built or loaded onto what
``stage_device()`` (accelerate's device) or the trainer's accelerator says. A ``meta`` stand-in
shows it where no GPU exists: a stage that honours the device fails on meta tensors, one that
ignored it would run on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from recfound.accelerator import stage_device
from recfound.config import TrainConfig
from recfound.model.bundle import load_bundle
from recfound.train.trainer import Trainer
from tests.stages.test_baselines import tasks_project  # noqa: F401 - fixture
from tests.train.tiny import tiny_model, tiny_tasks

META = torch.device("meta")


def test_stage_device_is_accelerates() -> None:
    assert stage_device() == Accelerator(cpu=not torch.cuda.is_available()).device


def test_a_bundle_loads_onto_the_given_device(tiny_bundle: tuple[Path, Path]) -> None:
    backbone, bundle = tiny_bundle
    rec = load_bundle(backbone, bundle, device=META)
    assert {p.device for p in rec.model.parameters()} == {META}


def test_baselines_stage_trains_on_the_stage_device(
    tasks_project: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recfound.config import load_config
    from recfound.stages import baselines

    monkeypatch.setattr(baselines, "stage_device", lambda: META)
    with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
        baselines.run_baselines(load_config(tasks_project / "params.yaml"))


@pytest.mark.parametrize("module", ["pretrain", "merge", "evaluate"])
def test_model_stages_ask_for_the_stage_device(module: str) -> None:
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(f"recfound.stages.{module}"))
    assert "stage_device()" in source


def test_trainer_runs_on_the_accelerators_device_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = tiny_tasks(n_train=16, n_valid=4)
    config = TrainConfig(
        steps=1, batch_size=2, embedding_batch_size=2, samples_per_task=2, val_batch_size=2
    )
    accelerator = Accelerator(cpu=True)
    with caplog.at_level(logging.INFO, logger="recfound.train.trainer"):
        trainer = Trainer(
            tiny_model(tasks), tasks, config, tmp_path, seed=0, accelerator=accelerator
        )
    assert trainer.rec.device == accelerator.device
    assert f"training on {accelerator.device}" in caplog.text
    assert trainer.train().device == str(accelerator.device)
