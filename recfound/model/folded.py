"""One task's adapter folded into the backbone: a plain causal LM behind RecModel's interface.

TMoLE gates depend only on the task, so for one task every adapted layer is ``W0 + B_f A_f``
(:meth:`TMoLEModel.merge_into_base`); the folded model costs what the bare backbone costs.

(The same API as the `serving` branch's module of this name, which also caches one folded model
per task: on merge, that module replaces this one.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from recfound.model.recmodel import RecModel
from recfound.model.tmole import TaskSelectionError, TMoLEModel


class FoldedAdapter:
    """The adapter interface RecModel needs, for a model whose adapter is folded into W0.

    ``task(...)`` checks that every sample asks for the folded task (``None``: any task, for an
    adapter that is the same for all of them); a folded model answering another task would
    silently answer with the wrong weights.
    """

    def __init__(self, model: nn.Module, task: str | None) -> None:
        self.model = model
        self.folded_task = task

    @contextlib.contextmanager
    def task(self, task: str | Sequence[str] | torch.Tensor) -> Iterator[None]:
        if self.folded_task is not None:
            names = [task] if isinstance(task, str) else list(task)
            other = sorted({str(n) for n in names if n != self.folded_task})
            if other:
                raise TaskSelectionError(
                    f"this model is folded for task {self.folded_task!r}; got {other}: "
                    "fold the adapter for each task (fold_rec_model(rec, task))"
                )
        yield

    def set_task(self, task: str | Sequence[str] | torch.Tensor | None) -> None:
        """Nothing to select: the task is folded into the weights."""


def fold_rec_model(rec: RecModel, task: str) -> RecModel:
    """A :class:`RecModel` answering ``task`` with the adapter folded into a copy of the weights
    (eval mode); ``rec`` is left unchanged. A LoRA adapter merges the same for every task."""
    adapter = rec.adapter
    if isinstance(adapter, TMoLEModel):
        merged, folded_task = adapter.merge_into_base(task), task
    elif hasattr(adapter, "merge_into_base"):
        merged, folded_task = adapter.merge_into_base(), None
    else:
        raise TypeError(f"cannot fold a {type(adapter).__name__}: it has no merge_into_base")
    merged.eval()
    return RecModel(
        FoldedAdapter(merged, folded_task),
        rec.tokenizer,
        pooling=rec.pooling,
        embedding_attention=rec.embedding_attention,
        max_length=rec.max_length,
        temperature=rec.temperature,
    )
