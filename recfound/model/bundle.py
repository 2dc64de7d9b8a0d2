"""A shippable adapted model: backbone directory + one adapter-weights file + its spec.

A *bundle* directory holds

- ``model_spec.json``: the adapter spec (:class:`AdapterSpec`), the task → kind map, the
  :class:`RecModel` settings (pooling, embedding attention, max length, temperature) and the seed
  the adapter was initialised with;
- ``adapter.safetensors``: every trainable (adapter) tensor by parameter name.

It is what the merge step writes and what evaluation, the registry and the MLflow pyfunc load.
The backbone is not copied into the bundle: it is the directory the ``pretrain`` stage wrote (or
the user's checkpoint), passed alongside. Loading rebuilds the adapter from the spec on that
backbone and copies the tensors in, checking names and shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recfound import artifacts
from recfound.config import describe_error
from recfound.errors import UserInputError
from recfound.model.backbone import load_backbone
from recfound.model.build import AdapterSpec, build_rec_model
from recfound.model.recmodel import RecModel

SPEC_FILE = "model_spec.json"
WEIGHTS_FILE = "adapter.safetensors"


class BundleError(UserInputError):
    """A bundle directory is missing, damaged or does not fit the backbone."""


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


@torch.no_grad()
def load_adapter_tensors(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, check_only: bool = False
) -> None:
    """Copy ``tensors`` into the model's trainable parameters.

    Names and shapes are all checked before anything is copied, so a mismatch leaves the model
    as it was. ``check_only`` checks and copies nothing.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        raise BundleError(
            f"{source} does not match this model: missing {missing[:3]}, unexpected "
            f"{extra[:3]}; it was written for another adapter, backbone or task list"
        )
    for name, param in params.items():
        if tensors[name].shape != param.shape:
            raise BundleError(
                f"{source}: {name} has shape {tuple(tensors[name].shape)}, the model expects "
                f"{tuple(param.shape)}; it was written for another backbone"
            )
    if check_only:
        return
    for name, param in params.items():
        param.copy_(tensors[name].to(param.device, param.dtype))


def save_bundle(
    directory: str | Path, spec: ModelSpec, tensors: dict[str, torch.Tensor], **extra: Any
) -> Path:
    """Write a bundle atomically (readers see the old directory or the new one, never a mix).

    ``extra`` entries are stored in ``model_spec.json`` under ``"info"`` (e.g. merge settings).
    """
    directory = Path(directory)
    with artifacts.staged_directory(directory) as staging:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / WEIGHTS_FILE))
        payload = {**spec.to_dict(), "info": extra}
        (staging / SPEC_FILE).write_text(json.dumps(payload, indent=1, default=str))
    return directory


def read_spec(directory: str | Path) -> tuple[ModelSpec, dict[str, Any]]:
    """The bundle's :class:`ModelSpec` and its ``info`` mapping."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing; {directory} is not a RecFound model bundle")
    try:
        raw = json.loads(path.read_text())
        info = raw.pop("info", {})
        return ModelSpec.from_dict(raw), info
    except ValidationError as exc:  # the adapter's settings
        lines = "; ".join(describe_error(e) for e in exc.errors())
        raise BundleError(f"{path} is damaged: adapter settings: {lines}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path} is damaged: {exc}") from None


def load_bundle(
    backbone_dir: str | Path, directory: str | Path, device: torch.device | str = "cpu"
) -> RecModel:
    """The bundle's model on the backbone in ``backbone_dir``, on ``device``, ready for inference
    (eval mode)."""
    spec, _ = read_spec(directory)
    weights = Path(directory) / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights} cannot be read ({exc}); write the bundle again") from None
    base, tokenizer = load_backbone(backbone_dir)
    rec = build_from_spec(base, tokenizer, spec)
    rec.model.to(device)
    load_adapter_tensors(rec.model, tensors, str(weights))
    rec.model.eval()
    return rec
