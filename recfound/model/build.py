"""Backbone + adapter + tokenizer → a :class:`RecModel`, from plain settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from recfound.config import LoRAParams, OptionParams, TMoLEParams
from recfound.model.families import resolve_target_modules
from recfound.model.lora import LoRAAdapter
from recfound.model.option import OptionConfig, OptionModel
from recfound.model.recmodel import RecModel
from recfound.model.tmole import TMoLEConfig, TMoLEModel

AdapterSettings = TMoLEParams | LoRAParams | OptionParams
SETTINGS_BY_KIND: dict[str, type[AdapterSettings]] = {
    "tmole": TMoLEParams,
    "lora": LoRAParams,
    "option": OptionParams,
}


@dataclass(frozen=True)
class AdapterSpec:
    """Which adapter, with its params.yaml section (``model.tmole`` / ``model.lora`` /
    ``model.option``) as it was validated, and the layers it wraps."""

    settings: AdapterSettings
    target_modules: tuple[str, ...] = ()
    """tmole / lora: suffixes of the layers to adapt (``nn.Linear`` or GPT-2's ``Conv1D``);
    ``("auto",)`` or empty: the backbone family's (:mod:`recfound.model.families`). option: its
    settings name the layers of its small adapters."""

    @property
    def kind(self) -> str:
        return next(k for k, t in SETTINGS_BY_KIND.items() if isinstance(self.settings, t))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target_modules": list(self.target_modules),
            "settings": self.settings.model_dump(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AdapterSpec:
        """Read :meth:`to_dict` output."""
        kind, targets = raw["kind"], tuple(raw.get("target_modules", ()))
        if kind not in SETTINGS_BY_KIND:
            raise ValueError(f"adapter kind {kind!r} is unknown; known: {sorted(SETTINGS_BY_KIND)}")
        if "settings" not in raw:
            raise ValueError("the adapter spec has no 'settings' mapping")
        return cls(SETTINGS_BY_KIND[kind](**raw["settings"]), targets)


def attach_adapter(
    base: torch.nn.Module, spec: AdapterSpec, task_kinds: Mapping[str, str], seed: int
) -> TMoLEModel | LoRAAdapter | OptionModel:
    """Freeze ``base`` and wrap it with the adapter ``spec`` describes."""
    settings = spec.settings
    if isinstance(settings, OptionParams):
        return OptionModel(base, OptionConfig.for_tasks(settings, list(task_kinds), seed))
    targets = resolve_target_modules(base, spec.target_modules)
    if isinstance(settings, LoRAParams):
        return LoRAAdapter(
            base,
            r=settings.rank,
            alpha=settings.alpha,
            dropout=settings.dropout,
            target_modules=targets,
            seed=seed,
        )
    config = TMoLEConfig.for_tasks(settings, dict(task_kinds), targets, seed)
    return TMoLEModel(base, config)


def build_rec_model(
    base: torch.nn.Module,
    tokenizer,
    spec: AdapterSpec,
    task_kinds: Mapping[str, str],
    *,
    seed: int,
    pooling: str = "mean",
    embedding_attention: str = "bidirectional",
    max_length: int = 256,
    temperature: float = 0.05,
) -> RecModel:
    torch.manual_seed(seed)
    adapter = attach_adapter(base, spec, task_kinds, seed)
    return RecModel(
        adapter,
        tokenizer,
        pooling=pooling,
        embedding_attention=embedding_attention,
        max_length=max_length,
        temperature=temperature,
    )
