"""One task's adapter folded into the backbone: a plain causal LM behind RecModel's interface.

TMoLE gates depend only on the task, so for one task every adapted layer is ``W0 + B_f A_f``
(:meth:`TMoLEModel.merge_into_base`); the folded model costs what the bare backbone costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from recfound.errors import UserInputError
from recfound.model.recmodel import RecModel


class FoldedTaskError(UserInputError):
    """A folded model was asked to answer another task than the one folded into it."""


class FoldedAdapter:
    """The adapter interface RecModel needs, for a model whose adapter is folded into W0.

    ``task(...)`` checks that every sample asks for the folded task (a folded model answering
    another task would silently answer with the wrong weights).
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        self.model = model
        self.task_name = task

    @contextlib.contextmanager
    def task(self, task: str | Sequence[str] | torch.Tensor) -> Iterator[None]:
        names = {task} if isinstance(task, str) else set(task)
        if names - {self.task_name}:
            raise FoldedTaskError(
                f"this model has task {self.task_name!r} folded in, not {sorted(names)}; fold "
                "the adapter for that task (fold_task(rec, task))"
            )
        yield


def fold_task(rec: RecModel, task: str) -> RecModel:
    """A :class:`RecModel` answering ``task`` with the adapter folded into a copy of the weights
    (eval mode); ``rec`` is left unchanged."""
    merged = rec.adapter.merge_into_base(task)
    merged.eval()
    return RecModel(
        FoldedAdapter(merged, task),
        rec.tokenizer,
        pooling=rec.pooling,
        embedding_attention=rec.embedding_attention,
        max_length=rec.max_length,
        temperature=rec.temperature,
    )
