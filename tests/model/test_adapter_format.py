"""The one on-disk adapter format: every adapter kind (TMoLE, LoRA, option tuning) saves and loads
through it, bare (``save_pretrained``) and as the model bundle merge writes and serving loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load

from recfound.config import LoRAParams, OptionParams
from recfound.model.adapter_format import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    AdapterLoadError,
    adapter_parameters,
    safetensors_bytes,
)
from recfound.model.backbone import load_backbone
from recfound.model.build import AdapterSpec
from recfound.model.bundle import (
    ModelSpec,
    adapter_tensors,
    build_from_spec,
    load_bundle,
    read_spec,
    save_bundle,
)
from recfound.model.lora import LoRAAdapter
from recfound.model.option import OptionConfig, OptionModel
from recfound.model.tmole import TMoLEModel
from recfound.train.checkpoint import read_checkpoint, write_checkpoint
from tests.model.test_tmole import TARGETS, logits_of, make_config, tiny_llama, token_batch
from tests.train import tiny

BARE = {
    "tmole": lambda: TMoLEModel(tiny_llama(), make_config()),
    "lora": lambda: LoRAAdapter(tiny_llama(), r=4, alpha=8.0, target_modules=TARGETS),
    "option": lambda: OptionModel(
        tiny_llama(), OptionConfig(task_names=["rating", "next"], prompt_length=3, adapter_rank=2)
    ),
}
LOADER = {"tmole": TMoLEModel, "lora": LoRAAdapter, "option": OptionModel}
SPECS = {
    "tmole": tiny.ADAPTER,
    "lora": AdapterSpec(LoRAParams(rank=4, alpha=8.0), ("q_proj", "v_proj")),
    "option": AdapterSpec(OptionParams(prompt_length=2, adapter_rank=2)),
}


def header(directory: Path) -> tuple[str, int, str]:
    """(adapter_type, format_version) of the JSON and the adapter_type of the weights file."""
    payload = json.loads((directory / CONFIG_FILE).read_text())
    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format_version"] == str(FORMAT_VERSION)
    return payload["adapter_type"], payload["format_version"], metadata["adapter_type"]


def shift(parameters: dict[str, torch.Tensor]) -> None:
    """Move every adapter tensor off its initial value (LoRA's B and TMoLE's B start at 0)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tensor in parameters.values():
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))


@pytest.mark.parametrize("kind", sorted(BARE))
def test_each_adapter_kind_saves_and_loads_through_the_one_format(
    kind: str, tmp_path: Path
) -> None:
    adapter = BARE[kind]()
    shift(adapter_parameters(adapter.model))
    adapter.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert header(tmp_path) == (kind, FORMAT_VERSION, kind)
    loaded = LOADER[kind].from_pretrained(tiny_llama(), tmp_path)
    saved = adapter_parameters(adapter.model)
    again = adapter_parameters(loaded.model)
    assert sorted(again) == sorted(saved)
    for name, value in saved.items():
        assert torch.equal(again[name], value), name
    ids = token_batch()
    task = "rating" if kind != "lora" else "anything"
    with adapter.task(task), loaded.task(task):
        assert torch.equal(logits_of(loaded.model, ids), logits_of(adapter.model, ids))
    other = "option" if kind != "option" else "tmole"  # another kind's loader refuses it
    with pytest.raises(AdapterLoadError, match=f"does not describe a {other} adapter"):
        LOADER[other].from_pretrained(tiny_llama(), tmp_path)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_a_bundle_of_each_adapter_kind_is_the_same_format(
    kind: str, tiny_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    backbone, _ = tiny_bundle
    tasks = {"genre": "generative", "match": "embedding"}
    spec = ModelSpec(adapter=SPECS[kind], task_kinds=tasks, seed=0, max_length=48)
    rec = build_from_spec(*load_backbone(backbone), spec)
    shift(adapter_parameters(rec.model))
    bundle = save_bundle(tmp_path / "bundle", spec, adapter_tensors(rec.model), note=kind)
    assert sorted(p.name for p in bundle.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert header(bundle) == ("recfound", FORMAT_VERSION, "recfound")
    assert read_spec(bundle) == (spec, {"note": kind})
    again = load_bundle(backbone, bundle)
    for name, value in adapter_tensors(rec.model).items():
        assert torch.equal(adapter_tensors(again.model)[name], value), name
    texts = ["Toy Story (1995)", "GoldenEye (1995)"]
    rec.model.eval()
    assert torch.equal(again.embed(texts, "match"), rec.embed(texts, "match"))
    # a training checkpoint is the same adapter directory, with optimiser and trainer state
    tensors = {f"model.{k}": v for k, v in adapter_tensors(rec.model).items()}
    tensors["opt.x.exp_avg"] = torch.zeros(2)
    write_checkpoint(tmp_path / "last", tensors, {"step": 1}, spec.to_dict())
    assert header(tmp_path / "last") == ("recfound", FORMAT_VERSION, "recfound")
    resumed = load_bundle(backbone, tmp_path / "last")
    assert torch.equal(resumed.embed(texts, "match"), rec.embed(texts, "match"))
    assert read_checkpoint(tmp_path / "last")[0].keys() == tensors.keys()


def test_weights_files_of_equal_tensors_are_equal_bytes() -> None:
    """safetensors orders the header's metadata by a per-process hash map; the adapter format
    sorts it, so equal tensors give an equal file (and DVC hash) on every run. With a dozen keys
    an unsorted writer would put them in sorted order once in 12! tries."""
    tensors = {"b.weight": torch.randn(3, 2), "a": torch.arange(5)}
    metadata = {f"key{i:02d}": f"value {i}" for i in reversed(range(12))}
    data = safetensors_bytes(tensors, metadata)
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    assert list(header["__metadata__"]) == sorted(metadata)
    assert (8 + length) % 8 == 0
    shuffled = safetensors_bytes(dict(reversed(tensors.items())), dict(sorted(metadata.items())))
    assert data == shuffled
    loaded = load(data)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
