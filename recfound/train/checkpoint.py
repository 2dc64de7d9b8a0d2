"""Training checkpoints: safetensors + JSON, each checkpoint directory swapped in atomically.

A checkpoint holds the trainable (adapter) tensors, the AdamW state flattened into tensors, and a
JSON document with everything else needed to continue exactly where training stopped: step,
scheduler state, the sampling RNG and per-task data positions, and the torch RNG state.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recfound import artifacts
from recfound.errors import UserInputError
from recfound.model.bundle import BundleError, adapter_tensors, load_adapter_tensors

TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "trainer_state.json"
MODEL_PREFIX = "model."  # adapter tensors; the rest of the file is optimizer state


class CheckpointError(UserInputError):
    """A checkpoint directory is missing, damaged or belongs to another model."""


def adapter_part(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a checkpoint file's contents, by parameter name."""
    return {
        k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)
    }


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state as ``opt.{param_index}.{name}`` tensors (safetensors holds only tensors)."""
    state = optimizer.state_dict()["state"]
    out = {}
    for index, slots in state.items():
        for name, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"opt.{index}.{name}"] = tensor.detach().clone().contiguous()
    return out


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    full = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    full["state"] = state
    optimizer.load_state_dict(full)


def torch_rng_state() -> str:
    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()


def set_torch_rng_state(encoded: str) -> None:
    raw = base64.b64decode(encoded)
    torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> None:
    """Write one checkpoint directory; readers see the old or the new one, never a mix."""
    tensors = {f"{MODEL_PREFIX}{k}": v for k, v in adapter_tensors(model).items()}
    if optimizer is not None:
        tensors.update(optimizer_tensors(optimizer))
    with artifacts.staged_directory(directory) as staging:
        save_file(tensors, str(staging / TENSORS_FILE))
        (staging / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))


def complete_checkpoint(directory: str | Path) -> Path | None:
    """``directory`` if it holds a complete checkpoint, after finishing or undoing a replacement
    that a crash interrupted (the newest complete one wins); None when there is none."""
    directory = artifacts.recover_staged(directory)
    if (directory / TENSORS_FILE).is_file() and (directory / STATE_FILE).is_file():
        return directory
    return None


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load adapter tensors (and optimizer state) into place; returns the JSON state."""
    directory = Path(directory)
    tensor_path, state_path = directory / TENSORS_FILE, directory / STATE_FILE
    if not tensor_path.is_file() or not state_path.is_file():
        raise CheckpointError(f"{directory} is not a training checkpoint (missing files)")
    try:
        tensors = load_file(str(tensor_path))
        state = json.loads(state_path.read_text())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory} is damaged: {exc}") from None
    try:
        load_adapter_tensors(model, adapter_part(tensors), str(directory))
    except BundleError as exc:
        raise CheckpointError(str(exc)) from None
    if optimizer is not None:
        restore_optimizer(optimizer, tensors)
    return state
