"""TMoLE: equals LoRA with one expert, folds exactly, separates conflicting tasks, saves, loads."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from recfound.model.adapter_format import AdapterLoadError
from recfound.model.lora import LoRAAdapter
from recfound.model.option import OptionModel
from recfound.model.tmole import (
    TaskSelectionError,
    TMoLEConfig,
    TMoLEConfigError,
    TMoLELinear,
    TMoLEModel,
)
from tests.numeric import assert_close_scaled

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
KINDS = {
    "search": "embedding",
    "similar": "embedding",
    "rating": "generative",
    "next": "generative",
}


def tiny_llama(seed: int = 0, hidden: int = 64) -> LlamaForCausalLM:
    """A 2-layer Llama with a vocabulary of 200; ``initializer_range`` large enough that the
    final RMSNorm still lets logits move far (a toy task can then be learned to a low loss)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=200,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config).eval()


def make_config(**overrides: object) -> TMoLEConfig:
    options: dict[str, object] = {
        "rank": 4,
        "alpha": 8.0,
        "num_embedding_experts": 2,
        "num_shared_experts": 1,
        "num_generative_experts": 2,
        "task_names": sorted(KINDS),
        "task_kinds": dict(KINDS),
        "task_embedding_dim": 8,
        "target_modules": TARGETS,
        "seed": 3,
    }
    options.update(overrides)
    return TMoLEConfig(**options)


@torch.no_grad()
def randomise(tmole: TMoLEModel, seed: int = 7) -> None:
    """Give B, the routers and the task embedding non-trivial values (B starts at 0)."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tmole.adapter_state_dict().items():
        scale = 1.0 if "router" in name or "embedding" in name else 0.1
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)


def token_batch(batch: int = 4, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 200, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# ---- config --------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = make_config(top_k=2, gate_temperature=0.5)
    assert TMoLEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.num_experts == 5 and config.scaling == 2.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task_kinds": {"search": "embedding"}}, "have no kind"),
        ({"task_kinds": {**KINDS, "search": "ranking"}}, "has kind 'ranking'"),
        ({"num_embedding_experts": 0, "num_shared_experts": 0}, "embedding tasks have no expert"),
        ({"num_generative_experts": 0, "num_shared_experts": 0}, "generative tasks have no expert"),
        ({"rank": 0}, "rank: Input should be greater than or equal to 1"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_config_rejects_bad_options(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(TMoLEConfigError, match=message):
        make_config(**overrides)


def test_unknown_config_key_is_an_error() -> None:
    with pytest.raises(TMoLEConfigError, match="unknown TMoLE config keys"):
        TMoLEConfig.from_dict({**make_config().to_dict(), "rnak": 4})


# ---- structure and gating ------------------------------------------------------------------


def test_wrapping_freezes_base_and_starts_equal_to_base() -> None:
    base_logits = logits_of(tiny_llama(), token_batch())
    tmole = TMoLEModel(tiny_llama(), make_config())
    layers = tmole.layers()
    assert len(layers) == 2 * len(TARGETS)
    assert all(isinstance(layer, TMoLELinear) for layer in layers.values())
    trainable = {n for n, p in tmole.model.named_parameters() if p.requires_grad}
    assert trainable == set(tmole.adapter_state_dict())
    layer = layers["model.layers.0.self_attn.q_proj"]
    assert layer.tmole_A.shape == (5 * 4, 64) and layer.tmole_B.shape == (64, 5 * 4)
    with tmole.task("rating"):
        assert torch.equal(logits_of(tmole.model, token_batch()), base_logits)


def test_gates_mask_other_kind_and_differ_by_task() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    search, similar = tmole.gates("search"), tmole.gates("similar")
    rating = tmole.gates("rating")
    for name in tmole.target_names:
        assert torch.all(search[name][3:] == 0) and torch.all(rating[name][:2] == 0)
        assert search[name].sum().item() == pytest.approx(1.0)
    assert max((search[n] - similar[n]).abs().sum().item() for n in tmole.target_names) > 1e-3


def test_top_k_keeps_k_experts() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config(top_k=2))
    for gates in tmole.gates("rating").values():
        assert int((gates > 0).sum()) == 2


def test_forward_without_task_or_with_unknown_task_raises() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    with pytest.raises(TaskSelectionError, match="no task selected"):
        tmole.model(input_ids=token_batch())
    with pytest.raises(TaskSelectionError, match="unknown tasks"), tmole.task("nope"):
        pass
    with pytest.raises(TaskSelectionError, match="3 task ids"), tmole.task(["rating"] * 3):
        tmole.model(input_ids=token_batch(batch=4))


def test_targets_that_match_nothing_are_reported() -> None:
    with pytest.raises(TMoLEConfigError, match="no module matches"):
        TMoLEModel(tiny_llama(), make_config(target_modules=["qkv"]))


# ---- 1. one expert == LoRA -----------------------------------------------------------------


def test_single_expert_equals_peft_lora() -> None:
    r, alpha = 4, 8.0
    config = make_config(
        rank=r, alpha=alpha, num_embedding_experts=0, num_shared_experts=1, num_generative_experts=0
    )
    tmole = TMoLEModel(tiny_llama(), config)
    randomise(tmole)
    lora_config = LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0)
    peft_model = get_peft_model(tiny_llama(), lora_config)
    with torch.no_grad():
        for name, layer in tmole.layers().items():
            peft_layer = peft_model.base_model.model.get_submodule(name)
            assert peft_layer.scaling["default"] == config.scaling
            peft_layer.lora_A["default"].weight.copy_(layer.tmole_A)
            peft_layer.lora_B["default"].weight.copy_(layer.tmole_B)
    ids = token_batch()
    expected = logits_of(peft_model, ids)
    for task in KINDS:
        with tmole.task(task):
            assert_close_scaled(logits_of(tmole.model, ids), expected)


# ---- 2. folding ----------------------------------------------------------------------------


def test_folded_weights_reproduce_each_task() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    randomise(tmole)
    plain = tiny_llama()
    ids = token_batch()
    for task in KINDS:
        with tmole.task(task):
            expected = logits_of(tmole.model, ids)
        folds = tmole.fold(task)
        hooks = []
        for name, (a_f, b_f) in folds.items():
            layer = tmole.layers()[name]  # 3 usable experts of rank 4: masked ones are dropped
            assert a_f.shape == (4 * 3, layer.in_features)
            assert b_f.shape == (layer.out_features, 4 * 3)

            def add_lora(module, inputs, output, a=a_f, b=b_f):  # noqa: ANN001, ANN202
                return output + F.linear(F.linear(inputs[0], a), b)

            hooks.append(plain.get_submodule(name).register_forward_hook(add_lora))
        assert_close_scaled(logits_of(plain, ids), expected)
        for hook in hooks:
            hook.remove()
        merged = tmole.merge_into_base(task)
        assert not any(isinstance(m, TMoLELinear) for m in merged.modules())
        assert not any("tmole" in n for n, _ in merged.named_parameters())
        assert type(merged.get_submodule("model.layers.0.self_attn.q_proj")) is nn.Linear
        assert_close_scaled(logits_of(merged, ids), expected)
    assert len(tmole.layers()) == 2 * len(TARGETS)  # the adapter itself is untouched


def test_unload_returns_the_base_model() -> None:
    base = tiny_llama()
    reference = logits_of(tiny_llama(), token_batch())
    tmole = TMoLEModel(base, make_config())
    randomise(tmole)
    model = tmole.unload()
    assert model is base and not hasattr(model, "tmole_task_embedding")
    assert all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(logits_of(model, token_batch()), reference, atol=0, rtol=0)


# ---- 3. conflicting tasks: TMoLE separates them, one shared LoRA cannot --------------------


def train_last_token(
    adapter: TMoLEModel | LoRAAdapter | OptionModel,
    ids: torch.Tensor,
    tasks: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    lr: float,
) -> list[float]:
    """Adam on the adapter's parameters: the last token's logits of ``ids`` (each row with its
    task) against ``labels``; the loss of each step."""
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    adapter.model.train()
    losses = []
    for _ in range(steps):
        with adapter.task(tasks):
            logits = adapter.model(input_ids=ids).logits[:, -1]
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def conflicting_tasks_loss(adapter: TMoLEModel | LoRAAdapter, steps: int) -> float:
    """Same prompts, two tasks with different target tokens (3 for task 0, 4 for task 1)."""
    prompts = torch.randint(10, 200, (16, 6), generator=torch.Generator().manual_seed(1))
    ids = torch.cat([prompts, prompts])
    tasks = torch.tensor([0] * 16 + [1] * 16)
    labels = torch.where(tasks == 0, 3, 4)
    return train_last_token(adapter, ids, tasks, labels, steps, lr=0.01)[-1]


def test_tmole_learns_conflicting_tasks_that_one_lora_cannot() -> None:
    r, steps = 2, 60
    config = make_config(
        rank=r,
        alpha=2.0 * r,
        num_embedding_experts=0,
        num_shared_experts=2,
        task_names=["a", "b"],
        task_kinds={"a": "generative", "b": "generative"},
        seed=0,
    )
    tmole = TMoLEModel(tiny_llama(), config)
    width = sum(layer.in_features + layer.out_features for layer in tmole.layers().values())
    lora_rank = math.ceil(tmole.trainable_parameters() / width)
    lora = LoRAAdapter(tiny_llama(), r=lora_rank, alpha=2.0 * lora_rank, target_modules=TARGETS)
    assert lora.trainable_parameters() >= tmole.trainable_parameters()

    tmole_loss = conflicting_tasks_loss(tmole, steps)
    lora_loss = conflicting_tasks_loss(lora, steps)

    gates_a, gates_b = tmole.gates("a"), tmole.gates("b")
    distance = max((gates_a[n] - gates_b[n]).abs().sum().item() for n in tmole.target_names)
    assert distance > 0.1
    assert lora_loss > 0.6  # one adapter for both tasks: at best ln 2 on the 50/50 targets
    assert tmole_loss < 0.5 * lora_loss


# ---- 4. save / load ------------------------------------------------------------------------


def test_save_and_load_give_identical_outputs(tmp_path: Path) -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    randomise(tmole)
    tmole.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    loaded = TMoLEModel.from_pretrained(tiny_llama(), tmp_path)
    assert loaded.config == tmole.config
    ids = token_batch()
    for task in KINDS:
        with tmole.task(task), loaded.task(task):
            assert torch.equal(logits_of(loaded.model, ids), logits_of(tmole.model, ids))


def test_truncated_weights_file_is_reported(tmp_path: Path) -> None:
    TMoLEModel(tiny_llama(), make_config()).save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    base = tiny_llama()
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors.*damaged or truncated"):
        TMoLEModel.from_pretrained(base, tmp_path)
    assert not hasattr(base, "tmole_task_embedding")


def test_adapter_of_another_hidden_size_is_reported(tmp_path: Path) -> None:
    TMoLEModel(tiny_llama(hidden=64), make_config()).save_pretrained(tmp_path)
    base = tiny_llama(hidden=32)
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors.*\(64\).*\(32\)|shape"):
        TMoLEModel.from_pretrained(base, tmp_path)
    assert not any(isinstance(m, TMoLELinear) for m in base.modules())
    assert all(p.requires_grad for p in base.parameters())


def test_config_with_other_tasks_than_the_weights_is_reported(tmp_path: Path) -> None:
    TMoLEModel(tiny_llama(), make_config()).save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    payload = json.loads(path.read_text())
    payload["config"]["task_names"].append("extra")
    payload["config"]["task_kinds"]["extra"] = "generative"
    path.write_text(json.dumps(payload))
    with pytest.raises(AdapterLoadError, match="tmole_task_embedding.weight: file"):
        TMoLEModel.from_pretrained(tiny_llama(), tmp_path)


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(AdapterLoadError, match="adapter_config.json is missing"):
        TMoLEModel.from_pretrained(tiny_llama(), tmp_path)


# ---- 5. mixed batches ----------------------------------------------------------------------


def test_mixed_task_batch_equals_each_task_alone() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    randomise(tmole)
    ids = token_batch(batch=6)
    names = ["search", "rating", "rating", "next", "search", "similar"]
    with tmole.task(names):
        mixed = logits_of(tmole.model, ids)
    with tmole.task(torch.tensor([tmole.task_id(n) for n in names])):
        torch.testing.assert_close(logits_of(tmole.model, ids), mixed, atol=0, rtol=0)
    for i, name in enumerate(names):
        with tmole.task(name):
            alone = logits_of(tmole.model, ids[i : i + 1])
        assert_close_scaled(mixed[i : i + 1], alone)


# ---- concurrency: the task selection is per thread -------------------------------------------


def test_threads_selecting_different_tasks_do_not_see_each_other() -> None:
    """Four threads, each in its own ``task(...)``, forward the same model in lock step: each gets
    its task's logits, as alone (a shared selection would give another task's, or raise)."""
    tmole = TMoLEModel(tiny_llama(), make_config())
    randomise(tmole)
    ids = token_batch(batch=2)
    expected = {}
    for task in KINDS:
        with tmole.task(task):
            expected[task] = logits_of(tmole.model, ids)
    barrier = threading.Barrier(len(KINDS))
    results: dict[str, list[torch.Tensor]] = {task: [] for task in KINDS}
    errors: list[BaseException] = []

    def worker(task: str) -> None:
        try:
            for _ in range(5):
                with tmole.task(task):
                    barrier.wait(timeout=30)  # every thread has selected before any forward
                    results[task].append(logits_of(tmole.model, ids))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(task,)) for task in KINDS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    for task, outputs in results.items():
        assert len(outputs) == 5
        for out in outputs:
            assert_close_scaled(out, expected[task])
    with pytest.raises(TaskSelectionError, match="no task selected"):  # nothing leaked out
        tmole.model(input_ids=ids)


def test_a_new_thread_starts_without_the_callers_selection() -> None:
    tmole = TMoLEModel(tiny_llama(), make_config())
    seen: list[object] = []
    with tmole.task("rating"):
        thread = threading.Thread(target=lambda: seen.append(tmole.state.selection))
        thread.start()
        thread.join()
        assert tmole.state.selection is not None
    assert seen == [None] and tmole.state.selection is None


# ---- the LoRA baseline ---------------------------------------------------------------------


def test_lora_adapter_round_trip_merge_and_errors(tmp_path: Path) -> None:
    lora = LoRAAdapter(tiny_llama(), r=4, alpha=8.0, target_modules=TARGETS)
    assert lora.trainable_parameters() == 2 * 4 * (3 * (64 + 64) + (128 + 64))  # 2 layers
    with torch.no_grad():
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    ids = token_batch()
    with lora.task("anything"):
        expected = logits_of(lora.model, ids)
    assert_close_scaled(logits_of(lora.merge_into_base(), ids), expected)
    lora.save_pretrained(tmp_path)
    loaded = LoRAAdapter.from_pretrained(tiny_llama(), tmp_path)
    assert loaded.trainable_parameters() == lora.trainable_parameters()
    torch.testing.assert_close(logits_of(loaded.model, ids), expected, atol=0, rtol=0)
    other = tiny_llama(hidden=32)
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors does not fit"):
        LoRAAdapter.from_pretrained(other, tmp_path)
    assert not any("lora" in name for name, _ in other.named_modules())  # left untouched
