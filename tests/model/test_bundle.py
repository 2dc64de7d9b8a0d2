"""Model bundles (what merge writes and evaluation/serving load) and batched generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from recfound.model.adapter_format import CONFIG_FILE, WEIGHTS_FILE, AdapterLoadError
from recfound.model.bundle import (
    adapter_tensors,
    load_adapter_tensors,
    load_bundle,
    read_spec,
    save_bundle,
)


def test_load_gives_the_saved_tensors_and_the_same_outputs(tiny_bundle, tmp_path: Path) -> None:
    backbone, bundle = tiny_bundle
    rec = load_bundle(backbone, bundle)
    spec, _ = read_spec(bundle)
    copy = save_bundle(tmp_path / "copy", spec, adapter_tensors(rec.model), note="round trip")
    again = load_bundle(backbone, copy)
    for name, value in adapter_tensors(rec.model).items():
        assert torch.equal(value, adapter_tensors(again.model)[name]), name
    texts = ["Toy Story (1995)", "GoldenEye (1995)"]
    assert torch.allclose(rec.embed(texts, "match"), again.embed(texts, "match"), atol=1e-6)
    assert read_spec(copy)[1] == {"note": "round trip"}


def test_damaged_or_foreign_bundles_are_clear_errors(tiny_bundle, tmp_path: Path) -> None:
    backbone, bundle = tiny_bundle
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(AdapterLoadError, match="cannot be read"):
        load_bundle(backbone, broken)

    foreign = tmp_path / "foreign"
    shutil.copytree(bundle, foreign)
    raw = json.loads((foreign / CONFIG_FILE).read_text())
    raw["config"]["adapter"]["settings"]["rank"] *= 2  # tensors no longer fit the spec
    (foreign / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(AdapterLoadError, match="shapes differ"):
        load_bundle(backbone, foreign)

    with pytest.raises(AdapterLoadError, match="not a RecFound model bundle"):
        load_bundle(backbone, tmp_path)


def test_batched_generation_equals_one_prompt_at_a_time(tiny_bundle) -> None:
    rec = load_bundle(*tiny_bundle)
    prompts = ["Toy Story (1995)", "A much longer title: GoldenEye (1995), Four Rooms", "Heat"]
    batched = rec.generate(prompts, "genre", max_new_tokens=6, batch_size=3)
    single = [rec.generate([p], "genre", max_new_tokens=6)[0] for p in prompts]
    assert batched == single
    assert rec.tokenizer.padding_side == "right"  # restored after generation


def test_adapter_snapshot_is_a_copy(tiny_bundle) -> None:
    rec = load_bundle(*tiny_bundle)
    snapshot = adapter_tensors(rec.model)
    before = {k: v.clone() for k, v in snapshot.items()}
    load_adapter_tensors(rec.model, {k: v + 1.0 for k, v in snapshot.items()}, "shifted")
    for name, value in snapshot.items():
        assert torch.equal(value, before[name]), name
        assert not torch.equal(value, adapter_tensors(rec.model)[name]), name


def test_a_spec_without_nested_settings_is_refused(tiny_bundle, tmp_path: Path) -> None:
    """The flat adapter spec of bundles written before the settings were nested is not read."""
    _, bundle = tiny_bundle
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    raw = json.loads((old / CONFIG_FILE).read_text())
    adapter = raw["config"]["adapter"]
    raw["config"]["adapter"] = {**adapter.pop("settings"), **adapter}
    (old / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(AdapterLoadError, match="damaged.*settings"):
        read_spec(old)


def test_a_bad_adapter_setting_in_a_bundle_names_the_key(tiny_bundle, tmp_path: Path) -> None:
    backbone, bundle = tiny_bundle
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    raw = json.loads((bad / CONFIG_FILE).read_text())
    raw["config"]["adapter"]["settings"]["rank"] = 0
    (bad / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(AdapterLoadError, match="damaged.*rank"):
        read_spec(bad)
