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

TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "trainer_state.json"


class CheckpointError(UserInputError):
    """A checkpoint directory is missing, damaged or belongs to another model."""


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes, by name (the adapter's)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


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
    tensors = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in trainable_tensors(model).items()
    }
    if optimizer is not None:
        tensors.update(optimizer_tensors(optimizer))
    with artifacts.staged_directory(directory) as staging:
        save_file(tensors, str(staging / TENSORS_FILE))
        (staging / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))


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
    expected = trainable_tensors(model)
    found = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    if set(found) != set(expected):
        missing = sorted(set(expected) - set(found))[:3]
        extra = sorted(set(found) - set(expected))[:3]
        raise CheckpointError(
            f"{directory} does not match this model: missing {missing}, unexpected {extra}"
        )
    with torch.no_grad():
        for name, param in expected.items():
            if found[name].shape != param.shape:
                raise CheckpointError(
                    f"{directory}: {name} has shape {tuple(found[name].shape)}, the model "
                    f"expects {tuple(param.shape)}"
                )
            param.copy_(found[name])
    if optimizer is not None:
        restore_optimizer(optimizer, tensors)
    return state
