"""A Llama-family causal LM run one decoder layer at a time (Llama, Mistral, Qwen2, Qwen3).

Late interaction needs a prompt's key/value cache shared by many answers and answers that enter
the stack at an upper layer; early exit needs to stop between layers; the device export needs a
graph without transformers' mask and cache machinery. :class:`DecoderSteps` gives all three
from a plain (folded) ``LlamaForCausalLM``-shaped model, with the model's own modules and
weights: each step is the same math as transformers' ``LlamaDecoderLayer`` (RMSNorm, rotary
attention with grouped key/value heads, gated MLP; Qwen2's q/k/v biases live in the linears,
Qwen3's q/k norms are applied), checked against it in the tests. Other families (Gemma's scaled
embeddings and sandwich norms, Phi-3's fused projections, GPT-2 and GPT-NeoX) are refused with
:class:`UnsupportedModelError` naming the families that work (:mod:`recfound.model.families`); a
sliding attention window (Mistral) is exact while a sequence is shorter than the window, and a
longer one is refused.

Shapes: ``hidden`` is ``(batch, seq, hidden)``; keys/values are ``(batch, kv_heads, seq,
head_dim)``; masks are booleans ``(batch, 1, queries, keys)``, True where a query may attend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from recfound.errors import UserInputError
from recfound.model.families import layer_by_layer_families, model_type

KeyValue = tuple[torch.Tensor, torch.Tensor]


class UnsupportedModelError(UserInputError):
    """The model's family is not one the layer-by-layer runner reproduces exactly (late
    interaction, early exit and the device export need it)."""


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
        family = model_type(model)
        supported = layer_by_layer_families()
        if family not in supported or inner is None or any(not hasattr(inner, p) for p in parts):
            raise UnsupportedModelError(
                f"{type(model).__name__} (family {family!r}) cannot be run layer by layer: late "
                f"interaction, early exit and the device export support the families "
                f"{', '.join(supported)} (the builtin backbone is llama); serve this model "
                "folded (serving.folded) without them"
            )
        self.window = getattr(model.config, "sliding_window", None)
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
        q, k = attn.q_proj(x).view(shape), attn.k_proj(x).view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head's query and key
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys, values = k, v
        if past is not None:
            keys, values = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if self.window is not None and keys.shape[2] > self.window:
            raise UnsupportedModelError(
                f"{keys.shape[2]} tokens exceed the model's sliding attention window "
                f"({self.window}); the layer-by-layer runner attends to every earlier token"
            )
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
