"""The TMoLE math on one ``nn.Linear``, and the task selection every adapted layer reads.

All E experts of a layer run as one concatenated low-rank product of rank ``E * r``:

    h     = dropout(x) @ A.T                   # (batch, *, E*r),  A: (E*r, in)
    delta = (h * gate_vec) @ B.T               # (batch, *, out),  B: (out, E*r)
    y     = base(x) + delta

where ``gate_vec`` (batch, 1, ..., E*r) repeats each expert's gate ``r`` times and already holds
the LoRA scale ``alpha / r``. Gates depend only on the task, so a layer computes them once per
distinct task in the batch (a few rows), never per token, and broadcasts them over the sequence.

The selected task lives in a :class:`contextvars.ContextVar`, not on the model: each thread (and
each asyncio task, e.g. each request of ``mlflow models serve``) sees only its own selection, so
concurrent forward passes of one model never read each other's tasks.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recfound.errors import UserInputError
from recfound.model.families import in_out_features
from recfound.model.tmole.config import TMoLEConfig


class TaskSelectionError(UserInputError):
    """The task of a forward pass is not set, unknown, or does not fit the batch."""


Selection = tuple[torch.Tensor, torch.Tensor]  # (unique_ids (U,), inverse (batch,) or (1,))


class TaskState:
    """The task of each sample, read by all TMoLE layers of one model; context-local.

    Holds a reference to the model's task embedding (owned by the wrapped model, not by the
    layers) and a :class:`contextvars.ContextVar` with, while a task is selected, the distinct
    task ids of the batch and each sample's index into them. A selection made in one thread or
    asyncio task is invisible to the others (a new thread starts with no selection). Not an
    ``nn.Module``: it owns no parameters.
    """

    def __init__(self, config: TMoLEConfig, embedding: nn.Embedding) -> None:
        self.task_names = list(config.task_names)
        self.embedding = embedding
        usable = [config.usable_experts(t) for t in self.task_names]
        self._usable = torch.tensor(usable, dtype=torch.bool)  # (T, E)
        self._selection = self._new_selection_var()

    def _new_selection_var(self) -> contextvars.ContextVar[Selection | None]:
        return contextvars.ContextVar(f"tmole_task_selection_{id(self):x}", default=None)

    def __getstate__(self) -> dict:
        """Copies and pickles (``copy.deepcopy`` of the model) start with no selection."""
        return {k: v for k, v in self.__dict__.items() if k != "_selection"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._selection = self._new_selection_var()

    @property
    def selection(self) -> Selection | None:
        """``(unique_ids, inverse)`` selected in the current context, or None."""
        return self._selection.get()

    @property
    def unique_ids(self) -> torch.Tensor | None:
        """Distinct task ids ``(U,)`` selected in the current context (None: no selection)."""
        selection = self._selection.get()
        return None if selection is None else selection[0]

    @property
    def inverse(self) -> torch.Tensor | None:
        """Each sample's index into :attr:`unique_ids` in the current context (None: none)."""
        selection = self._selection.get()
        return None if selection is None else selection[1]

    def task_ids(self, task: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Task ids ``(n,)`` of a task name, a list of names, or a LongTensor of ids."""
        if isinstance(task, str):
            task = [task]
        if isinstance(task, torch.Tensor):
            if task.dtype not in (torch.int64, torch.int32) or task.dim() > 1:
                raise TaskSelectionError(
                    "task ids must be a 0-d or 1-d integer tensor, got "
                    f"{task.dtype} of shape {tuple(task.shape)}"
                )
            ids = task.reshape(-1).long()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self.task_names)):
                raise TaskSelectionError(
                    f"task ids must be in [0, {len(self.task_names)}), got {ids.tolist()}"
                )
            return ids
        names = list(task)
        unknown = sorted({n for n in names if n not in self.task_names})
        if unknown:
            raise TaskSelectionError(
                f"unknown tasks {unknown}; this adapter was built for {self.task_names}"
            )
        return torch.tensor([self.task_names.index(n) for n in names], dtype=torch.long)

    def resolve(self, task: str | Sequence[str] | torch.Tensor) -> Selection:
        """The ``(unique_ids, inverse)`` of a task spec (one id broadcasts to any batch)."""
        ids = self.task_ids(task)
        if ids.numel() == 0:
            raise TaskSelectionError("got an empty list of tasks; give one task per sample")
        device = self.embedding.weight.device
        unique, inverse = torch.unique(ids, return_inverse=True)
        return unique.to(device), inverse.to(device)

    def select(self, task: str | Sequence[str] | torch.Tensor | None) -> contextvars.Token:
        """Select the task of every sample in the current context; None clears it.

        Returns the :class:`contextvars.Token` that :meth:`restore` takes to undo it.
        """
        return self._selection.set(None if task is None else self.resolve(task))

    def restore(self, token: contextvars.Token, previous: Selection | None) -> None:
        """Undo a :meth:`select`; ``previous`` is used when the token belongs to another context
        (a context manager entered in one asyncio task and left in another)."""
        try:
            self._selection.reset(token)
        except ValueError:
            self._selection.set(previous)

    def current(self) -> Selection:
        """``(unique_ids, inverse)`` of the selected tasks; raises if none is selected."""
        selection = self._selection.get()
        if selection is None:
            raise TaskSelectionError(
                "no task selected: run the model inside `with adapter.task(name_or_ids): ...` "
                f"(tasks: {self.task_names})"
            )
        unique_ids, inverse = selection
        device = self.embedding.weight.device
        if unique_ids.device != device:  # the model moved since the task was selected
            return unique_ids.to(device), inverse.to(device)
        return unique_ids, inverse

    def usable(self, task_ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask ``(len(task_ids), E)`` of the experts each task may use."""
        return self._usable.to(task_ids.device)[task_ids]


class TMoLELinear(nn.Module):
    """A frozen projection plus E task-gated low-rank experts (see the module docstring).

    The projection is an ``nn.Linear`` (fused ones included: Phi-3's ``qkv_proj``) or GPT-2's
    ``Conv1D``, whose weight is stored ``(in, out)``; A and B are shaped by the features either way.

    Parameters: ``tmole_A`` (E*r, in), ``tmole_B`` (out, E*r) and ``tmole_router``
    (``nn.Linear(task_embedding_dim, E)``). With ``tmole_B = 0`` (the initial state) the layer
    equals its base layer exactly.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        config: TMoLEConfig,
        state: TaskState,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.state = state
        self.r = config.rank
        self.num_experts = config.num_experts
        self.scaling = config.scaling
        self.top_k = config.top_k
        self.gate_temperature = config.gate_temperature
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        rank = self.num_experts * self.r
        weight = base_layer.weight
        in_features, out_features = in_out_features(base_layer)
        a = torch.empty(rank, in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # as peft's lora_A
        router = torch.empty(self.num_experts, config.task_embedding_dim)
        nn.init.normal_(router, std=0.02, generator=generator)
        kw = {"device": weight.device, "dtype": weight.dtype}
        self.tmole_A = nn.Parameter(a.to(**kw))
        self.tmole_B = nn.Parameter(torch.zeros(out_features, rank, **kw))
        self.tmole_router = nn.Linear(config.task_embedding_dim, self.num_experts, **kw)
        with torch.no_grad():
            self.tmole_router.weight.copy_(router)
            self.tmole_router.bias.zero_()

    @property
    def in_features(self) -> int:
        return in_out_features(self.base_layer)[0]

    @property
    def out_features(self) -> int:
        return in_out_features(self.base_layer)[1]

    def gates(self, task_ids: torch.Tensor) -> torch.Tensor:
        """Gates ``(len(task_ids), E)`` of the given tasks; each row sums to 1.

        Router logits of experts the task's kind may not use are -inf; logits are divided by the
        temperature; with ``top_k`` only the k largest logits survive; then a softmax.
        """
        vectors = self.state.embedding(task_ids).to(self.tmole_router.weight.dtype)
        logits = self.tmole_router(vectors).float()  # (U, E)
        logits = logits.masked_fill(~self.state.usable(task_ids), float("-inf"))
        logits = logits / self.gate_temperature
        if self.top_k is not None and self.top_k < self.num_experts:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def gate_vector(self, batch: int, ndim: int) -> torch.Tensor:
        """Per-sample expert scales ``(batch or 1, 1, ..., E*r)`` including ``alpha / r``.

        ``ndim`` is the rank of the input; the singleton dims broadcast over sequence positions.
        """
        unique_ids, inverse = self.state.current()
        if inverse.numel() not in (1, batch):
            raise TaskSelectionError(
                f"{inverse.numel()} task ids were selected for a batch of {batch} samples; "
                "give one task per sample, or a single task for the whole batch"
            )
        per_task = self.gates(unique_ids).repeat_interleave(self.r, dim=-1) * self.scaling
        vec = per_task[inverse]  # (batch or 1, E*r)
        return vec.view(vec.shape[0], *([1] * (ndim - 2)), vec.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, *, in) -> (batch, *, out); sample i uses the gates of its task."""
        result = self.base_layer(x)
        if x.dim() == 1:  # one unbatched vector: a single task must be selected
            gate_vec = self.gate_vector(1, 2)[0]
        else:
            gate_vec = self.gate_vector(x.shape[0], x.dim())
        hidden = F.linear(self.dropout(x).to(self.tmole_A.dtype), self.tmole_A)
        delta = F.linear(hidden * gate_vec.to(hidden.dtype), self.tmole_B)
        return result + delta.to(result.dtype)

    @torch.no_grad()
    def fold(self, task_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The single LoRA ``(A_f, B_f)`` equal to this layer's experts for one task.

        ``base(x) + x @ A_f.T @ B_f.T`` equals the TMoLE output for that task. Experts whose gate
        is exactly zero (masked by kind or top-k) are dropped, so the rank is r times the number
        of experts the task uses: ``A_f`` (k*r, in), ``B_f`` (out, k*r) with gates and scale in B_f.
        """
        ids = torch.tensor([task_id], device=self.tmole_A.device)
        gate = self.gates(ids)[0]  # (E,)
        keep = (gate > 0).repeat_interleave(self.r)
        scale = (gate.repeat_interleave(self.r) * self.scaling).to(self.tmole_B.dtype)
        a_f = self.tmole_A[keep].clone()
        b_f = (self.tmole_B * scale)[:, keep].contiguous()
        return a_f, b_f

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, r={self.r}, scaling={self.scaling:g}"
