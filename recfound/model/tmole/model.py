"""Inject TMoLE into a causal LM, select tasks, fold experts for serving, save and load.

A sibling of peft's ``LoraModel``: :class:`TMoLEModel` freezes the base model, replaces every
targeted ``nn.Linear`` by a :class:`TMoLELinear` that keeps the frozen layer, and adds one task
embedding (``tmole_task_embedding``) to the base model so that ``.model`` alone holds, moves and
checkpoints every trainable tensor. Layers read the task of each sample from one
:class:`TaskState`, set with ``with tmole.task(...)``; the selection is context-local (a
``ContextVar``), so threads serving requests of different tasks with one model never mix them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Self

import torch
from torch import nn

from recfound.errors import UserInputError
from recfound.model.adapter_format import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterLoadError,
    copy_adapter_tensors,
    read_adapter,
    save_adapter,
)
from recfound.model.families import is_projection, weight_delta
from recfound.model.options import AdapterOptions
from recfound.model.tmole.config import TMoLEConfig, TMoLEConfigError
from recfound.model.tmole.layer import TaskState, TMoLELinear

EMBEDDING_NAME = "tmole_task_embedding"

TaskSpec = str | Sequence[str] | torch.Tensor


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _is_adapter_tensor(name: str) -> bool:
    return any(part.startswith("tmole_") for part in name.split("."))


class FrozenBaseAdapter:
    """What :class:`TMoLEModel` and :class:`~recfound.model.option.OptionModel` share: a base
    model modified in place and frozen, whose adapter tensors live in ``.model``; ``unload()``
    gives the base back as it was; ``save_pretrained`` / ``from_pretrained`` write and read an
    adapter directory (:mod:`recfound.model.adapter_format`).

    A subclass names its ``adapter_type``, its ``config_class`` and ``config_error``, and
    ``holder_name``, the module it adds to the base; it calls :meth:`_take` first in
    ``__init__`` and then sets ``target_names`` (the wrapped linears) and ``_hooks``.
    """

    adapter_type: ClassVar[str]
    config_class: ClassVar[type[AdapterOptions]]
    config_error: ClassVar[type[UserInputError]]
    holder_name: ClassVar[str]

    def _take(self, base: nn.Module, config: AdapterOptions) -> None:
        """Keep ``config``, hold ``base`` and freeze it (remembering its ``requires_grad``)."""
        self.config = config
        self._model: nn.Module | None = base
        self._base_requires_grad = {n: p.requires_grad for n, p in base.named_parameters()}
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.target_names: list[str] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def model(self) -> nn.Module:
        """The adapted model to call (inside ``task(...)``)."""
        if self._model is None:
            raise self.config_error(
                f"this {type(self).__name__} was unloaded; wrap the base model again"
            )
        return self._model

    def trainable_parameters(self) -> int:
        """Number of trainable scalars (all of them adapter weights; the base is frozen)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Every adapter tensor by its name in ``.model``."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def unload(self) -> nn.Module:
        """Remove hooks and adapter layers; return the base model as it was given.

        Parameters get back their ``requires_grad`` flags from before wrapping. The adapter
        weights are dropped; this adapter cannot be used afterwards.
        """
        model = self.model
        for hook in self._hooks:
            hook.remove()
        for name in self.target_names:
            _set_submodule(model, name, model.get_submodule(name).base_layer)
        delattr(model, self.holder_name)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(self._base_requires_grad.get(name, False))
        self._model = None
        return model

    # ---- persistence ---------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (each atomically)."""
        save_adapter(directory, self.adapter_type, self.adapter_state_dict(), self.config.to_dict())

    @classmethod
    def from_pretrained(cls, base: nn.Module, directory: str | Path) -> Self:
        """Wrap ``base`` with the adapter saved in ``directory`` by :meth:`save_pretrained`.

        Raises :class:`AdapterLoadError` naming the file and the problem when a file is missing
        or damaged, or when the saved tensors do not fit ``base`` (other layer sizes, other
        target modules, other tasks). ``base`` is left unchanged when loading fails.
        """
        writer = f"{cls.__name__}.save_pretrained"
        raw, _, tensors = read_adapter(directory, cls.adapter_type, writer)
        config_path = Path(directory) / CONFIG_FILE
        try:
            config = cls.config_class.from_dict(raw)
        except (TypeError, cls.config_error) as error:
            label = cls.config_class.label
            message = f"{config_path} holds an invalid {label} config: {error}"
            raise AdapterLoadError(message) from error
        try:
            adapter = cls(base, config)
        except cls.config_error as error:
            raise AdapterLoadError(f"{config_path} does not fit this model: {error}") from error
        try:
            adapter.load_adapter_tensors(tensors, source=Path(directory) / WEIGHTS_FILE)
        except AdapterLoadError:
            adapter.unload()
            raise
        return adapter

    def load_adapter_tensors(
        self, tensors: dict[str, torch.Tensor], source: str | Path = "<tensors>"
    ) -> None:
        """Copy saved adapter tensors into place after checking names and shapes."""
        copy_adapter_tensors(self.adapter_state_dict(), tensors, source)


class TMoLEModel(FrozenBaseAdapter):
    """A causal LM with task-wise mixtures of low-rank experts on its targeted linear layers.

    Usage::

        tmole = TMoLEModel(base, config)           # base is modified in place and frozen
        with tmole.task(["rating", "search"]):     # one task per sample (or one name for all)
            logits = tmole.model(input_ids=ids).logits

    ``.model`` is the module to call, train and checkpoint; its trainable parameters are exactly
    the adapter's (``tmole_A``, ``tmole_B``, ``tmole_router.*`` per layer and the task embedding).
    """

    adapter_type = "tmole"
    config_class = TMoLEConfig
    config_error = TMoLEConfigError
    holder_name = EMBEDDING_NAME

    def __init__(self, base: nn.Module, config: TMoLEConfig) -> None:
        if hasattr(base, EMBEDDING_NAME) or any(isinstance(m, TMoLELinear) for m in base.modules()):
            raise TMoLEConfigError("this model already carries a TMoLE adapter; unload() it first")
        targets = [
            (name, module)
            for name, module in base.named_modules()
            if name and _matches(name, config.target_modules)
        ]
        not_linear = [f"{n} ({type(m).__name__})" for n, m in targets if not is_projection(m)]
        if not_linear:
            raise TMoLEConfigError(
                f"target_modules {config.target_modules} match modules that are not nn.Linear "
                f"or Conv1D: {not_linear[:5]}; name only linear layers"
            )
        if not targets:
            linears = sorted(
                {n.rpartition(".")[2] for n, m in base.named_modules() if is_projection(m)}
            )
            raise TMoLEConfigError(
                f"no module matches target_modules {config.target_modules}; "
                f"linear layers of this model are named {linears}"
            )
        self._take(base, config)
        weight = targets[0][1].weight
        generator = torch.Generator().manual_seed(config.seed)
        embedding = nn.Embedding(len(config.task_names), config.task_embedding_dim)
        nn.init.normal_(embedding.weight, std=1.0, generator=generator)
        embedding.to(device=weight.device, dtype=weight.dtype)
        base.add_module(EMBEDDING_NAME, embedding)
        self.state = TaskState(config, embedding)
        self.target_names = [name for name, _ in targets]
        for name, module in targets:
            _set_submodule(base, name, TMoLELinear(module, config, self.state, generator))

    # ---- access --------------------------------------------------------------------------

    def layers(self) -> dict[str, TMoLELinear]:
        """Targeted module name -> its TMoLE layer, in model order."""
        return {name: self.model.get_submodule(name) for name in self.target_names}

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Every adapter tensor by its name in ``.model`` (A, B, routers, task embedding)."""
        return {n: p for n, p in self.model.named_parameters() if _is_adapter_tensor(n)}

    # ---- tasks ---------------------------------------------------------------------------

    def set_task(self, task: TaskSpec | None) -> None:
        """Select the task of every sample until changed, in the current thread / context: a
        name (whole batch), one name per sample, or a LongTensor ``(batch,)`` of ids (positions
        in ``config.task_names``)."""
        self.state.select(task)

    @contextlib.contextmanager
    def task(self, task: TaskSpec) -> Iterator[None]:
        """Context in which forward passes use ``task`` (see :meth:`set_task`); nests.

        Context-local: other threads (and asyncio tasks) keep their own selection meanwhile.
        """
        previous = self.state.selection
        token = self.state.select(task)
        try:
            yield
        finally:
            self.state.restore(token, previous)

    def task_id(self, task: str) -> int:
        """Position of ``task`` in ``config.task_names``."""
        return int(self.state.task_ids(task)[0])

    @torch.no_grad()
    def gates(self, task: str) -> dict[str, torch.Tensor]:
        """Targeted module name -> gates ``(E,)`` of ``task`` in that layer (sum to 1)."""
        ids = torch.tensor([self.task_id(task)], device=self.state.embedding.weight.device)
        return {name: layer.gates(ids)[0] for name, layer in self.layers().items()}

    # ---- serving -------------------------------------------------------------------------

    def fold(self, task: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Targeted module name -> ``(A_f, B_f)``, one LoRA per layer equal to ``task``'s experts.

        ``base(x) + x @ A_f.T @ B_f.T`` equals the TMoLE layer's output for ``task``; ``A_f`` is
        ``(k*r, in)`` and ``B_f`` ``(out, k*r)`` with gates and ``alpha / r`` folded in, where k
        counts the experts with a non-zero gate (the others are dropped).
        """
        task_id = self.task_id(task)
        return {name: layer.fold(task_id) for name, layer in self.layers().items()}

    @torch.no_grad()
    def merge_into_base(self, task: str, *, share_untouched: bool = False) -> nn.Module:
        """A deep copy of the base model with ``W0 += B_f A_f`` for ``task``; no adapter left.

        The result is a plain model (stock ``nn.Linear`` layers, zero extra latency); this
        adapter is left unchanged. With ``share_untouched`` only the targeted layers' weights are
        new tensors: every other parameter and buffer (embeddings, norms, untargeted layers, the
        biases) is the very tensor of this adapter's frozen base, so a model per task costs only
        the targeted weights (for serving; the shared tensors must then stay frozen).
        """
        folds = self.fold(task)
        memo: dict[int, object] = {}
        if share_untouched:
            targeted = {id(layer.base_layer.weight) for layer in self.layers().values()}
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                if id(tensor) not in targeted:
                    memo[id(tensor)] = tensor
        merged = copy.deepcopy(self.model, memo)
        for name, (a_f, b_f) in folds.items():
            base_layer = merged.get_submodule(name).base_layer
            delta = weight_delta(base_layer, b_f.double() @ a_f.double())  # Conv1D: (in, out)
            weight = base_layer.weight  # a new tensor: shared layers (share_layers) stay apart
            base_layer.weight = nn.Parameter(weight + delta.to(weight.dtype), weight.requires_grad)
            _set_submodule(merged, name, base_layer)
        delattr(merged, EMBEDDING_NAME)
        return merged
