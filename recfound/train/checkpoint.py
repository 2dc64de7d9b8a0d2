"""Training checkpoints: an adapter directory plus optimiser and trainer state, each checkpoint
directory swapped in atomically.

A checkpoint is an adapter directory in the one adapter format
(:mod:`recfound.model.adapter_format`, type ``recfound``: ``adapter_config.json`` with the run's
:class:`~recfound.model.bundle.ModelSpec` and ``adapter_model.safetensors`` with the trainable
tensors, so :func:`~recfound.model.bundle.load_bundle` loads it as it loads a merged model) plus
``optimizer.safetensors`` (the AdamW state flattened into tensors; both tensor files gathered whole
with torch's distributed state-dict API, so one format serves one process, DDP and FSDP) and
``trainer_state.json`` with everything else needed to continue exactly where training stopped:
step, scheduler state, the sampling RNG and per-task data positions, and the torch RNG state.
In memory the tensors are one mapping: ``model.NAME`` (adapter) and ``opt.NAME.SLOT``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from recfound import artifacts
from recfound.errors import UserInputError
from recfound.model.adapter_format import (
    WEIGHTS_FILE,
    AdapterLoadError,
    read_adapter,
    save_adapter,
)
from recfound.model.bundle import ADAPTER_TYPE, load_adapter_tensors

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
MODEL_PREFIX = "model."  # adapter tensors; the rest of the file is optimizer state


class CheckpointError(UserInputError):
    """A checkpoint directory is missing, damaged or belongs to another model."""


def adapter_part(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a checkpoint file's contents, by parameter name."""
    return {
        k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)
    }


def torch_rng_state() -> str:
    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()


def set_torch_rng_state(encoded: str) -> None:
    raw = base64.b64decode(encoded)
    torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


# full tensors of the trainable parameters only, gathered to the main process's CPU (FSDP shards
# are collected; with one process or DDP it is the local copy)
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def training_tensors(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """The adapter weights (``model.NAME``) and AdamW state (``opt.NAME.SLOT``) of a plain,
    DDP- or FSDP-wrapped ``module`` whose parameter names start with ``prefix``.

    A collective under FSDP: every process calls it; the main process gets the tensors.
    """
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    weights = get_model_state_dict(module, options=FULL)
    state = {}
    if optimizer.state:  # before the first step there is none (and asking would make one up)
        state = get_optimizer_state_dict(module, optimizer, options=FULL).get("state", {})
    tensors = {  # a frozen weight tied to another name (the LM head) may come along: dropped
        f"{MODEL_PREFIX}{k.removeprefix(prefix)}": v
        for k, v in weights.items()
        if any(name.endswith(k) for name in trainable)
    }
    for name, slots in state.items():
        for slot, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{name.removeprefix(prefix)}.{slot}"] = tensor.detach().contiguous()
    return {k: v.contiguous() for k, v in tensors.items()}


def restore_training_tensors(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    prefix: str = "",
) -> None:
    """Put :func:`training_tensors` back into ``module`` and ``optimizer`` (every process calls
    it with the full tensors; FSDP keeps each process's shard)."""
    weights = {prefix + k: v for k, v in adapter_part(tensors).items()}
    set_model_state_dict(
        module, weights, options=StateDictOptions(full_state_dict=True, strict=False)
    )
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            name, slot = key.removeprefix("opt.").rsplit(".", 1)
            state.setdefault(prefix + name, {})[slot] = value
    if not state:
        return
    groups = get_optimizer_state_dict(module, optimizer)["param_groups"]
    set_optimizer_state_dict(
        module,
        optimizer,
        {"state": state, "param_groups": groups},
        options=StateDictOptions(full_state_dict=True),
    )


def write_checkpoint(
    directory: str | Path,
    tensors: dict[str, torch.Tensor],
    state: dict,
    spec: dict[str, Any] | None = None,
) -> None:
    """Write one checkpoint directory (``spec``: the run's ModelSpec as a dict); readers see the
    old or the new one, never a mix."""
    optimizer = {k: v for k, v in tensors.items() if not k.startswith(MODEL_PREFIX)}
    with artifacts.staged_directory(directory) as staging:
        save_adapter(staging, ADAPTER_TYPE, adapter_part(tensors), spec or {}, staged=True)
        save_file(optimizer, str(staging / OPTIMIZER_FILE))
        (staging / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))


def read_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (``model.*`` and ``opt.*``) and JSON state of a checkpoint directory."""
    directory = Path(directory)
    state_path, optimizer_path = directory / STATE_FILE, directory / OPTIMIZER_FILE
    if not (directory / WEIGHTS_FILE).is_file() or not state_path.is_file():
        raise CheckpointError(f"{directory} is not a training checkpoint (missing files)")
    try:
        _, _, adapter = read_adapter(directory, ADAPTER_TYPE, "recfound train")
        tensors = {f"{MODEL_PREFIX}{k}": v for k, v in adapter.items()}
        if optimizer_path.is_file():
            tensors.update(load_file(str(optimizer_path)))
        return tensors, json.loads(state_path.read_text())
    except (AdapterLoadError, SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory} is damaged: {exc}") from None


def check_adapter_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str):
    """Raise :class:`CheckpointError` unless ``tensors`` hold exactly ``model``'s trainable
    parameters with their shapes (checked before anything is loaded)."""
    try:
        load_adapter_tensors(model, adapter_part(tensors), source, check_only=True)
    except AdapterLoadError as exc:
        raise CheckpointError(str(exc)) from None


def complete_checkpoint(directory: str | Path) -> Path | None:
    """``directory`` if it holds a complete checkpoint, after finishing or undoing a replacement
    that a crash interrupted (the newest complete one wins); None when there is none."""
    directory = artifacts.recover_staged(directory)
    if (directory / WEIGHTS_FILE).is_file() and (directory / STATE_FILE).is_file():
        return directory
    return None


def load_checkpoint(directory: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load a checkpoint's adapter tensors into a plain ``model``; returns the JSON state."""
    tensors, state = read_checkpoint(directory)
    check_adapter_tensors(model, tensors, str(directory))
    load_adapter_tensors(model, adapter_part(tensors), str(directory))
    return state
