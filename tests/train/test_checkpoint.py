"""Replacing a checkpoint folder never loses the newest complete checkpoint, whatever step of the
replacement a crash interrupts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from recfound import artifacts
from recfound.train.checkpoint import complete_checkpoint, load_checkpoint, write_checkpoint


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


def _model() -> torch.nn.Module:
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    return model


def _save(directory: Path, step: int) -> None:
    tensors = {"model.weight": torch.full((2, 3), float(step))}
    write_checkpoint(directory, tensors, {"step": step})


@pytest.mark.parametrize(
    ("crash_at", "newest_complete"),
    # the renames of one replacement: staging -> .last.next (the new one is complete),
    # last -> .last.previous, .last.next -> last
    [(1, 1), (2, 2), (3, 2)],
)
def test_an_interrupted_replacement_resumes_from_the_newest_complete_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int, newest_complete: int
) -> None:
    directory = tmp_path / "last"
    _save(directory, 1)
    real_replace, calls = os.replace, []

    def replace_then_crash(src, dst) -> None:
        calls.append((src, dst))
        if len(calls) == crash_at:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace_then_crash)
    with pytest.raises(Crash):
        _save(directory, 2)
    monkeypatch.setattr(artifacts.os, "replace", real_replace)

    found = complete_checkpoint(directory)
    assert found == directory
    state = load_checkpoint(found, model := _model())
    assert state["step"] == newest_complete
    assert float(model.weight.detach()[0, 0]) == newest_complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # nothing stale left
    _save(directory, 3)  # and the next replacement works
    assert json.loads((directory / "trainer_state.json").read_text())["step"] == 3


def test_stale_staging_folders_are_removed_and_a_missing_checkpoint_is_none(
    tmp_path: Path,
) -> None:
    stale = tmp_path / ".last.abc123.staging"
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_bytes(b"half")
    assert complete_checkpoint(tmp_path / "last") is None
    assert not stale.exists()
