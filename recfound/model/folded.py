"""Folded serving: each task answered by a plain model whose weights already hold its adapter.

TMoLE's gates depend only on the task, so for one task every expert folds into the frozen weight
(``W0 += B_f A_f``, :meth:`TMoLEModel.merge_into_base`) and the task runs at the cost of the bare
backbone. :class:`FoldedModels` builds that model once per task, on first use, and caches it;
the folded models share every untouched tensor (embeddings, norms, untargeted layers) with the
adapted model, so a task costs only its targeted weights. A plain LoRA adapter is the same for
every task: it folds once.

Usage::

    rec = load_bundle(backbone_dir, bundle_dir)       # the adapted RecModel
    models = FoldedModels(rec)
    models.for_task("rating_prediction").score(prompts, candidates, "rating_prediction")

Thread-safe: concurrent callers of :meth:`FoldedModels.for_task` get the same model, built once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from recfound.model.option import OptionModel
from recfound.model.recmodel import RecModel
from recfound.model.tmole import TaskSelectionError, TMoLEModel

ALL_TASKS = "*"  # the cache key of an adapter that is the same for every task (LoRA)


class FoldedAdapter:
    """One task's folded model behind the adapter interface :class:`RecModel` calls.

    ``task(...)`` checks that every sample belongs to the folded task (``tasks`` None: any task,
    for an adapter that is the same for all of them) and changes nothing.
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
                    "use FoldedModels.for_task(<task>) for each task"
                )
        yield

    def set_task(self, task: str | Sequence[str] | torch.Tensor | None) -> None:
        """Nothing to select: the task is folded into the weights."""


def fold_rec_model(rec: RecModel, task: str) -> RecModel:
    """A :class:`RecModel` answering ``task`` with folded weights (same tokenizer and settings).

    TMoLE folds ``task``'s experts into the weights; option tuning fixes ``task``'s options (and
    folds its small adapters); any other adapter (LoRA) merges into the base once, the same for
    every task.
    """
    adapter = rec.adapter
    if isinstance(adapter, TMoLEModel):
        merged, folded_task = adapter.merge_into_base(task, share_untouched=True), task
    elif isinstance(adapter, OptionModel):
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


class FoldedModels:
    """The per-task folded :class:`RecModel` s of one adapted model, built once and cached."""

    def __init__(self, rec: RecModel) -> None:
        self.rec = rec
        self._per_task = isinstance(rec.adapter, (TMoLEModel, OptionModel))
        self._cache: dict[str, RecModel] = {}
        self._lock = threading.Lock()

    def for_task(self, task: str) -> RecModel:
        """``task``'s folded model (built on first use; later calls return the same object)."""
        key = task if self._per_task else ALL_TASKS
        model = self._cache.get(key)
        if model is None:
            with self._lock:  # one build per task even when its first requests arrive together
                model = self._cache.get(key)
                if model is None:
                    if self._per_task:
                        self.rec.adapter.state.task_ids(task)  # an unknown task is named here
                    model = fold_rec_model(self.rec, task)
                    self._cache[key] = model
        return model

    def built(self) -> list[str]:
        """The cache keys built so far (tasks; ``"*"`` for an adapter shared by all tasks)."""
        return sorted(self._cache)
