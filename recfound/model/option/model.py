"""Inject option tuning into a causal LM, select tasks, save and load.

A sibling of :class:`~recfound.model.tmole.TMoLEModel`: :class:`OptionModel` freezes the base
model, adds the options (``option_prompts``, ``(T, depth, P, hidden)``) to it so that ``.model``
alone holds, moves and checkpoints every trainable tensor, hooks the decoder so the options of each
sample's task come first, and (optionally) wraps ``adapter_modules`` in :class:`OptionLinear`.
Callers keep calling ``.model`` (or its decoder) with their own ids and masks inside
``with option.task(...)``: hidden states and logits come back at the positions they passed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from recfound.model.families import decoder_layer_list, is_projection
from recfound.model.option.config import OptionConfig, OptionConfigError
from recfound.model.option.layer import (
    OptionLinear,
    OptionPrompts,
    OptionState,
)
from recfound.model.tmole.model import FrozenBaseAdapter, _matches, _set_submodule

PROMPTS_NAME = "option_prompts"

TaskSpec = str | Sequence[str] | torch.Tensor


def _decoder(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The decoder (``model.base_model``) and its layer list (``.layers``; GPT-2's ``.h``)."""
    decoder = model.base_model
    layers = decoder_layer_list(model)
    if layers is None or not hasattr(decoder, "get_input_embeddings"):
        raise OptionConfigError(
            f"{type(model).__name__} has no decoder with a layer list (`.layers` or `.h`); "
            "option tuning hooks the decoder's input and its layers"
        )
    return decoder, layers


class OptionModel(FrozenBaseAdapter):
    """A frozen causal LM whose every sample starts with its task's trainable options.

    Usage::

        option = OptionModel(base, config)          # base is modified in place and frozen
        with option.task(["rating", "search"]):    # one task per sample (or one name for all)
            logits = option.model(input_ids=ids).logits   # (batch, len(ids[0]), vocab)

    ``.model`` is the module to call, train and checkpoint; its trainable parameters are exactly
    the options (``option_prompts.weight``) and, with ``adapter_rank > 0``, the adapters'
    ``option_A`` / ``option_B``.
    """

    adapter_type = "option"
    config_class = OptionConfig
    config_error = OptionConfigError
    holder_name = PROMPTS_NAME

    def __init__(self, base: nn.Module, config: OptionConfig) -> None:
        if hasattr(base, PROMPTS_NAME):
            raise OptionConfigError("this model already carries options; unload() it first")
        decoder, layers = _decoder(base)
        targets = []
        if config.adapter_rank:
            targets = [
                (n, m)
                for n, m in base.named_modules()
                if n and _matches(n, config.adapter_modules) and is_projection(m)
            ]
            if not targets:
                raise OptionConfigError(
                    f"no nn.Linear or Conv1D matches adapter_modules {config.adapter_modules}"
                )
        self._take(base, config)
        generator = torch.Generator().manual_seed(config.seed)
        embeddings = decoder.get_input_embeddings().weight
        depth = len(layers) if config.deep else 1
        shape = (len(config.task_names), depth, config.prompt_length)
        # options start as embeddings of random vocabulary tokens (Lester et al., prompt tuning)
        rows = torch.randint(0, embeddings.shape[0], shape, generator=generator)
        self.state = OptionState(config.task_names)
        holder = OptionPrompts(embeddings.detach()[rows.to(embeddings.device)].clone(), self.state)
        base.add_module(PROMPTS_NAME, holder)
        self.target_names = [n for n, _ in targets]
        for name, module in targets:
            layer = OptionLinear(
                module,
                len(config.task_names),
                config.adapter_rank,
                config.scaling,
                self.state,
                generator,
            )
            _set_submodule(base, name, layer)
        self._hooks = [
            decoder.register_forward_pre_hook(holder.prepend, with_kwargs=True),
            decoder.register_forward_hook(holder.strip),
        ]
        if config.deep:
            for depth_index, layer in enumerate(layers):
                if depth_index:
                    hook = functools.partial(holder.reinsert, depth_index)
                    self._hooks.append(layer.register_forward_pre_hook(hook, with_kwargs=True))

    # ---- access --------------------------------------------------------------------------

    @property
    def prompts(self) -> nn.Parameter:
        """The options ``(T, depth, P, hidden)``."""
        return getattr(self.model, PROMPTS_NAME).weight

    # ---- tasks ---------------------------------------------------------------------------

    def set_task(self, task: TaskSpec | None) -> None:
        """Select the task of every sample until changed (a name, one name per sample, or ids)."""
        self.state.ids = None if task is None else self.state.task_ids(task)

    @contextlib.contextmanager
    def task(self, task: TaskSpec) -> Iterator[None]:
        """Context in which forward passes use ``task`` (see :meth:`set_task`); nests."""
        previous = self.state.ids
        self.set_task(task)
        try:
            yield
        finally:
            self.state.ids = previous

    # ---- serving -------------------------------------------------------------------------

    @torch.no_grad()
    def merge_into_base(self, task: str) -> nn.Module:
        """A deep copy of the model that answers ``task`` without a task context: its hooks and
        ``task``'s options stay (a prompt is not a weight) and are fixed to ``task``; ``task``'s
        adapters are folded into ``W0`` (``W0 += s B_t A_t``) and put back as plain linears.
        This adapter is left unchanged."""
        task_id = self.state.task_ids(task)[:1]
        merged = copy.deepcopy(self.model)
        getattr(merged, PROMPTS_NAME).state.ids = task_id
        for name in self.target_names:
            layer = merged.get_submodule(name)
            weight = layer.base_layer.weight  # a new tensor: shared layers stay apart
            delta = layer.delta(int(task_id)).to(weight.dtype)
            layer.base_layer.weight = nn.Parameter(weight + delta, weight.requires_grad)
            _set_submodule(merged, name, layer.base_layer)
        return merged
