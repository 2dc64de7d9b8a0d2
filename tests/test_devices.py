"""Every stage computes on the accelerator's device: models are built or loaded onto what
``stage_device()`` (accelerate's device) or the trainer's accelerator says. A ``meta`` stand-in
shows it where no GPU exists: a stage that honours the device fails on meta tensors, one that
ignored it would run on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from accelerate import Accelerator

from recfound.accelerator import stage_device
from recfound.config import TrainConfig
from recfound.model.bundle import load_bundle
from recfound.train.trainer import Trainer
from tests.conftest import write_tiny_params
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


class Reached(Exception):
    """The stage got as far as its model; the test has what it wanted."""


def devices_of(model: torch.nn.Module) -> set[torch.device]:
    return {p.device for p in model.parameters()}


def run_on_meta(stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **paths: str) -> None:
    """Run the stage module's ``run_<stage>`` on tiny params with META as ``stage_device()``,
    until a call the test patched raises :class:`Reached`."""
    from recfound.config import load_config

    write_tiny_params(tmp_path / "params.yaml", paths=paths)
    monkeypatch.setattr(stage, "stage_device", lambda: META)
    run = getattr(stage, "run_" + stage.__name__.rsplit(".", 1)[-1])
    with pytest.raises(Reached):
        run(load_config(tmp_path / "params.yaml"))


def test_pretrain_stage_builds_the_backbone_on_the_stage_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recfound.layout import ITEMS_FILE, SPLIT_INTERACTIONS_FILE, TRAIN_INTERACTIONS_FILE
    from recfound.stages import pretrain

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    items = [f"i{n}" for n in range(30)]
    pd.DataFrame(
        {"item_id": items, "text": [f"movie number {n}" for n in range(30)], "token": items}
    ).to_parquet(tasks / ITEMS_FILE, index=False)
    interactions = pd.DataFrame(
        {"user_id": ["u1"] * 10, "item_id": items[:10], "timestamp": range(10)}
    )
    interactions.to_parquet(tasks / TRAIN_INTERACTIONS_FILE, index=False)
    split = interactions.assign(split=["train"] * 8 + ["valid", "test"])
    split.to_parquet(tasks / SPLIT_INTERACTIONS_FILE, index=False)
    seen: list[set[torch.device]] = []

    def pretrain_loop(cfg, model, *rest):
        seen.append(devices_of(model))
        raise Reached

    monkeypatch.setattr(pretrain, "_pretrain", pretrain_loop)
    run_on_meta(pretrain, tmp_path, monkeypatch, tasks=str(tasks))
    assert seen == [{META}]


def test_merge_stage_scores_on_the_stage_device(
    tiny_bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recfound.config import load_config
    from recfound.merge import from_config
    from recfound.stages.merge import run_merge

    backbone, bundle = tiny_bundle  # its adapter_config.json stands in for the train stage's
    seen: list[set[torch.device]] = []

    def initial_adapter(model: torch.nn.Module) -> dict:
        seen.append(devices_of(model))
        raise Reached

    # the stage's recipe lives in recfound/merge/from_config.py: patch it there
    monkeypatch.setattr(from_config, "stage_device", lambda: META)
    monkeypatch.setattr(from_config, "read_checkpoint_tensors", lambda *_: {"last": {}, "best": {}})
    monkeypatch.setattr(from_config, "adapter_tensors", initial_adapter)
    write_tiny_params(
        tmp_path / "params.yaml", paths={"backbone": str(backbone), "train": str(bundle)}
    )
    with pytest.raises(Reached):
        run_merge(load_config(tmp_path / "params.yaml"))
    assert seen == [{META}]


def test_evaluate_stage_loads_the_bundle_onto_the_stage_device(
    tiny_bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recfound.stages import evaluate

    backbone, bundle = tiny_bundle
    seen: list[set[torch.device]] = []

    def load_and_look(*args, **kwargs):
        rec = load_bundle(*args, **kwargs)
        seen.append(devices_of(rec.model))
        return rec

    def baselines_next(cfg):
        raise Reached

    monkeypatch.setattr(evaluate, "load_bundle", load_and_look)
    monkeypatch.setattr(evaluate, "trained_baselines", baselines_next)
    run_on_meta(evaluate, tmp_path, monkeypatch, backbone=str(backbone), merged=str(bundle))
    assert seen == [{META}]


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
