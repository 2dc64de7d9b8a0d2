"""The backbone: a local Hugging Face causal LM, or the builtin small Llama-style model.

The builtin backbone is built from numbers (no download): a Llama architecture sized by
``model.builtin`` and a byte-level BPE tokenizer trained with ``tokenizers`` on the corpus. Either
way the result is a ``(model, tokenizer)`` pair of stock transformers classes, saved and loaded with
``save_pretrained`` / ``from_pretrained`` from a local directory only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as transformers_logging

from recfound.errors import UserInputError

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SHARE_KEY = "recfound_share_layers"  # config.json: decoder layers per weight-sharing group


class BackboneError(UserInputError):
    """The backbone directory is missing, incomplete or not a causal LM."""


def check_backbone_setting(backbone: str) -> None:
    """``model.backbone`` is ``builtin`` or a local checkpoint directory (with ``config.json``).

    Checked by every stage that reads the setting, so a wrong path stops the stage instead of it
    going on with the backbone an earlier run left in ``paths.backbone``.
    """
    if backbone != "builtin" and not (Path(backbone) / "config.json").is_file():
        raise BackboneError(
            f"model.backbone is {backbone!r}, which is not a local Hugging Face checkpoint "
            "directory (no config.json); use 'builtin' or a directory saved with save_pretrained"
        )


@dataclass(frozen=True)
class BuiltinSpec:
    """Sizes of the builtin backbone (mirrors ``model.builtin`` in params.yaml)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_length: int
    vocab_size: int
    attention_dropout: float = 0.0
    share_layers: int = 1  # ALBERT-style: consecutive layers per group of shared weights


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer; every text is BOS-prefixed when ``add_special_tokens``."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
    )


def add_item_tokens(model: PreTrainedModel | None, tokenizer, tokens: Iterable[str]) -> int:
    """Add item identifier tokens to ``tokenizer`` and grow ``model``'s embeddings to match.

    Tokens already in the vocabulary are kept as they are (a backbone is extended, never
    replaced), so adding the same identifiers twice changes nothing. A token absorbs the space
    before it (``lstrip``), so ``" <item_1>"`` and ``"<item_1>"`` are the same single id, as an
    answer that starts with an identifier needs. New rows start at the mean of the existing
    embeddings (transformers' mean resizing); ``model`` None extends the tokenizer alone (a model
    is built from it afterwards). Returns how many tokens were new.
    """
    vocab = tokenizer.get_vocab()
    new = [t for t in dict.fromkeys(tokens) if t and t not in vocab]
    if new:
        tokenizer.add_tokens(
            [AddedToken(t, lstrip=True, rstrip=False, normalized=False, special=False) for t in new]
        )
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return len(new)


def build_builtin_backbone(spec: BuiltinSpec, tokenizer: PreTrainedTokenizerFast, seed: int):
    """A freshly initialised Llama-style causal LM sized by ``spec``, matched to ``tokenizer``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attention_dropout=spec.attention_dropout,
        attn_implementation="sdpa",
        **({SHARE_KEY: spec.share_layers} if spec.share_layers > 1 else {}),
    )
    model = LlamaForCausalLM(config)
    share_layer_weights(model, spec.share_layers)
    return model


def decoder_layers(model: PreTrainedModel) -> tuple[str, torch.nn.ModuleList]:
    """``(state-dict prefix, layers)`` of a decoder-only model's layer list."""
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise BackboneError(
            f"{type(model).__name__} has no decoder layer list (`.layers`); layer sharing and "
            "pruning need a Llama-style causal LM"
        )
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return prefix + ".", layers


def share_layer_weights(model: PreTrainedModel, group: int) -> None:
    """ALBERT-style cross-layer sharing: layer ``i`` uses the weights of layer ``(i // group) *
    group`` (its group's first), so ``L`` layers hold ``ceil(L / group)`` layers' parameters.

    Each layer stays its own module (its own ``layer_idx`` for the KV cache, its own adapters);
    only the ``nn.Parameter`` objects are shared, so gradients of a group add up in one tensor.
    """
    if group < 1:
        raise BackboneError(f"share_layers must be >= 1, got {group}")
    _, layers = decoder_layers(model)
    for index, layer in enumerate(layers):
        leader = layers[(index // group) * group]
        if leader is layer:
            continue
        pairs = zip(layer.named_modules(), leader.named_modules(), strict=True)
        for (_, module), (_, source) in pairs:
            for name, _ in list(module.named_parameters(recurse=False)):
                setattr(module, name, getattr(source, name))


def _shared_copies(model: PreTrainedModel) -> set[str]:
    """State-dict keys of layers that reuse an earlier layer's weights (not saved)."""
    group = int(getattr(model.config, SHARE_KEY, 1) or 1)
    if group <= 1:
        return set()
    prefix, layers = decoder_layers(model)
    followers = [f"{prefix}{i}." for i in range(len(layers)) if i % group]
    return {key for key in model.state_dict() if key.startswith(tuple(followers))}


def save_backbone(model: PreTrainedModel, tokenizer, directory: str | Path) -> None:
    """Save model and tokenizer with ``save_pretrained`` (safetensors)."""
    directory = Path(directory)
    copies = _shared_copies(model)
    if copies:  # shared layers are saved once, as their group's first layer
        state = {k: v for k, v in model.state_dict().items() if k not in copies}
        model.save_pretrained(directory, safe_serialization=True, state_dict=state)
    else:
        model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


_RESTORE = (
    "Restore the checkpoint directory (copy it again), or for the builtin backbone run "
    "`recfound pretrain` (`dvc repro -f pretrain`) to write it again"
)


def _share_group(config_path: Path) -> int:
    """The layer-sharing group of ``config.json`` (1: none); a file that is not a JSON object is
    a :class:`BackboneError` naming it."""
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackboneError(
            f"{config_path} is not readable JSON ({exc}); the file is damaged or cut short. "
            + _RESTORE
        ) from None
    if not isinstance(config, dict):
        raise BackboneError(
            f"{config_path} holds a JSON {type(config).__name__}, not the object of a Hugging "
            "Face model config. " + _RESTORE
        )
    try:
        return int(config.get(SHARE_KEY, 1) or 1)
    except (TypeError, ValueError):
        raise BackboneError(
            f"{config_path}: {SHARE_KEY} is {config[SHARE_KEY]!r}; expected a whole number of "
            "layers per group. " + _RESTORE
        ) from None


def load_backbone(
    directory: str | Path, dtype: torch.dtype = torch.float32, attention: str | None = "sdpa"
):
    """Load ``(model, tokenizer)`` from a local directory; never touches a hub.

    ``attention`` is the attention implementation: SDPA by default (PyTorch picks the flash or
    memory-efficient kernel where the GPU has one; the builtin backbone is built with it too),
    falling back to the model's own where its architecture has no SDPA path; ``"eager"`` for
    comparisons; None for whatever transformers picks.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise BackboneError(
            f"{directory} is not a Hugging Face checkpoint directory (no config.json); "
            "set model.backbone to 'builtin' or to a local causal-LM directory"
        )
    group = _share_group(directory / "config.json")
    verbosity = transformers_logging.get_verbosity()
    try:
        if group > 1:  # the shared layers' copies are absent by design: no missing-key report
            transformers_logging.set_verbosity_error()
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = _load_causal_lm(directory, dtype, attention)
    except SafetensorError as exc:
        weights = ", ".join(sorted(p.name for p in directory.glob("*.safetensors"))) or "weights"
        raise BackboneError(
            f"the backbone's weights in {directory} ({weights}) are damaged: {exc} (a file cut "
            f"short, or not safetensors). {_RESTORE}"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot load the backbone from {directory}: {exc}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    if group > 1:
        share_layer_weights(model, group)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_causal_lm(directory: Path, dtype: torch.dtype, attention: str | None) -> PreTrainedModel:
    options = {"local_files_only": True, "dtype": dtype}
    if attention is None:
        return AutoModelForCausalLM.from_pretrained(directory, **options)
    try:
        return AutoModelForCausalLM.from_pretrained(
            directory, attn_implementation=attention, **options
        )
    except ValueError as exc:
        if "does not support an attention implementation" not in str(exc):
            raise
        log.info("%s has no %s attention; loading it with its default", directory, attention)
        return AutoModelForCausalLM.from_pretrained(directory, **options)
