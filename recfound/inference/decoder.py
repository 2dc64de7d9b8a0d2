"""A Llama-family causal LM run one decoder layer at a time.

Late interaction needs a prompt's key/value cache shared by many answers and answers that enter
the stack at an upper layer; early exit needs to stop between layers; the device export needs a
graph without transformers' mask and cache machinery. :class:`DecoderSteps` gives all three
from a plain (folded) ``LlamaForCausalLM``-shaped model, with the model's own modules and
weights: each step is the same math as transformers' ``LlamaDecoderLayer`` (RMSNorm, rotary
attention with grouped key/value heads, gated MLP), checked against it in the tests.

Shapes: ``hidden`` is ``(batch, seq, hidden)``; keys/values are ``(batch, kv_heads, seq,
head_dim)``; masks are booleans ``(batch, 1, queries, keys)``, True where a query may attend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from recfound.errors import UserInputError

KeyValue = tuple[torch.Tensor, torch.Tensor]


class UnsupportedModelError(UserInputError):
    """The model is not a Llama-family causal LM (the layer-by-layer runner needs its parts)."""


def causal_mask(key_mask: torch.Tensor, queries: int, offset: int = 0) -> torch.Tensor:
    """``(batch, 1, queries, keys)``: query ``i`` sits at key position ``offset + i`` and sees
    every non-pad key at or before it. ``key_mask`` is ``(batch, keys)`` (1 = real token)."""
    keys = key_mask.shape[1]
    q_pos = torch.arange(queries, device=key_mask.device)[:, None] + offset
    allowed = torch.arange(keys, device=key_mask.device)[None, :] <= q_pos  # (queries, keys)
    return allowed[None, None] & key_mask[:, None, None, :].bool()


class DecoderSteps:
    """Embedding, decoder layers, final norm and LM head of a causal LM, callable one by one."""

    def __init__(self, model: nn.Module) -> None:
        inner = getattr(model, "model", None)
        parts = ("embed_tokens", "layers", "norm", "rotary_emb")
        if inner is None or any(not hasattr(inner, p) for p in parts):
            raise UnsupportedModelError(
                f"{type(model).__name__} is not a Llama-family causal LM (it needs "
                f".model.{{{', '.join(parts)}}}); late interaction, early exit and the device "
                "export run the builtin backbone and Llama-style checkpoints only"
            )
        self.model = model
        self.embed_tokens = inner.embed_tokens
        self.layers = inner.layers
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head = model.get_output_embeddings()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> KeyValue:
        """Rotary ``(cos, sin)`` for ``positions`` ``(batch, seq)``."""
        return self.rotary(hidden, positions)

    def layer(
        self,
        index: int,
        hidden: torch.Tensor,
        rope: KeyValue,
        mask: torch.Tensor,
        past: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """Decoder layer ``index`` on ``hidden``; keys/values of ``past`` (already rotated)
        come before this step's. Returns the new hidden states and this step's keys/values."""
        layer = self.layers[index]
        attn = layer.self_attn
        batch, seq, _ = hidden.shape
        x = layer.input_layernorm(hidden)
        shape = (batch, seq, -1, attn.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys, values = k, v
        if past is not None:
            keys, values = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        groups = attn.num_key_value_groups
        out = F.scaled_dot_product_attention(
            q,
            repeat_kv(keys, groups),
            repeat_kv(values, groups),
            attn_mask=mask,
            scale=attn.scaling,
        )
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden, (k, v)

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        stop: int | None = None,
    ) -> tuple[torch.Tensor, list[KeyValue]]:
        """Right-padded ``input_ids`` through layers ``[0, stop)``: hidden states (before the
        final norm) and every layer's keys/values."""
        hidden = self.embed(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        rope = self.rope(hidden, positions.expand(input_ids.shape[0], -1))
        mask = causal_mask(attention_mask, input_ids.shape[1])
        cache = []
        for index in range(self.num_layers if stop is None else stop):
            hidden, kv = self.layer(index, hidden, rope, mask)
            cache.append(kv)
        return hidden, cache

    def logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary log-probabilities from hidden states (final norm, then the LM head)."""
        return torch.log_softmax(self.lm_head(self.norm(hidden)).float(), dim=-1)
