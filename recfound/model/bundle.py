"""A shippable adapted model: backbone directory + one adapter directory with its spec.

A *bundle* is an adapter directory in the one adapter format
(:mod:`recfound.model.adapter_format`) of type ``recfound``:

- ``adapter_config.json``: its ``config`` is the :class:`ModelSpec`: the adapter spec
  (:class:`AdapterSpec`), the task → kind map, the :class:`RecModel` settings (pooling, embedding
  attention, max length, temperature) and the seed the adapter was initialised with;
- ``adapter_model.safetensors``: every trainable (adapter) tensor by parameter name.

It is what the merge step writes and what evaluation, the registry and the MLflow pyfunc load.
The backbone is not copied into the bundle: it is the directory the ``pretrain`` stage wrote (or
the user's checkpoint), passed alongside. Loading rebuilds the adapter from the spec on that
backbone and copies the tensors in, checking names and shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from recfound import artifacts
from recfound.config import describe_error
from recfound.model.adapter_format import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterLoadError,
    adapter_parameters,
    copy_adapter_tensors,
    read_adapter,
    read_adapter_config,
    save_adapter,
    write_adapter_config,
)
from recfound.model.backbone import load_backbone
from recfound.model.build import AdapterSpec, build_rec_model
from recfound.model.recmodel import RecModel

ADAPTER_TYPE = "recfound"  # a whole RecModel: the config is its ModelSpec
WRITER = "recfound merge (save_bundle)"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a :class:`RecModel` around a backbone."""

    adapter: AdapterSpec
    task_kinds: dict[str, str]
    seed: int
    pooling: str = "mean"
    embedding_attention: str = "bidirectional"
    max_length: int = 256
    temperature: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "adapter": self.adapter.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        return cls(**{**raw, "adapter": AdapterSpec.from_dict(raw["adapter"])})


def build_from_spec(base: torch.nn.Module, tokenizer, spec: ModelSpec) -> RecModel:
    """A freshly initialised :class:`RecModel` (adapter at its seeded initial values)."""
    return build_rec_model(
        base,
        tokenizer,
        spec.adapter,
        spec.task_kinds,
        seed=spec.seed,
        pooling=spec.pooling,
        embedding_attention=spec.embedding_attention,
        max_length=spec.max_length,
        temperature=spec.temperature,
    )


def adapter_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A snapshot of the adapter's (trainable) tensors by parameter name, on CPU.

    Always copies: loading other tensors into the model later does not change the snapshot (the
    merge step keeps the initial adapter as the base of its task vectors this way).
    """
    return {
        name: p.detach().to("cpu", copy=True).contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_adapter_tensors(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, check_only: bool = False
) -> None:
    """Copy ``tensors`` into the model's trainable parameters (names and shapes checked first,
    so a mismatch leaves the model as it was; ``check_only`` copies nothing)."""
    copy_adapter_tensors(adapter_parameters(model), tensors, source, check_only)


def save_bundle(
    directory: str | Path, spec: ModelSpec, tensors: dict[str, torch.Tensor], **extra: Any
) -> Path:
    """Write a bundle atomically (readers see the old directory or the new one, never a mix).

    ``extra`` entries are stored in ``adapter_config.json`` under ``"info"`` (e.g. merge settings).
    """
    directory = Path(directory)
    with artifacts.staged_directory(directory) as staging:
        save_adapter(staging, ADAPTER_TYPE, tensors, spec.to_dict(), extra, staged=True)
    return directory


def write_spec(directory: str | Path, spec: ModelSpec) -> None:
    """The spec alone (``adapter_config.json``): what the train stage writes above its
    checkpoints, so that merge rebuilds the model they belong to."""
    write_adapter_config(directory, ADAPTER_TYPE, spec.to_dict())


def read_spec(directory: str | Path) -> tuple[ModelSpec, dict[str, Any]]:
    """The :class:`ModelSpec` and ``info`` of a bundle (or of the training run whose
    checkpoints are below ``directory``)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise AdapterLoadError(f"{path} is missing; {directory} is not a RecFound model bundle")
    raw, info = read_adapter_config(directory, ADAPTER_TYPE, WRITER)
    try:
        return ModelSpec.from_dict(raw), info
    except ValidationError as exc:  # the adapter's settings
        lines = "; ".join(describe_error(e) for e in exc.errors())
        raise AdapterLoadError(f"{path} is damaged: adapter settings: {lines}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AdapterLoadError(f"{path} is damaged: {exc}") from None


def load_bundle(
    backbone_dir: str | Path, directory: str | Path, device: torch.device | str = "cpu"
) -> RecModel:
    """The bundle's model on the backbone in ``backbone_dir``, on ``device``, ready for inference
    (eval mode)."""
    spec, _ = read_spec(directory)
    _, _, tensors = read_adapter(directory, ADAPTER_TYPE, WRITER)
    weights = Path(directory) / WEIGHTS_FILE
    base, tokenizer = load_backbone(backbone_dir)
    rec = build_from_spec(base, tokenizer, spec)
    rec.model.to(device)
    load_adapter_tensors(rec.model, tensors, str(weights))
    rec.model.eval()
    return rec
