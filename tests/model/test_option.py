"""Option tuning: options go in front of the tokens, learn tasks, fold, save, load, fit 1.5%."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from recfound.config import OptionParams
from recfound.model.adapter_format import AdapterLoadError
from recfound.model.build import AdapterSpec
from recfound.model.option import OptionConfig, OptionConfigError, OptionModel
from recfound.model.tmole import TaskSelectionError
from tests.model.test_tmole import logits_of, tiny_llama, token_batch, train_last_token
from tests.numeric import assert_close_scaled
from tests.train.tiny import tiny_model, tiny_tasks

TASKS = ["a", "b", "c"]


def make_option(
    deep: bool = False, rank: int = 0, seed: int = 0, prompt_length: int = 3
) -> OptionModel:
    config = OptionConfig(
        task_names=TASKS, prompt_length=prompt_length, deep=deep, adapter_rank=rank, seed=seed
    )
    return OptionModel(tiny_llama(), config)


@torch.no_grad()
def perturb_adapters(option: OptionModel) -> None:
    generator = torch.Generator().manual_seed(5)
    for name, tensor in option.adapter_state_dict().items():
        if "option_B" in name:
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))


def test_options_equal_embeddings_put_in_front_by_hand() -> None:
    option = make_option()
    ids = token_batch()
    with option.task("b"):
        got = logits_of(option.model, ids)
    prompts = option.prompts[1, 0].detach()  # task b, input layer: (P, hidden)
    plain = tiny_llama()  # the same frozen weights, without hooks
    embeds = plain.get_input_embeddings()(ids)
    front = prompts.expand(len(ids), -1, -1)
    with torch.no_grad():
        want = plain(inputs_embeds=torch.cat([front, embeds], 1)).logits[:, prompts.shape[0] :]
    assert got.shape == (*ids.shape, 200)
    assert_close_scaled(got, want)


@pytest.mark.parametrize(("deep", "rank"), [(False, 0), (True, 2)])
def test_mixed_task_batch_equals_each_task_alone(deep: bool, rank: int) -> None:
    option = make_option(deep=deep, rank=rank)
    perturb_adapters(option)
    ids = token_batch(batch=3)
    with option.task(TASKS):
        mixed = logits_of(option.model, ids)
    for row, task in enumerate(TASKS):
        with option.task(task):
            alone = logits_of(option.model, ids[row : row + 1])
        assert_close_scaled(mixed[row : row + 1], alone)
    assert (mixed[0] - mixed[1]).abs().max() > 1e-3  # tasks differ


def test_forward_without_task_or_with_unknown_task_raises() -> None:
    option = make_option()
    with pytest.raises(TaskSelectionError, match="no task selected"):
        logits_of(option.model, token_batch())
    with pytest.raises(TaskSelectionError, match="unknown tasks"), option.task("zzz"):
        pass


def test_config_rejects_bad_options_and_round_trips() -> None:
    config = OptionConfig(task_names=TASKS, prompt_length=4, deep=True, adapter_rank=2)
    assert OptionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(OptionConfigError, match="prompt_length"):
        OptionConfig(task_names=TASKS, prompt_length=0)
    with pytest.raises(OptionConfigError, match="unknown option config keys"):
        OptionConfig.from_dict({**config.to_dict(), "prompt_lenght": 3})


def test_left_padded_batched_generation_equals_one_prompt_at_a_time() -> None:
    """Cache, positions and masks shift by the options consistently (greedy, with KV cache)."""
    tasks = tiny_tasks(n_train=20, n_valid=4)
    spec = AdapterSpec(OptionParams(prompt_length=3, deep=True, adapter_rank=2))
    rec = tiny_model(tasks, adapter=spec)
    perturb_adapters(rec.adapter)
    prompts = ["Toy Story (1995) is a", "Heat", "GoldenEye (1995) and Four Rooms (1995)"]
    batched = rec.generate(prompts, "genre", max_new_tokens=6)
    tok = rec.tokenizer
    for prompt, answer in zip(prompts, batched, strict=True):
        ids = tok([prompt], return_tensors="pt")["input_ids"]
        with torch.no_grad(), rec.adapter.task("genre"):
            for _ in range(6):
                step = rec.model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
                if int(step) == tok.eos_token_id:
                    break
                ids = torch.cat([ids, step.view(1, 1)], 1)
        alone = tok.decode(ids[0, len(tok(prompt)["input_ids"]) :], skip_special_tokens=True)
        assert answer == alone.strip()


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_embeddings_do_not_depend_on_padding(attention: str) -> None:
    tasks = tiny_tasks(n_train=20, n_valid=4)
    spec = AdapterSpec(OptionParams(prompt_length=3, deep=True))
    rec = tiny_model(tasks, adapter=spec)
    rec.embedding_attention = attention
    texts = ["Heat", "GoldenEye (1995) and Four Rooms (1995) and Toy Story (1995)"]
    batch = rec.embed(texts, "match")
    for row, text in enumerate(texts):
        assert_close_scaled(batch[row], rec.embed([text], "match")[0])


def test_merge_into_base_folds_adapters_and_fixes_the_task() -> None:
    option = make_option(deep=True, rank=2)
    perturb_adapters(option)
    ids = token_batch()
    merged = option.merge_into_base("c")
    with option.task("c"):
        want = logits_of(option.model, ids)
    assert_close_scaled(logits_of(merged, ids), want)
    assert not any("option_A" in n for n, _ in merged.named_parameters())


def test_unload_returns_the_base_model() -> None:
    option = make_option(deep=True, rank=2)
    ids = token_batch()
    base = option.unload()
    torch.testing.assert_close(logits_of(base, ids), logits_of(tiny_llama(), ids))
    assert not base._forward_pre_hooks and not base.model._forward_pre_hooks_with_kwargs


def test_save_and_load_give_identical_outputs(tmp_path: Path) -> None:
    option = make_option(deep=True, rank=2)
    perturb_adapters(option)
    option.save_pretrained(tmp_path / "adapter")
    loaded = OptionModel.from_pretrained(tiny_llama(), tmp_path / "adapter")
    ids = token_batch()
    for task in TASKS:
        with option.task(task), loaded.task(task):
            assert torch.equal(logits_of(option.model, ids), logits_of(loaded.model, ids))


def test_loading_into_another_model_is_reported(tmp_path: Path) -> None:
    make_option().save_pretrained(tmp_path / "adapter")
    other = tiny_llama(hidden=32)
    with pytest.raises(AdapterLoadError, match="does not fit this model"):
        OptionModel.from_pretrained(other, tmp_path / "adapter")
    assert not hasattr(other, "option_prompts") and not other.model._forward_pre_hooks
    with pytest.raises(AdapterLoadError, match="is missing"):
        OptionModel.from_pretrained(tiny_llama(), tmp_path / "nothing")


def test_options_learn_tasks_that_share_their_inputs() -> None:
    """Same inputs, opposite answers: only the task's options can tell them apart (chance 50%).
    The backbone stays frozen."""
    torch.manual_seed(0)
    ids = torch.randint(20, 200, (96, 6), generator=torch.Generator().manual_seed(1))
    tasks = torch.arange(96) % 2
    labels = torch.where(tasks == 0, 10, 11)
    option = OptionModel(tiny_llama(), OptionConfig(task_names=["a", "b"], prompt_length=4))
    frozen = {n: p.clone() for n, p in option.model.named_parameters() if not p.requires_grad}
    losses = train_last_token(option, ids[:64], tasks[:64], labels[:64], steps=60, lr=5e-2)
    with torch.no_grad(), option.task(tasks[64:]):
        logits = option.model(input_ids=ids[64:]).logits[:, -1]
    predicted = torch.where(logits[:, 10] > logits[:, 11], 10, 11)
    accuracy = float((predicted == labels[64:]).float().mean())
    assert losses[-1] < 0.25 * losses[0]
    assert accuracy >= 0.8  # 32 held-out inputs; chance is 0.5 (P(>= 26/32 by chance) < 1e-3)
    for name, parameter in option.model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name])


def test_default_options_are_at_most_1_5_percent_of_the_default_backbone() -> None:
    """The default sizes (params.yaml: hidden 128, 3 layers; 4000 BPE tokens + 1682 item
    tokens of ml-100k) with the 19 default tasks."""
    config = LlamaConfig(
        vocab_size=4000 + 1682,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
    )
    base = LlamaForCausalLM(config)
    backbone = sum(p.numel() for p in base.parameters())
    defaults = OptionParams()
    config = OptionConfig(
        task_names=[f"task{i}" for i in range(19)],
        prompt_length=defaults.prompt_length,
        deep=defaults.deep,
        adapter_rank=defaults.adapter_rank,
    )
    option = OptionModel(base, config)
    assert option.trainable_parameters() == 19 * defaults.prompt_length * 128
    assert option.trainable_parameters() <= 0.015 * backbone


def test_trainer_trains_options_unchanged(tmp_path: Path) -> None:
    """The project's trainer, as it is, lowers every task's validation loss with options."""
    from recfound.train.trainer import Trainer
    from tests.train.test_trainer import PARAMS

    tasks = tiny_tasks()
    spec = AdapterSpec(OptionParams(prompt_length=4))
    rec = tiny_model(tasks, adapter=spec)
    result = Trainer(rec, tasks, PARAMS, tmp_path, seed=0).train()
    first = result.val_history[0][1]
    for task in ("genre", "year", "match"):
        assert result.final_val_loss[f"{task}/loss"] < first[f"{task}/loss"]
    assert (tmp_path / "last" / "adapter_model.safetensors").is_file()


def test_merged_option_bundle_loads_and_serves(tiny_bundle, tmp_path: Path) -> None:
    """Task vectors of options are plain tensors: TIES merges them, the bundle saves and loads
    them, and the registered pyfunc answers with them."""
    import pandas as pd

    from recfound.merge.methods import merge
    from recfound.model.backbone import load_backbone
    from recfound.model.bundle import (
        ModelSpec,
        adapter_tensors,
        build_from_spec,
        load_adapter_tensors,
        load_bundle,
        save_bundle,
    )
    from recfound.serving.pyfunc import RecFoundModel

    backbone, _ = tiny_bundle
    adapter = AdapterSpec(OptionParams(prompt_length=3, deep=True, adapter_rank=2))
    kinds = {"genre": "generative", "match": "embedding", "year": "generative"}
    spec = ModelSpec(adapter=adapter, task_kinds=kinds, seed=0, max_length=48)
    rec = build_from_spec(*load_backbone(backbone), spec)
    initial = adapter_tensors(rec.model)
    assert set(initial) >= {"option_prompts.weight"}
    generator = torch.Generator().manual_seed(0)
    checkpoints = [
        {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in initial.items()}
        for _ in range(2)
    ]
    merged = merge("ties", checkpoints, [1.0, 1.0], density=0.5, base=initial)
    load_adapter_tensors(rec.model, merged, "merged")
    save_bundle(tmp_path / "bundle", spec, merged)

    loaded = load_bundle(backbone, tmp_path / "bundle")
    prompts = ["Toy Story (1995)", "GoldenEye (1995) and Heat (1995)"]
    rec.model.eval()
    assert loaded.generate(prompts, "genre", max_new_tokens=5) == rec.generate(
        prompts, "genre", max_new_tokens=5
    )
    torch.testing.assert_close(loaded.embed(prompts, "match"), rec.embed(prompts, "match"))

    request = pd.DataFrame({"task": ["genre", "genre"], "input": prompts})
    expected = rec.generate(prompts, "genre", max_new_tokens=5)
    for folded in (True, False):  # options fixed per task, or selected per call
        served = RecFoundModel.from_dirs(backbone, tmp_path / "bundle", folded=folded)
        out = served.predict(None, request, params={"max_new_tokens": 5})
        assert out["generation"].tolist() == expected


@pytest.mark.parametrize(("deep", "rank"), [(False, 0), (True, 2)])
def test_gradients_of_a_batch_with_repeated_tasks_are_the_same_every_time(
    deep: bool, rank: int
) -> None:
    """The options and adapters of each sample's task are gathered with ``index_select``: the
    backward of ``weight[ids]`` accumulates repeated ids with atomic adds on CPU threads, whose
    order changes from run to run (the option_tuning ablation row came out different on a
    re-run at the same seed). 16 options per task: with 3, the sums are too small for threads."""
    option = make_option(deep=deep, rank=rank, prompt_length=16)
    perturb_adapters(option)
    ids = token_batch(batch=96, length=5)
    tasks = [TASKS[i % len(TASKS)] for i in range(len(ids))]
    params = [p for p in option.model.parameters() if p.requires_grad]

    def gradients() -> list[torch.Tensor]:
        option.model.zero_grad()
        with option.task(tasks):
            option.model(input_ids=ids).logits.square().mean().backward()
        return [p.grad.clone() for p in params]

    first = gradients()
    for _ in range(10):
        assert all(torch.equal(a, b) for a, b in zip(first, gradients(), strict=True))
