"""What pretraining trains and whether it fits: row-masked identifiers, memory refusal."""

from __future__ import annotations

import pytest
import torch

from recfound.train.pretrain import pretrain_causal_lm
from recfound.train.pretrain_fit import (
    GIB,
    PretrainMemoryError,
    check_fits,
    estimate_memory,
    prepare_trainable,
    resolve_trainable,
)
from tests.train.tiny import tiny_backbone


def _model():
    texts = ["Toy Story (1995) animation comedy", "GoldenEye (1995) action thriller"] * 30
    model, tokenizer = tiny_backbone(
        texts, item_tokens=["<item_1>", "<item_2>", "<item_3>"], vocab_size=300
    )
    ids = tokenizer.convert_tokens_to_ids(["<item_1>", "<item_2>", "<item_3>"])
    return model, tokenizer, ids


def test_identifiers_train_only_their_rows_and_leave_every_other_weight_bit_identical() -> None:
    model, tokenizer, ids = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = prepare_trainable(model, "identifiers", ids, weight_decay=0.1)
    assert target.trainable_parameters == model.get_input_embeddings().weight.numel()  # tied
    blocks = torch.randint(0, len(tokenizer), (16, 16), generator=torch.Generator().manual_seed(0))
    blocks[:, ::3] = torch.tensor(ids).repeat(16, 6)[:, : blocks[:, ::3].shape[1]]
    pretrain_causal_lm(
        target.module,
        blocks[:12],
        blocks[12:],
        steps=4,
        batch_size=4,
        learning_rate=0.01,
        warmup_steps=0,
        weight_decay=0.1,
        eval_every=2,
        seed=0,
        parameter_groups=target.parameter_groups,
    )
    model = target.finish()
    rows = torch.zeros(len(tokenizer), dtype=torch.bool)
    rows[ids] = True
    for name, tensor in model.state_dict().items():
        if tensor.shape[:1] == (len(tokenizer),):  # the embedding and the tied LM head
            assert torch.equal(tensor[~rows], before[name][~rows]), name
            assert not torch.equal(tensor[rows], before[name][rows]), name
        else:
            assert torch.equal(tensor, before[name]), name
    assert all(p.requires_grad for p in model.parameters())  # a plain model again


def test_adapter_setting_merges_into_a_plain_model() -> None:
    model, tokenizer, ids = _model()
    target = prepare_trainable(model, "adapter", ids, weight_decay=0.0, adapter_rank=2)
    lora = target.trainable_parameters - model.get_input_embeddings().weight.numel()
    per_layer = (32 + 32) * 4 + (32 + 64) * 3  # rank x (in + out) of q/k/v/o, gate/up/down
    assert lora == 2 * 2 * per_layer  # rank 2, two layers
    plain = target.finish()
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n for n, _ in plain.named_parameters())


def test_memory_estimate_refuses_an_impossible_setting_and_names_one_that_fits() -> None:
    model, _, _ = _model()

    def estimate(setting: str, checkpointing: bool):
        return estimate_memory(
            model, setting, batch_size=8, seq_len=64, gradient_checkpointing=checkpointing
        )

    full, identifiers = estimate("full", False), estimate("identifiers", True)
    assert identifiers.total < full.total
    assert full.optimizer == 2 * full.gradients  # two AdamW moments per trainable scalar
    between = (identifiers.total + full.total) // 2
    with pytest.raises(PretrainMemoryError, match="only .* GiB is free; set pretrain.trainable"):
        check_fits(full, between, estimate, "cuda:0")
    with pytest.raises(PretrainMemoryError) as error:
        check_fits(full, 1024, estimate, "cuda:0")
    message = str(error.value)
    assert "pretrain.trainable=full" in message and f"{1024 / GIB:.2f} GiB is free" in message
    assert "no setting fits" in message and "lower pretrain.batch_size" in message
    check_fits(full, full.total, estimate, "cpu")  # fits: no error


def test_auto_is_full_for_the_builtin_and_identifiers_for_a_checkpoint() -> None:
    assert resolve_trainable("auto", builtin=True) == "full"
    assert resolve_trainable("auto", builtin=False) == "identifiers"
    assert resolve_trainable("adapter", builtin=True) == "adapter"
