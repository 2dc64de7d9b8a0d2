"""The one on-disk format of an adapter, and the one checked copy of saved tensors into a model.

An adapter directory holds two files, each written atomically:

- ``adapter_config.json``: ``{"format_version": 1, "adapter_type": ..., "config": {...},
  "info": {...}}``;
- ``adapter_model.safetensors``: every adapter tensor by its parameter name (its metadata repeats
  ``adapter_type`` and ``format_version``).

``adapter_type`` names what ``config`` describes: ``tmole``, ``lora`` or ``option`` for a bare
adapter (its own config; what ``save_pretrained`` writes and ``from_pretrained`` reads), and
``recfound`` for a whole :class:`~recfound.model.recmodel.RecModel` on a backbone (its
:class:`~recfound.model.bundle.ModelSpec`: the adapter kind and settings, tasks, pooling), as the
``merge`` stage writes the model bundle that evaluation, the registry and the pyfunc load.
``info`` is free-form (e.g. the merge settings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from recfound import artifacts
from recfound.errors import UserInputError

FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterLoadError(UserInputError):
    """An adapter directory is missing, damaged, or was saved for another model."""


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The ``safetensors`` file of ``tensors`` with its header's metadata in sorted key order.

    ``safetensors`` writes the metadata from a hash map whose order changes from process to
    process, so equal tensors would make files (and DVC hashes) that differ from run to run."""
    raw = save(dict(tensors), metadata=dict(metadata))
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the tensors' data stays 8-byte aligned, as safetensors pads
    return len(text).to_bytes(8, "little") + text + raw[8 + length :]


def save_adapter(
    directory: str | Path,
    adapter_type: str,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    *,
    staged: bool = False,
) -> Path:
    """Write an adapter directory (see the module docstring); returns ``directory``.

    Each file is written atomically, unless ``staged``: ``directory`` is then a staging
    directory that replaces its target as a whole (:func:`recfound.artifacts.staged_directory`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.detach().to("cpu").contiguous() for n, t in tensors.items()}
    metadata = {"adapter_type": adapter_type, "format_version": str(FORMAT_VERSION)}
    data = safetensors_bytes(tensors, metadata)
    if staged:
        (directory / WEIGHTS_FILE).write_bytes(data)
    else:
        artifacts.write_bytes(directory / WEIGHTS_FILE, data)
    write_adapter_config(directory, adapter_type, config, info, staged=staged)
    return directory


def write_adapter_config(
    directory: str | Path,
    adapter_type: str,
    config: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    *,
    staged: bool = False,
) -> None:
    """``adapter_config.json`` alone (atomically unless ``staged``): what :func:`save_adapter`
    writes beside the weights, or the spec of the training checkpoints below ``directory``."""
    payload = {
        "adapter_type": adapter_type,
        "format_version": FORMAT_VERSION,
        "config": dict(config),
        "info": dict(info or {}),
    }
    path = Path(directory) / CONFIG_FILE
    if staged:
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    else:
        artifacts.write_json(path, payload)


def read_adapter_config(
    directory: str | Path, adapter_type: str, writer: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``config`` and ``info`` of an adapter directory of ``adapter_type``.

    Raises :class:`AdapterLoadError` naming the file when it is missing, is not valid JSON,
    describes another adapter type, or has another format version.
    """
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise AdapterLoadError(
            f"{path} is missing; {directory} is not an adapter directory written by {writer}"
        )
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterLoadError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(payload, dict) or payload.get("adapter_type") != adapter_type:
        raise AdapterLoadError(f"{path} does not describe a {adapter_type} adapter (adapter_type)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise AdapterLoadError(
            f"{path} has format_version {payload.get('format_version')!r}; this code reads "
            f"version {FORMAT_VERSION}"
        )
    if not isinstance(payload.get("config"), dict):
        raise AdapterLoadError(f"{path} has no `config` mapping")
    return payload["config"], dict(payload.get("info") or {})


def read_adapter(
    directory: str | Path, adapter_type: str, writer: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """The ``config``, ``info`` and tensors of an adapter directory of ``adapter_type``."""
    config, info = read_adapter_config(directory, adapter_type, writer)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterLoadError(
            f"{path} is missing; {directory} is not an adapter directory written by {writer}"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise AdapterLoadError(
            f"{path} cannot be read ({error}); the file is damaged or truncated, save the "
            "adapter again"
        ) from error
    return config, info, tensors


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by name: every trainable one (the base is frozen)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def copy_adapter_tensors(
    params: Mapping[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
    source: str | Path,
    check_only: bool = False,
) -> None:
    """Copy saved ``tensors`` into ``params`` (by name) after checking names and shapes.

    Everything is checked before anything is copied, so a mismatch leaves the model as it was;
    ``check_only`` checks and copies nothing. Raises :class:`AdapterLoadError` naming ``source``.
    """
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise AdapterLoadError(
            f"{source} does not match this model's adapter: missing {len(missing)} tensors "
            f"{missing[:3]}, unexpected {len(unexpected)} tensors {unexpected[:3]}; it was "
            "written for another adapter, backbone, task list or target_modules"
        )
    wrong = [
        f"{name}: file {tuple(tensors[name].shape)} vs model {tuple(p.shape)}"
        for name, p in params.items()
        if tensors[name].shape != p.shape
    ]
    if wrong:
        raise AdapterLoadError(
            f"{source} does not fit this model: {len(wrong)} tensor shapes differ, e.g. "
            f"{'; '.join(wrong[:3])}; it was written for a model of other layer sizes or other "
            "tasks/experts"
        )
    if check_only:
        return
    for name, parameter in params.items():
        parameter.copy_(tensors[name].to(device=parameter.device, dtype=parameter.dtype))
