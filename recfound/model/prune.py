"""Structured pruning of a Llama-style causal LM: attention heads and MLP channels (M6-Rec).

Importance is first-order (Molchanov et al. 2019; Michel et al. 2019 for heads): a head or an
MLP channel gets a gate ``g = 1`` on its output, and its score is ``|dL/dg|`` summed over batches
of *training or validation* records. That derivative is the sum of ``grad * weight`` over the
columns of ``o_proj`` that read the head (of ``down_proj`` that read the channel), so no gates
are inserted. Pruning then keeps the same number of heads (channels) in every layer, the most
important ones of each layer, so the result is a stock transformers model:
``num_attention_heads`` and ``intermediate_size`` shrink, ``head_dim`` stays, and
``save_pretrained`` / ``AutoModelForCausalLM.from_pretrained`` work unchanged. ``LlamaConfig``
insists that the hidden size be a multiple of the head count (transformers 5), so a pruned Llama
whose head count does not divide it becomes a ``MistralForCausalLM`` with ``sliding_window=None``:
the same computation (RMSNorm, rotary attention, SwiGLU, no biases) under a config that states
``head_dim`` explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedModel

from recfound.errors import UserInputError
from recfound.model.backbone import SHARE_KEY, decoder_layers


class PruneError(UserInputError):
    """The model cannot be pruned as asked (architecture, counts)."""


@dataclass
class Importance:
    """Scores (higher = more important): ``heads`` ``(layers, heads)``, ``channels``
    ``(layers, intermediate)``; ``batches`` says how many batches they sum over."""

    heads: torch.Tensor
    channels: torch.Tensor
    batches: int


# module name -> (kept output rows, kept input columns); None keeps that side whole
PrunePlan = dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]


COPIED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "rope_parameters",
    "attention_dropout",
)


def _check_prunable(model: nn.Module) -> tuple[str, nn.ModuleList, int, int]:
    config = model.config
    if config.model_type not in ("llama", "mistral") or any(
        getattr(config, flag, False) for flag in ("attention_bias", "mlp_bias")
    ):
        raise PruneError(
            f"pruning supports bias-free Llama/Mistral causal LMs, got {config.model_type!r}"
        )
    if getattr(config, "sliding_window", None):
        raise PruneError("sliding-window attention is not supported; prune a full-attention model")
    if int(getattr(config, SHARE_KEY, 1) or 1) > 1:
        raise PruneError("this backbone shares weights across layers; prune an unshared one")
    if config.num_key_value_heads != config.num_attention_heads:
        raise PruneError(
            f"grouped-query attention ({config.num_attention_heads} query heads, "
            f"{config.num_key_value_heads} key/value heads) is not supported; prune a model "
            "with one key/value head per query head"
        )
    prefix, layers = decoder_layers(model)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return prefix, layers, config.num_attention_heads, head_dim


def importance_scores(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]
) -> Importance:
    """Head and channel importance of ``model`` on ``batches`` (``model(**batch).loss`` must be
    the loss, i.e. batches hold ``labels``). Weights are unchanged; gradients are cleared."""
    _, layers, num_heads, head_dim = _check_prunable(model)
    watched = [
        w for layer in layers for w in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)
    ]
    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for w in watched:
        w.requires_grad_(True)
    heads = torch.zeros(len(layers), num_heads, dtype=torch.float64)
    channels = torch.zeros(len(layers), layers[0].mlp.down_proj.in_features, dtype=torch.float64)
    count = 0
    try:
        for batch in batches:
            for w in watched:
                w.grad = None
            model(**batch).loss.backward()
            for index, layer in enumerate(layers):
                o_proj, down = layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight
                per_head = (o_proj.grad * o_proj).double().view(-1, num_heads, head_dim)
                heads[index] += per_head.sum(dim=(0, 2)).abs().cpu()
                channels[index] += (down.grad * down).double().sum(dim=0).abs().cpu()
            count += 1
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = None
        model.train(was_training)
    if count == 0:
        raise PruneError("importance needs at least one batch of records")
    return Importance(heads=heads, channels=channels, batches=count)


def _sliced(layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach()
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
        bias = None if bias is None else bias.index_select(0, rows.to(weight.device))
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    out.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    out.weight.requires_grad_(layer.weight.requires_grad)
    return out


def _stock_model(model: PreTrainedModel, heads: int, head_dim: int, intermediate: int):
    """A fresh stock model with the sliced ``model``'s shapes and weights (see module doc)."""
    old = model.config
    values = {name: getattr(old, name) for name in COPIED_FIELDS}
    values.update(
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
    )
    if old.hidden_size % heads == 0 and old.model_type == "llama":
        config = LlamaConfig(**values)
    else:
        config = MistralConfig(**values, sliding_window=None)
    dtype = next(model.parameters()).dtype
    out = AutoModelForCausalLM.from_config(
        config, dtype=dtype, attn_implementation=old._attn_implementation
    )
    out.load_state_dict(model.state_dict(), strict=True)
    return out.to(next(model.parameters()).device).train(model.training)


@torch.no_grad()
def prune_model(
    model: PreTrainedModel, importance: Importance, heads_to_prune: int, channels_to_prune: int
) -> tuple[PreTrainedModel, PrunePlan]:
    """Remove the ``heads_to_prune`` least important heads and ``channels_to_prune`` least
    important MLP channels of every layer. Returns the pruned stock model (``model``'s layers
    are sliced in place on the way; use the returned one) and what each linear layer kept.

    Kept heads and channels stay in their original order, so pruning nothing reproduces the
    model exactly. Parameters drop by ``layers * (4 * hidden * head_dim * heads_to_prune +
    3 * hidden * channels_to_prune)`` (bias-free Llama layers).
    """
    prefix, layers, num_heads, head_dim = _check_prunable(model)
    intermediate = layers[0].mlp.down_proj.in_features
    if not 0 <= heads_to_prune < num_heads:
        raise PruneError(f"heads_to_prune must be in [0, {num_heads}), got {heads_to_prune}")
    if not 0 <= channels_to_prune < intermediate:
        raise PruneError(
            f"channels_to_prune must be in [0, {intermediate}), got {channels_to_prune}"
        )
    plan: PrunePlan = {}
    for index, layer in enumerate(layers):
        heads = importance.heads[index].topk(num_heads - heads_to_prune).indices.sort().values
        rows = (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        channels = importance.channels[index].topk(intermediate - channels_to_prune).indices
        channels = channels.sort().values
        name = f"{prefix}{index}"
        attention, mlp = layer.self_attn, layer.mlp
        for module, attr, keep in (
            (attention, "q_proj", (rows, None)),
            (attention, "k_proj", (rows, None)),
            (attention, "v_proj", (rows, None)),
            (attention, "o_proj", (None, rows)),
            (mlp, "gate_proj", (channels, None)),
            (mlp, "up_proj", (channels, None)),
            (mlp, "down_proj", (None, channels)),
        ):
            setattr(module, attr, _sliced(getattr(module, attr), *keep))
            part = "self_attn" if module is attention else "mlp"
            plan[f"{name}.{part}.{attr}"] = keep
    heads_left, channels_left = num_heads - heads_to_prune, intermediate - channels_to_prune
    return _stock_model(model, heads_left, head_dim, channels_left), plan


def prune_adapter_tensors(
    tensors: Mapping[str, torch.Tensor], plan: PrunePlan
) -> dict[str, torch.Tensor]:
    """Adapter tensors (TMoLE ``tmole_A``/``tmole_B``, options' ``option_A``/``option_B``) cut
    to a pruned model: an ``*_A`` tensor of a pruned layer keeps the kept input columns (last
    dim), a ``*_B`` tensor the kept output rows (dim -2). Other tensors pass unchanged."""
    out = {}
    for name, tensor in tensors.items():
        module, _, leaf = name.rpartition(".")
        rows, cols = plan.get(module, (None, None))
        if leaf.endswith("_A") and cols is not None:
            tensor = tensor.index_select(-1, cols.to(tensor.device))
        elif leaf.endswith("_B") and rows is not None:
            tensor = tensor.index_select(tensor.dim() - 2, rows.to(tensor.device))
        out[name] = tensor
    return out
