"""Tiny, randomly initialised checkpoints of each supported Hugging Face family.

Each is built from its transformers config class (hidden 32, 2 layers, 4 heads) for a given
tokenizer and written with ``save_pretrained``, as a user's own checkpoint would be.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 4, 64, 256

DECODER = {  # Llama-shaped configs share these
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": 2,
    "intermediate_size": INTERMEDIATE,
    "max_position_embeddings": POSITIONS,
}

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, DECODER),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, DECODER),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {**DECODER, "head_dim": 8}),
    "mistral": (MistralConfig, MistralForCausalLM, {**DECODER, "sliding_window": 128}),
    "gemma3_text": (
        Gemma3TextConfig,
        Gemma3ForCausalLM,
        {**DECODER, "head_dim": 8, "sliding_window": 64},
    ),
    "phi3": (Phi3Config, Phi3ForCausalLM, DECODER),
    "gpt2": (
        GPT2Config,
        GPT2LMHeadModel,
        {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_positions": POSITIONS},
    ),
    "gpt_neox": (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        {
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
            "max_position_embeddings": POSITIONS,
        },
    ),
}


def tiny_checkpoint(family: str, tokenizer, directory: Path, seed: int = 0) -> Path:
    """Build ``family``'s tiny model for ``tokenizer`` and save both into ``directory``."""
    config_class, model_class, sizes = FAMILIES[family]
    config = config_class(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sizes,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
