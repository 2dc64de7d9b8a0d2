"""What pretraining trains (``pretrain.trainable``) and whether that fits the device.

- ``full``: every weight (the builtin backbone's default: it starts from random weights).
- ``identifiers``: only the item-identifier rows of the input embedding (and of the LM head when
  it is not tied); everything else is frozen. A gradient hook zeroes every other row's gradient
  and the tensor gets no weight decay, so AdamW leaves those rows bit-identical (a zero gradient
  with zero moments is a zero update). The default for a user's checkpoint.
- ``adapter``: the identifier rows plus a LoRA of rank ``pretrain.adapter_rank`` on the family's
  projections (peft), merged into the weights after pretraining, so the result is again a plain
  checkpoint.

Before training, :func:`estimate_memory` gives the bytes a setting needs (weights, gradients and
AdamW moments of the trainable tensors, activations, logits); :func:`check_fits` stops a setting
that cannot fit with :class:`PretrainMemoryError`, saying what it needs, what is there and which
setting would fit. The estimate is a planning figure (fp32 weights and states, no allocator
overhead), not a measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from recfound.errors import UserInputError
from recfound.model.families import in_out_features, is_projection, resolve_target_modules

TRAINABLE = ("identifiers", "adapter", "full")
GIB = 1024**3
FLOAT_BYTES = 4  # fp32 weights, gradients and AdamW moments


class PretrainMemoryError(UserInputError):
    """The chosen pretraining setting needs more memory than the device has."""


def resolve_trainable(setting: str, builtin: bool) -> str:
    """``auto`` → ``full`` for the builtin backbone (random weights), ``identifiers`` for a user's
    checkpoint; any other value as given."""
    if setting == "auto":
        return "full" if builtin else "identifiers"
    return setting


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a pretraining setting needs on its device."""

    trainable: str
    gradient_checkpointing: bool
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "activations", "logits")
        detail = ", ".join(f"{p} {getattr(self, p) / GIB:.2f}" for p in parts)
        checkpointing = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return (
            f"pretrain.trainable={self.trainable}{checkpointing}: about {self.total / GIB:.2f} "
            f"GiB ({detail} GiB)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def _embedding_rows(model: nn.Module) -> int:
    """Scalars of the input embedding, plus the LM head's when it is a separate tensor."""
    inputs = model.get_input_embeddings().weight
    outputs = model.get_output_embeddings()
    untied = outputs is not None and outputs.weight is not inputs
    return inputs.numel() + (outputs.weight.numel() if untied else 0)


def lora_parameters(model: nn.Module, rank: int, targets: Sequence[str]) -> int:
    """Scalars of a rank-``rank`` LoRA on the projections named by ``targets``."""
    total = 0
    for name, module in model.named_modules():
        if is_projection(module) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * sum(in_out_features(module))
    return total


def estimate_memory(
    model: nn.Module,
    trainable: str,
    *,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    adapter_rank: int = 16,
) -> MemoryEstimate:
    """The bytes pretraining ``model`` with this setting needs (fp32 throughout).

    Trainable scalars ``T`` cost a gradient and two AdamW moments (``12 T`` bytes): every weight
    for ``full``; the whole embedding tensor(s) for ``identifiers`` (the gradient is dense, only
    its identifier rows are kept); plus the LoRA for ``adapter``. Activations per token and layer:
    about ``10 hidden + 4 intermediate`` floats kept for the backward pass (SDPA attention keeps
    no score matrix); with gradient checkpointing only each layer's input is kept, plus one
    layer's activations recomputed at a time. Logits: the ``vocab`` floats per token three times
    (logits, their softmax, its gradient).
    """
    config = model.config
    hidden = int(getattr(config, "hidden_size", getattr(config, "n_embd", 0)))
    layers = int(getattr(config, "num_hidden_layers", getattr(config, "n_layer", 1)))
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    vocab = model.get_input_embeddings().weight.shape[0]
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if trainable == "full":
        learned = params
    elif trainable == "identifiers":
        learned = _embedding_rows(model)
    else:
        targets = resolve_target_modules(model, ["auto"])
        learned = _embedding_rows(model) + lora_parameters(model, adapter_rank, targets)
    tokens = batch_size * seq_len
    per_layer = tokens * (10 * hidden + 4 * intermediate) * FLOAT_BYTES
    if gradient_checkpointing:
        activations = layers * tokens * hidden * FLOAT_BYTES + per_layer
    else:
        activations = layers * per_layer
    return MemoryEstimate(
        trainable=trainable,
        gradient_checkpointing=gradient_checkpointing,
        weights=params * FLOAT_BYTES,
        gradients=learned * FLOAT_BYTES,
        optimizer=2 * learned * FLOAT_BYTES,
        activations=activations,
        logits=3 * tokens * vocab * FLOAT_BYTES,
    )


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(
    chosen: MemoryEstimate,
    available: int,
    estimate: Callable[[str, bool], MemoryEstimate],
    device: str,
) -> None:
    """Raise :class:`PretrainMemoryError` when ``chosen`` needs more than ``available`` bytes.

    ``estimate(trainable, gradient_checkpointing)`` gives the other settings, so the message can
    name those that would fit (cheapest first) or say that none does.
    """
    if chosen.total <= available:
        return
    options = [estimate(t, c) for t in reversed(TRAINABLE) for c in (False, True)]
    fitting = [o for o in options if o.total <= available]
    if fitting:
        best = max(fitting, key=lambda o: (TRAINABLE.index(o.trainable), -o.total))
        suggestion = (
            f"set pretrain.trainable: {best.trainable}"
            + (" and pretrain.gradient_checkpointing: true" if best.gradient_checkpointing else "")
            + f" (about {best.total / GIB:.2f} GiB)"
        )
    else:
        smallest = min(options, key=lambda o: o.total)
        suggestion = (
            f"no setting fits at this batch size and length (the smallest, "
            f"{smallest.describe()}); lower pretrain.batch_size or pretrain.seq_len, or use a "
            "device with more memory"
        )
    raise PretrainMemoryError(
        f"pretraining cannot fit on {device}: {chosen.describe()}, but only "
        f"{available / GIB:.2f} GiB is free; {suggestion}"
    )


# ---- making only the chosen tensors trainable --------------------------------------------------


def row_mask_hook(rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tensor hook keeping the gradient of ``rows`` only (every other row's becomes 0)."""

    def keep_rows(grad: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(grad.shape[0], 1, dtype=grad.dtype, device=grad.device)
        mask[rows.to(grad.device)] = 1
        return grad * mask

    return keep_rows


@dataclass
class PretrainTarget:
    """The module pretraining calls, its optimiser groups, and how to get the plain model back."""

    module: nn.Module
    parameter_groups: list[dict] | None  # None: every parameter, one group (``full``)
    finish: Callable[[], nn.Module]
    trainable_parameters: int


def prepare_trainable(
    model: nn.Module,
    trainable: str,
    identifier_ids: Sequence[int],
    *,
    weight_decay: float,
    adapter_rank: int = 16,
    seed: int = 0,
) -> PretrainTarget:
    """Set up ``model`` so that pretraining trains what ``trainable`` names (see the module
    docstring). ``identifier_ids`` are the item identifiers' token ids (their embedding rows)."""
    if trainable == "full":
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return PretrainTarget(model, None, lambda: model, count)
    rows = torch.tensor(sorted(set(int(i) for i in identifier_ids)), dtype=torch.long)
    module: nn.Module = model
    adapter_params: list[nn.Parameter] = []
    if trainable == "adapter":
        from peft import LoraConfig, get_peft_model
        from transformers.pytorch_utils import Conv1D

        targets = resolve_target_modules(model, ["auto"])
        conv = any(isinstance(m, Conv1D) for m in model.modules())
        config = LoraConfig(
            r=adapter_rank,
            lora_alpha=2.0 * adapter_rank,
            target_modules=targets,
            fan_in_fan_out=conv,
            bias="none",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = get_peft_model(model, config)
        adapter_params = [p for p in module.parameters() if p.requires_grad]
    else:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    embeddings = {id(w): w for w in _embedding_tensors(model)}.values()
    hooks = []
    for weight in embeddings:
        weight.requires_grad_(True)
        hooks.append(weight.register_hook(row_mask_hook(rows)))
    groups = [{"params": list(embeddings), "weight_decay": 0.0}]
    if adapter_params:
        groups.append({"params": adapter_params, "weight_decay": weight_decay})

    def finish() -> nn.Module:
        for hook in hooks:
            hook.remove()
        plain = module.merge_and_unload() if trainable == "adapter" else model
        for parameter in plain.parameters():
            parameter.requires_grad_(True)
        return plain

    count = sum(p.numel() for group in groups for p in group["params"])
    return PretrainTarget(module, groups, finish, count)


def _embedding_tensors(model: nn.Module) -> list[nn.Parameter]:
    tensors = [model.get_input_embeddings().weight]
    outputs = model.get_output_embeddings()
    if outputs is not None:
        tensors.append(outputs.weight)
    return tensors
