"""Structured pruning keeps a loadable model; cross-layer sharing shrinks the builtin backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from recfound.config import BuiltinBackboneConfig
from recfound.model.backbone import (
    load_backbone,
    save_backbone,
)
from recfound.model.prune import (
    Importance,
    PruneError,
    importance_scores,
    prune_adapter_tensors,
    prune_model,
)
from recfound.model.tmole import TMoLEModel
from tests.model.test_tmole import logits_of, make_config, randomise, tiny_llama, token_batch
from tests.numeric import assert_close_scaled
from tests.train.tiny import tiny_backbone

HIDDEN, HEADS, LAYERS = 64, 4, 2


def lm_batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": token_batch(seed=i), "labels": token_batch(seed=i)} for i in range(n)]


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_pruning_nothing_reproduces_the_model() -> None:
    model, ids = tiny_llama(), token_batch()
    want = logits_of(model, ids)
    importance = importance_scores(model, lm_batches())
    assert importance.heads.shape == (LAYERS, HEADS) and importance.batches == 3
    pruned, _ = prune_model(model, importance, heads_to_prune=0, channels_to_prune=0)
    assert type(pruned) is LlamaForCausalLM
    assert_close_scaled(logits_of(pruned, ids), want)


def test_pruning_removes_the_expected_parameters_and_still_loads(tmp_path: Path) -> None:
    model = tiny_llama()
    before = parameter_count(model)
    intermediate = model.config.intermediate_size
    model, _ = prune_model(model, importance_scores(model, lm_batches()), 1, 32)
    head_dim = HIDDEN // HEADS
    assert before - parameter_count(model) == LAYERS * (4 * HIDDEN * head_dim + 3 * HIDDEN * 32)
    assert model.config.num_attention_heads == HEADS - 1
    assert model.config.intermediate_size == intermediate - 32
    ids = token_batch()
    model.save_pretrained(tmp_path / "pruned")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", local_files_only=True)
    torch.testing.assert_close(logits_of(loaded, ids), logits_of(model, ids))
    out = loaded.generate(ids[:1], max_new_tokens=3, do_sample=False)  # the KV cache works
    assert out.shape == (1, ids.shape[1] + 3)


@torch.no_grad()
def _silence_head_and_channel(model: LlamaForCausalLM, head: int, channel: int) -> None:
    head_dim = HIDDEN // HEADS
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[:, head * head_dim : (head + 1) * head_dim] = 0
        layer.mlp.down_proj.weight[:, channel] = 0


def test_a_head_and_a_channel_that_do_nothing_go_first_and_change_nothing() -> None:
    model, ids = tiny_llama(), token_batch()
    _silence_head_and_channel(model, head=2, channel=5)
    want = logits_of(model, ids)
    importance = importance_scores(model, lm_batches())
    assert (importance.heads[:, 2] == 0).all() and (importance.channels[:, 5] == 0).all()
    assert (importance.heads[:, [0, 1, 3]] > 0).all()
    model, plan = prune_model(model, importance, heads_to_prune=1, channels_to_prune=1)
    assert 5 not in plan["model.layers.0.mlp.down_proj"][1].tolist()
    assert_close_scaled(logits_of(model, ids), want)


def test_adapter_tensors_follow_the_pruned_layers() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    randomise(tmole)
    ids = token_batch()
    with tmole.task("rating"):
        want = logits_of(tmole.model, ids)
    tensors = {k: v.detach().clone() for k, v in tmole.adapter_state_dict().items()}
    base = tmole.unload()
    base, plan = prune_model(base, importance_scores(base, lm_batches()), 0, 0)
    again = TMoLEModel(base, make_config())
    again.load_adapter_tensors(prune_adapter_tensors(tensors, plan))
    with again.task("rating"):
        assert_close_scaled(logits_of(again.model, ids), want)

    smaller = tiny_llama()
    smaller, plan = prune_model(smaller, importance_scores(smaller, lm_batches()), 2, 64)
    pruned = TMoLEModel(smaller, make_config())
    pruned.load_adapter_tensors(prune_adapter_tensors(tensors, plan))  # shapes fit
    assert pruned.layers()["model.layers.0.self_attn.o_proj"].tmole_A.shape[1] == HIDDEN // 2


def test_bad_pruning_requests_are_reported() -> None:
    model = tiny_llama()
    scores = Importance(torch.ones(LAYERS, HEADS), torch.ones(LAYERS, 128), 1)
    with pytest.raises(PruneError, match="heads_to_prune"):
        prune_model(model, scores, HEADS, 0)
    with pytest.raises(PruneError, match="at least one batch"):
        importance_scores(model, [])
    config = tiny_llama().config
    config.num_key_value_heads = 2  # grouped-query attention
    with pytest.raises(PruneError, match="grouped-query"):
        prune_model(LlamaForCausalLM(config), scores, 1, 0)


# ---- cross-layer sharing -------------------------------------------------------------------


def shared_backbone(share: int, tmp_path: Path) -> tuple[LlamaForCausalLM, object]:
    texts = ["Toy Story (1995) is a film", "GoldenEye (1995)", "Heat (1995) is a film"] * 20
    return tiny_backbone(texts, num_layers=4, vocab_size=300, share_layers=share)


def test_sharing_divides_the_layer_parameters(tmp_path: Path) -> None:
    plain, _ = shared_backbone(1, tmp_path)
    shared, _ = shared_backbone(2, tmp_path)
    embeddings = plain.get_input_embeddings().weight.numel() + plain.model.norm.weight.numel()
    layer = parameter_count(plain.model.layers[0])
    assert parameter_count(plain) == embeddings + 4 * layer
    assert parameter_count(shared) == embeddings + 2 * layer
    layers = shared.model.layers
    assert layers[1].self_attn.q_proj.weight is layers[0].self_attn.q_proj.weight
    assert layers[2].mlp.up_proj.weight is not layers[0].mlp.up_proj.weight
    assert [m.self_attn.layer_idx for m in layers] == [0, 1, 2, 3]  # own KV-cache slots


def test_shared_backbone_saves_once_loads_shared_and_generates(tmp_path: Path) -> None:
    shared, tokenizer = shared_backbone(2, tmp_path)
    save_backbone(shared, tokenizer, tmp_path / "shared")
    plain, _ = shared_backbone(1, tmp_path)
    save_backbone(plain, tokenizer, tmp_path / "plain")
    size = (tmp_path / "shared" / "model.safetensors").stat().st_size
    assert size < 0.8 * (tmp_path / "plain" / "model.safetensors").stat().st_size
    loaded, _ = load_backbone(tmp_path / "shared")
    layers = loaded.model.layers
    assert layers[3].mlp.down_proj.weight is layers[2].mlp.down_proj.weight
    ids = token_batch(length=5) % 300
    torch.testing.assert_close(logits_of(loaded, ids), logits_of(shared.eval(), ids))
    cached = loaded.generate(ids[:1], max_new_tokens=4, do_sample=False)
    uncached = loaded.generate(ids[:1], max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_shared_backbone_trains_and_stays_shared(tmp_path: Path) -> None:
    model, _ = shared_backbone(2, tmp_path)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = token_batch(batch=8, length=12) % 300
    losses = []
    for _ in range(15):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    layers = model.model.layers
    assert layers[1].self_attn.o_proj.weight is layers[0].self_attn.o_proj.weight


def test_folding_tmole_into_shared_layers_keeps_them_apart(tmp_path: Path) -> None:
    model, _ = shared_backbone(2, tmp_path)
    tmole = TMoLEModel(model.eval(), make_config())
    randomise(tmole)
    ids = token_batch(length=5) % 300
    with tmole.task("next"):
        want = logits_of(tmole.model, ids)
    folded = tmole.merge_into_base("next")
    assert_close_scaled(logits_of(folded, ids), want)


def test_share_layers_beyond_the_layer_count_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="share_layers"):
        BuiltinBackboneConfig(num_layers=3, share_layers=4)
