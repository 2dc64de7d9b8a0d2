"""Model FLOPs per token, achieved TFLOP/s and MFU (model FLOPs utilisation) of a training step.

FLOPs come from the model's shape, not from a profiler (PaLM's accounting, Chowdhery et al. 2022,
appendix B): a token costs ``2 N`` in the forward pass over the ``N`` matmul weights (the LM head
included, the embedding lookup not), ``2 N`` to carry gradients back through them, ``2 T`` for the
weight gradients of the ``T`` trainable matmul weights (``T = N`` when everything trains; a frozen
backbone skips them), and ``12 L h s`` for attention over ``s`` positions (forward and backward).
MFU divides the achieved model FLOP/s by the device's peak: the dense bf16 peak of known GPUs,
or ``RECFOUND_PEAK_TFLOPS`` when set; on a CPU there is no peak and no MFU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

# dense bf16 tensor-core peaks (TFLOP/s) by a substring of torch.cuda.get_device_name()
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def matmul_parameters(model: nn.Module) -> int:
    """``N``: weights used in matmuls per token (every parameter but the input embedding; a tied
    LM head counts once as the head)."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique if p is not embedding)
    return total + (embedding.numel() if tied else 0)


def attention_flops_per_position(model: nn.Module) -> float:
    """``12 L h``: attention FLOPs (forward and backward) of one token per position it attends."""
    config = model.config
    hidden = int(getattr(config, "hidden_size", getattr(config, "n_embd", 0)))
    layers = int(getattr(config, "num_hidden_layers", getattr(config, "n_layer", 0)))
    return 12.0 * layers * hidden


def train_flops_per_token(model: nn.Module, seq_len: int, trainable_matmul: int) -> float:
    """Model FLOPs of one trained token (see the module docstring)."""
    n = matmul_parameters(model)
    return 4.0 * n + 2.0 * trainable_matmul + attention_flops_per_position(model) * seq_len


@dataclass(frozen=True)
class StepFlops:
    """Model FLOPs of a step that runs the LM head only where it is read (the multi-task
    trainer: answer positions of generative samples; none for embeddings, which pool hidden
    states). Same accounting as :func:`train_flops_per_token`, with the head counted apart."""

    body: int  # matmul weights without the LM head
    head: int  # LM head weights
    trainable: int  # trainable matmul weights (adapters): their weight gradients cost 2 each
    attention: float  # attention_flops_per_position

    @classmethod
    def of(cls, model: nn.Module, trainable_matmul: int) -> StepFlops:
        head = model.get_output_embeddings()
        head_size = head.weight.numel() if head is not None else 0
        n = matmul_parameters(model)
        return cls(n - head_size, head_size, trainable_matmul, attention_flops_per_position(model))

    def sequences(self, lengths: torch.Tensor, head_positions: int = 0) -> float:
        """FLOPs of training on sequences of ``lengths`` (tokens, padding excluded) with the head
        read at ``head_positions`` of them."""
        tokens = float(lengths.sum())
        attended = float((lengths.double() ** 2).sum())  # each token over its sequence's length
        per_token = 4.0 * self.body + 2.0 * self.trainable
        return per_token * tokens + self.attention * attended + 4.0 * self.head * head_positions


def peak_flops(device: torch.device) -> float | None:
    """The device's peak FLOP/s, or None where unknown (CPUs, GPUs not in the table)."""
    override = os.environ.get("RECFOUND_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def throughput_metrics(
    tokens_per_s: float, flops_per_token: float, device: torch.device
) -> dict[str, float]:
    """``model_tflops_per_s`` and, where the peak is known, ``mfu`` (0..1)."""
    achieved = tokens_per_s * flops_per_token
    out = {"model_tflops_per_s": achieved / 1e12}
    peak = peak_flops(device)
    if peak:
        out["mfu"] = achieved / peak
    return out
