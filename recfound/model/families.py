"""The Hugging Face causal-LM families RecFound adapts, and what differs between them.

A family is read from ``config.model_type``. What a family decides:

- **where adapters go** (``model.target_modules: auto``): every projection of attention and MLP,
  by the family's own layer names. peft's per-architecture table
  (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``) names the attention projections only;
  RecFound adapts the MLP too, as its builtin backbone always did (``auto`` on the builtin Llama
  gives exactly the list params.yaml used to spell out). Fused projections (Phi-3's
  ``qkv_proj`` / ``gate_up_proj``, GPT-NeoX's ``query_key_value``) are adapted whole: a low-rank
  update of a fused weight is the same math as of an unfused one. GPT-2's ``Conv1D`` layers
  store their weight transposed (``(in, out)``); :func:`in_out_features` and
  :func:`weight_delta` hide that from the adapters.
- **whether the layer-by-layer runner** (:class:`recfound.inference.decoder.DecoderSteps`: late
  interaction, early exit, the device export) reproduces the family's forward exactly. It does
  for Llama, Mistral, Qwen2 (q/k/v biases live in the linears) and Qwen3 (q/k norms); the others
  (Gemma's scaled embeddings, sandwich norms and soft-capping, Phi-3's fused projections,
  GPT-2/GPT-NeoX's learned or partial positions) are refused by name rather than approximated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from recfound.errors import UserInputError

AUTO = "auto"

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class UnknownFamilyError(UserInputError):
    """``model.target_modules: auto`` on a model whose family RecFound has no defaults for."""


@dataclass(frozen=True)
class Family:
    """One architecture family: its adapter targets and what of RecFound runs it."""

    name: str
    target_modules: tuple[str, ...]
    layer_by_layer: bool  # DecoderSteps reproduces its forward (late interaction, exit, export)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama", LLAMA_TARGETS, True),
        Family("mistral", LLAMA_TARGETS, True),
        Family("qwen2", LLAMA_TARGETS, True),
        Family("qwen3", LLAMA_TARGETS, True),
        Family("gemma", LLAMA_TARGETS, False),
        Family("gemma2", LLAMA_TARGETS, False),
        Family("gemma3_text", LLAMA_TARGETS, False),
        Family("phi3", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"), False),
        Family("gpt2", ("c_attn", "c_proj", "c_fc"), False),
        Family("gpt_neox", ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"), False),
    )
}


def model_type(model: nn.Module) -> str:
    """``config.model_type`` of a transformers model (through a peft wrapper too)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def family_of(model: nn.Module) -> Family | None:
    """The model's :class:`Family`, or None for an architecture without defaults here."""
    return FAMILIES.get(model_type(model))


def layer_by_layer_families() -> list[str]:
    """Families whose forward :class:`~recfound.inference.decoder.DecoderSteps` reproduces."""
    return [name for name, family in FAMILIES.items() if family.layer_by_layer]


def resolve_target_modules(model: nn.Module, setting: Sequence[str]) -> list[str]:
    """The layer-name suffixes to adapt: ``setting`` as given, or the family's with ``auto``.

    ``setting`` is params.yaml's ``model.target_modules``: ``["auto"]`` (or empty) picks the
    family's list; any other list is the user's and wins.
    """
    setting = list(setting)
    if setting and setting != [AUTO]:
        if AUTO in setting:
            raise UnknownFamilyError(
                f"model.target_modules {setting} mixes 'auto' with layer names; give 'auto' "
                "alone or only layer names"
            )
        return setting
    family = family_of(model)
    if family is None:
        names = {n.rpartition(".")[2] for n, m in model.named_modules() if is_projection(m)}
        linears = sorted(names)
        raise UnknownFamilyError(
            f"model.target_modules is 'auto' but {model_type(model)!r} is not a family with "
            f"defaults (known: {sorted(FAMILIES)}); name the layers to adapt in "
            f"model.target_modules, e.g. from this model's linear layers {linears[:12]}"
        )
    return list(family.target_modules)


# ---- projections: nn.Linear and GPT-2's Conv1D --------------------------------------------------


def is_projection(module: nn.Module) -> bool:
    """An ``nn.Linear`` or a transformers ``Conv1D`` (GPT-2's linear with a transposed weight)."""
    return type(module) is nn.Linear or isinstance(module, Conv1D)


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of a projection (Conv1D's weight is ``(in, out)``)."""
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return int(module.in_features), int(module.out_features)


def weight_delta(module: nn.Module, delta: torch.Tensor) -> torch.Tensor:
    """``delta`` ``(out, in)`` laid out like ``module.weight`` (transposed for Conv1D)."""
    return delta.T if isinstance(module, Conv1D) else delta


def decoder_layer_list(model: nn.Module) -> nn.ModuleList | None:
    """The decoder's list of layers (``.layers``; GPT-2's ``.h``), or None."""
    decoder = model.base_model
    for name in ("layers", "h"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    return None
