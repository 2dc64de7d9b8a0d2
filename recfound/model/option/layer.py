"""The math of option tuning: per-task options in front of the sequence, per-task small adapters.

:class:`OptionState` holds the task of each sample (set by ``OptionModel.task``) and, during one
forward pass of the decoder, the options of the batch. :func:`prepend_options` rewrites the
decoder's inputs (embeddings, attention mask, positions) so the options come first; the decoder's
output is cut back to the caller's positions, so callers see the shapes they passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from recfound.model.families import in_out_features, weight_delta
from recfound.model.tmole.layer import TaskSelectionError


class OptionState:
    """The current task ids ``(batch,)`` (or one id for any batch) and the running pass's options.

    Not an ``nn.Module``: it owns no parameters. ``options`` is set by the decoder's pre-hook of a
    pass that put options in front (a prefill) and cleared by its post-hook.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)
        self.ids: torch.Tensor | None = None
        self.options: torch.Tensor | None = None  # (batch, depth, P, hidden) during a prefill

    def task_ids(self, task: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Task ids ``(n,)`` of a name, a list of names, or an integer tensor of ids."""
        if isinstance(task, torch.Tensor):
            ids = task.reshape(-1).long()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self.task_names)):
                raise TaskSelectionError(
                    f"task ids must be in [0, {len(self.task_names)}), got {ids.tolist()}"
                )
            return ids
        names = [task] if isinstance(task, str) else list(task)
        unknown = sorted({n for n in names if n not in self.task_names})
        if unknown:
            raise TaskSelectionError(
                f"unknown tasks {unknown}; this adapter was built for {self.task_names}"
            )
        if not names:
            raise TaskSelectionError("got an empty list of tasks; give one task per sample")
        return torch.tensor([self.task_names.index(n) for n in names], dtype=torch.long)

    def batch_ids(self, batch: int, device: torch.device) -> torch.Tensor:
        """The selected task id of each of ``batch`` samples; raises if none fits."""
        if self.ids is None:
            raise TaskSelectionError(
                "no task selected: run the model inside `with adapter.task(name_or_names): ...` "
                f"(tasks: {self.task_names})"
            )
        ids = self.ids.to(device)
        if ids.numel() == 1:
            return ids.expand(batch)
        if ids.numel() != batch:
            raise TaskSelectionError(f"{ids.numel()} tasks selected for a batch of {batch}")
        return ids


class OptionLinear(nn.Module):
    """A frozen ``nn.Linear`` plus one low-rank update per task: ``W0 x + s B_t A_t x``.

    ``option_A`` is ``(T, r, in)`` (normal, std ``1/sqrt(in)``), ``option_B`` ``(T, out, r)``
    (zeros), so a new adapter leaves the layer's output unchanged.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        num_tasks: int,
        rank: int,
        scaling: float,
        state: OptionState,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scaling = scaling
        self.state = state
        in_features, out_features = in_out_features(base_layer)  # nn.Linear or Conv1D
        a = torch.randn(num_tasks, rank, in_features, generator=generator)
        a = a / in_features**0.5
        weight = base_layer.weight
        self.option_A = nn.Parameter(a.to(device=weight.device, dtype=weight.dtype))
        self.option_B = nn.Parameter(
            torch.zeros(num_tasks, out_features, rank, device=weight.device, dtype=weight.dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.state.batch_ids(x.shape[0], x.device)
        low = torch.einsum("b...i,bri->b...r", x, self.option_A.index_select(0, ids))
        return self.base_layer(x) + self.scaling * torch.einsum(
            "b...r,bor->b...o", low, self.option_B.index_select(0, ids)
        )

    @torch.no_grad()
    def delta(self, task_id: int) -> torch.Tensor:
        """``s B_t A_t`` of one task, laid out like the base weight (``(out, in)``; Conv1D's
        ``(in, out)``)."""
        delta = self.scaling * self.option_B[task_id].double() @ self.option_A[task_id].double()
        return weight_delta(self.base_layer, delta)


def _is_prefill(kwargs: dict[str, Any]) -> bool:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache is None or cache.get_seq_length() == 0


def _extend_mask(mask: torch.Tensor | None, length: int, prefill: bool) -> torch.Tensor | None:
    """The attention mask with ``length`` option positions in front.

    2D ``(batch, seq)``: options are attended by every token. A 4D ``(batch, 1, seq, seq)`` mask
    (bidirectional embeddings; bool = attend, or additive floats) keeps its pattern among the
    tokens; every token attends the options, and the options attend only each other, so they
    never depend on the sample.
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        ones = torch.ones(mask.shape[0], length, dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1)
    if mask.dim() != 4 or not prefill:
        raise TaskSelectionError(
            f"option tuning cannot extend an attention mask of shape {tuple(mask.shape)}; pass a "
            "2D (batch, seq) mask or a 4D (batch, 1, seq, seq) mask of a whole sequence"
        )
    batch, _, rows, cols = mask.shape
    if mask.dtype == torch.bool:
        out = torch.zeros(
            batch, 1, rows + length, cols + length, dtype=torch.bool, device=mask.device
        )
        out[:, :, :, :length] = True
        out[:, :, :length, length:] = False
    else:
        out = torch.full(
            (batch, 1, rows + length, cols + length),
            torch.finfo(mask.dtype).min,
            dtype=mask.dtype,
            device=mask.device,
        )
        out[:, :, :, :length] = 0
    out[:, :, length:, length:] = mask
    return out


class OptionPrompts(nn.Module):
    """The options ``weight`` ``(T, depth, P, hidden)`` and the decoder hooks that use them.

    The hooks are methods of this module, so a deep copy of the model (options, state, hooks)
    is a working, independent copy.
    """

    def __init__(self, weight: torch.Tensor, state: OptionState) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.state = state

    def prepend(self, decoder: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Forward pre-hook of the decoder: put the batch's options in front of its embeddings.

        In a prefill (no cache yet) the input embeddings become ``[options_t ; tokens]``; in a
        decoding step with a cache (which already holds the options) only the mask and the
        positions shift by ``P``.
        """
        kwargs = dict(kwargs)
        if args:  # input_ids given positionally
            kwargs["input_ids"], args = args[0], args[1:]
        length = self.weight.shape[2]
        prefill = _is_prefill(kwargs)
        positions = kwargs.get("position_ids")
        if prefill:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                embeds = decoder.get_input_embeddings()(kwargs["input_ids"])
            ids = self.state.batch_ids(embeds.shape[0], embeds.device)
            self.state.options = self.weight.index_select(0, ids).to(embeds.dtype)
            kwargs["inputs_embeds"] = torch.cat([self.state.options[:, 0], embeds], dim=1)
            kwargs["input_ids"] = None
            if positions is not None:
                front = torch.arange(length, device=positions.device)
                front = front.expand(positions.shape[0], -1)
                kwargs["position_ids"] = torch.cat([front, positions + length], dim=-1)
        elif positions is not None:
            kwargs["position_ids"] = positions + length
        kwargs["attention_mask"] = _extend_mask(kwargs.get("attention_mask"), length, prefill)
        return args, kwargs

    def reinsert(self, depth: int, layer: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        """Forward pre-hook of decoder layer ``depth`` (deep options): its own options replace
        the first ``P`` hidden states of a prefill."""
        if self.state.options is None:
            return None
        options = self.state.options[:, depth]
        if args:
            hidden = torch.cat([options, args[0][:, options.shape[1] :]], dim=1)
            return (hidden, *args[1:]), kwargs
        hidden = torch.cat([options, kwargs["hidden_states"][:, options.shape[1] :]], dim=1)
        return args, {**kwargs, "hidden_states": hidden}

    def strip(self, decoder: nn.Module, args: tuple, output: Any) -> Any:
        """Forward hook of the decoder: drop the option positions of a prefill's output."""
        options, self.state.options = self.state.options, None
        if options is None:
            return output
        length = options.shape[2]
        if isinstance(output, tuple):
            return (output[0][:, length:], *output[1:])
        output.last_hidden_state = output.last_hidden_state[:, length:]
        return output
