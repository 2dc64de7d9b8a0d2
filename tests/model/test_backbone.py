from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from recfound.model.backbone import (
    BackboneError,
    build_builtin_backbone,
    load_backbone,
    save_backbone,
    train_bpe_tokenizer,
)
from tests.train.tiny import SPEC as TINY_SPEC

TEXTS = [f"Movie number {i} (199{i % 10}) — categories: Drama, Comedy" for i in range(300)]
SPEC = replace(TINY_SPEC, vocab_size=400)  # the trainer tests' tiny builtin, a smaller vocabulary


def test_tokenizer_round_trips_text_and_has_special_tokens() -> None:
    tok = train_bpe_tokenizer(TEXTS, vocab_size=400)
    ids = tok("Movie number 7 (1997)")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "Movie number 7 (1997)"
    assert {tok.pad_token, tok.eos_token, tok.unk_token} == {"<pad>", "</s>", "<unk>"}
    assert len(tok) <= 400


def test_builtin_backbone_save_load_gives_same_logits(tmp_path: Path) -> None:
    tok = train_bpe_tokenizer(TEXTS, vocab_size=400)
    model = build_builtin_backbone(SPEC, tok, seed=0).eval()
    save_backbone(model, tok, tmp_path / "bb")
    loaded, tok2 = load_backbone(tmp_path / "bb")
    ids = tok(["Movie number 3"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded.eval()(ids).logits, atol=1e-6)
    assert tok2("Movie")["input_ids"] == tok("Movie")["input_ids"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(tmp_path)


# ---- reliability (issue 24, item 9): a damaged checkpoint is a named error ---------------------


def _damage_config(bb: Path) -> None:
    text = (bb / "config.json").read_text()
    (bb / "config.json").write_text(text[: len(text) // 2])


def _config_not_an_object(bb: Path) -> None:
    (bb / "config.json").write_text("[1, 2]")


def _truncate_weights(bb: Path) -> None:
    data = (bb / "model.safetensors").read_bytes()
    (bb / "model.safetensors").write_bytes(data[: len(data) // 2])


def _empty_weights(bb: Path) -> None:
    (bb / "model.safetensors").write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_damage_config, ["config.json is not readable JSON", "cut short"]),
        (_config_not_an_object, ["config.json holds a JSON list"]),
        (_truncate_weights, ["weights in", "(model.safetensors) are damaged", "cut short"]),
        (_empty_weights, ["(model.safetensors) are damaged"]),
    ],
)
def test_damaged_backbone_names_the_file_and_what_to_do(
    tmp_path: Path, damage, words: list[str]
) -> None:
    tok = train_bpe_tokenizer(TEXTS[:50], vocab_size=300)
    save_backbone(build_builtin_backbone(SPEC, tok, seed=0), tok, tmp_path / "bb")
    damage(tmp_path / "bb")
    before = {p.name: p.read_bytes() for p in (tmp_path / "bb").iterdir()}
    with pytest.raises(BackboneError) as err:
        load_backbone(tmp_path / "bb")
    message = str(err.value)
    assert str(tmp_path / "bb") in message
    for phrase in words:
        assert phrase in message
    assert "recfound pretrain" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "bb").iterdir()} == before  # untouched


def test_checkpoints_load_with_sdpa_attention_and_fall_back_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import LlamaForCausalLM

    tok = train_bpe_tokenizer(TEXTS, vocab_size=400)
    model = build_builtin_backbone(SPEC, tok, seed=0)
    model.config._attn_implementation = "eager"  # as a user's checkpoint may have been saved
    save_backbone(model, tok, tmp_path / "bb")
    sdpa, _ = load_backbone(tmp_path / "bb")
    eager, _ = load_backbone(tmp_path / "bb", attention="eager")
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == (
        "sdpa",
        "eager",
    )
    batch = tok(["Movie number 3", "Movie"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa.eval()(**batch).logits, eager.eval()(**batch).logits, atol=1e-5, rtol=1e-4
        )
    monkeypatch.setattr(LlamaForCausalLM, "_supports_sdpa", False)  # an architecture without SDPA
    fallback, _ = load_backbone(tmp_path / "bb")
    assert fallback.config._attn_implementation == "eager"
