from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from recfound.config import parse_config
from recfound.model.backbone import load_backbone
from recfound.stages.ingest import run_ingest
from recfound.stages.pretrain import run_pretrain
from recfound.train.pretrain import lr_at, pack_blocks, split_blocks


def test_pack_and_split_blocks() -> None:
    blocks = pack_blocks([[1, 2, 3], [4, 5]], eos_id=0, seq_len=3)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]
    train, heldout = split_blocks(blocks, 0.5, seed=0)
    assert len(train) == 1 and len(heldout) == 1
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks([[1]], eos_id=0, seq_len=8)


def test_schedule_warms_up_then_decays() -> None:
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(99, 100, 10, 1.0) < 0.2


def _config(tmp_path: Path, **model):
    return parse_config(
        {
            "data": {"max_users": 50},
            "model": {
                "builtin": {
                    "hidden_size": 64,
                    "num_layers": 2,
                    "num_heads": 4,
                    "intermediate_size": 128,
                    "vocab_size": 1000,
                },
                **model,
            },
            "pretrain": {
                "steps": 80,
                "batch_size": 8,
                "seq_len": 64,
                "eval_every": 40,
                "warmup_steps": 10,
            },
            "tracking": {
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                "artifact_location": str(tmp_path / "mlartifacts"),
            },
            "paths": {
                "interim": str(tmp_path / "interim"),
                "tasks": str(tmp_path / "tasks"),
                "backbone": str(tmp_path / "backbone"),
                "reports": str(tmp_path / "reports"),
            },
        }
    )


@pytest.mark.slow
def test_pretrain_lowers_heldout_loss_and_logs_to_mlflow(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run_ingest(cfg)
    metrics = run_pretrain(cfg)
    assert metrics["pretrained"] is True
    assert metrics["heldout_loss_after"] < 0.75 * metrics["heldout_loss_before"]
    model, tok = load_backbone(cfg.paths.backbone)
    assert model.config.hidden_size == 64
    assert json.loads((tmp_path / "reports" / "pretrain.json").read_text()) == metrics
    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.data.params["pretrain.steps"] == "80"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "heldout_loss")
    assert [m.step for m in history] == [0, 40, 80]


def test_given_checkpoint_means_nothing_to_do(tmp_path: Path) -> None:
    checkpoint = tmp_path / "my-llm"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    cfg = _config(tmp_path, backbone=str(checkpoint))
    metrics = run_pretrain(cfg)
    assert metrics["pretrained"] is False
    assert "nothing to pretrain" in metrics["reason"]
    pointer = json.loads((tmp_path / "backbone" / "backbone.json").read_text())
    assert pointer["checkpoint"] == str(checkpoint.resolve())


def test_wrong_checkpoint_path_is_a_clear_error(tmp_path: Path) -> None:
    from recfound.model.backbone import BackboneError

    cfg = _config(tmp_path, backbone=str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError, match="not a local Hugging Face checkpoint"):
        run_pretrain(cfg)
