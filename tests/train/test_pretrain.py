from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from recfound.accelerator import stage_device
from recfound.config import parse_config
from recfound.data.corpus import behaviour_sequences, behaviour_windows
from recfound.model.backbone import load_backbone, save_backbone
from recfound.stages.pretrain import run_pretrain
from recfound.train.lr_schedule import lr_at
from recfound.train.pretrain import pack_blocks, pad_rows, split_blocks
from tests.conftest import build_task_data, dirs_under, sqlite_tracking
from tests.train.tiny import tiny_backbone


def test_pack_and_split_blocks() -> None:
    blocks = pack_blocks([[1, 2, 3], [4, 5]], eos_id=0, seq_len=3)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]
    train, heldout = split_blocks(blocks, 0.5, seed=0)
    assert len(train) == 1 and len(heldout) == 1
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks([[1]], eos_id=0, seq_len=8)


def test_padded_rows_cut_and_pad() -> None:
    rows = pad_rows([[5, 6, 7], [8]], pad_id=0, seq_len=2)
    assert rows.tolist() == [[5, 6], [8, 0]]


def test_behaviour_sequences_follow_time_and_windows_cover_them() -> None:
    train = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "v", "v"],
            "item_id": ["b", "a", "c", "a", "x"],
            "timestamp": [2, 1, 3, 5, 6],
        }
    )
    tokens = {"a": "<item_a>", "b": "<item_b>", "c": "<item_c>"}
    # v's "x" has no identifier, which leaves v with one item: no sequence to predict
    assert behaviour_sequences(train, tokens) == [["<item_a>", "<item_b>", "<item_c>"]]
    long = [[f"<item_{i}>" for i in range(10)]]
    windows = behaviour_windows(long, window=4)
    covered = {t for w in windows for t in w.split()[3:]}
    assert covered == set(long[0])
    assert all(len(w.split()) - 3 <= 4 for w in windows)


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
            "tracking": sqlite_tracking(tmp_path),
            "paths": dirs_under(tmp_path, "interim", "tasks", "backbone", "reports"),
        }
    )


@pytest.mark.slow
def test_pretrain_lowers_heldout_loss_and_logs_to_mlflow(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    build_task_data(cfg)
    metrics = run_pretrain(cfg)
    assert metrics["pretrained"] is True
    assert metrics["device"] == str(stage_device())  # logged and reported
    assert metrics["heldout_loss_after"] < 0.75 * metrics["heldout_loss_before"]
    assert metrics["heldout_behaviour_loss_after"] < metrics["heldout_behaviour_loss_before"]
    model, tok = load_backbone(cfg.paths.backbone)
    assert model.config.hidden_size == 64
    # every item of a training interaction is one token of the saved vocabulary
    items = pd.read_parquet(tmp_path / "tasks" / "items.parquet")
    tokens = [t for t in items["token"] if t]
    assert len(tokens) == metrics["item_tokens"] > 0
    for token in tokens[:20]:
        assert tok(" " + token, add_special_tokens=False)["input_ids"] == [
            tok.convert_tokens_to_ids(token)
        ]
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert json.loads((tmp_path / "reports" / "pretrain.json").read_text()) == metrics
    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.data.params["pretrain.steps"] == "80"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "heldout_loss")
    assert [m.step for m in history] == [0, 40, 80]


@pytest.mark.slow
def test_a_given_checkpoint_is_extended_and_only_the_identifier_rows_train(
    tmp_path: Path,
) -> None:
    """``pretrain.trainable: auto`` on a user's checkpoint is ``identifiers``: every backbone
    weight stays bit-identical, the old vocabulary's embedding rows included, and the new
    identifier rows train."""
    texts = ["Toy Story (1995) — genres: Animation", "GoldenEye (1995) — genres: Action"] * 20
    model, tokenizer = tiny_backbone(texts, num_layers=1, max_length=128, vocab_size=300)
    checkpoint = tmp_path / "my-llm"
    save_backbone(model, tokenizer, checkpoint)
    original, original_tok = load_backbone(checkpoint)
    cfg = _config(tmp_path, backbone=str(checkpoint))
    cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"steps": 20})})
    build_task_data(cfg)
    metrics = run_pretrain(cfg)
    assert metrics["backbone"] == str(checkpoint.resolve())
    assert metrics["trainable"] == "identifiers" and metrics["memory_estimate_gib"] > 0
    model, tok = load_backbone(cfg.paths.backbone)
    assert len(tok) == len(original_tok) + metrics["item_tokens"]
    # the user's vocabulary keeps its ids: old tokens encode exactly as before
    assert tok("Toy Story")["input_ids"] == original_tok("Toy Story")["input_ids"]
    embedding = model.get_input_embeddings().weight
    assert embedding.shape[0] == len(tok)
    before = original.state_dict()
    for name, tensor in model.state_dict().items():
        if tensor.shape == before[name].shape:
            assert torch.equal(tensor, before[name]), name
        else:  # the embedding (tied LM head): old rows bit-identical
            assert torch.equal(tensor[: len(original_tok)], before[name]), name
    resized = original
    resized.resize_token_embeddings(len(tok), mean_resizing=True)
    new_rows = slice(len(original_tok), len(tok))
    assert not torch.equal(embedding[new_rows], resized.get_input_embeddings().weight[new_rows])


def test_wrong_checkpoint_path_is_a_clear_error(tmp_path: Path) -> None:
    from recfound.model.backbone import BackboneError

    cfg = _config(tmp_path, backbone=str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError, match="not a local Hugging Face checkpoint"):
        run_pretrain(cfg)
