"""Backbone + adapter + tokenizer → a :class:`RecModel`, from plain settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from recfound.model.lora import LoRAAdapter
from recfound.model.option import OptionConfig, OptionModel
from recfound.model.recmodel import RecModel
from recfound.model.tmole import TMoLEConfig, TMoLEModel


@dataclass(frozen=True)
class AdapterSpec:
    """Which adapter and its sizes (mirrors ``model`` in params.yaml)."""

    kind: str  # "tmole" | "lora" | "option"
    target_modules: tuple[str, ...]  # option: the modules of its small adapters
    rank: int  # option: the rank of its small adapters (0: none)
    alpha: float
    dropout: float = 0.0
    num_embedding_experts: int = 2
    num_shared_experts: int = 2
    num_generative_experts: int = 2
    task_embedding_dim: int = 32
    top_k: int | None = None
    gate_temperature: float = 1.0
    prompt_length: int = 8  # option: options per task
    deep_prompts: bool = False  # option: options at every decoder layer's input


def attach_adapter(
    base: torch.nn.Module, spec: AdapterSpec, task_kinds: Mapping[str, str], seed: int
) -> TMoLEModel | LoRAAdapter | OptionModel:
    """Freeze ``base`` and wrap it with the adapter named by ``spec.kind``."""
    if spec.kind == "option":
        option = OptionConfig(
            task_names=sorted(task_kinds),
            prompt_length=spec.prompt_length,
            deep=spec.deep_prompts,
            adapter_rank=spec.rank,
            adapter_alpha=spec.alpha,
            adapter_modules=list(spec.target_modules),
            seed=seed,
        )
        return OptionModel(base, option)
    if spec.kind == "lora":
        return LoRAAdapter(
            base,
            r=spec.rank,
            alpha=spec.alpha,
            dropout=spec.dropout,
            target_modules=list(spec.target_modules),
            seed=seed,
        )
    config = TMoLEConfig(
        r=spec.rank,
        alpha=spec.alpha,
        num_embedding_experts=spec.num_embedding_experts,
        num_shared_experts=spec.num_shared_experts,
        num_generative_experts=spec.num_generative_experts,
        task_names=sorted(task_kinds),
        task_kinds=dict(task_kinds),
        task_embedding_dim=spec.task_embedding_dim,
        top_k=spec.top_k,
        gate_temperature=spec.gate_temperature,
        dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        seed=seed,
    )
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
