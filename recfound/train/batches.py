"""What a training step reads: task records drawn by the task sampler, tokenized to tensors.

A step's global batch holds ``batch_size`` generative samples (tasks drawn from the generative
group's S2Sched probabilities) and ``embedding_batch_size / samples_per_task`` embedding blocks
of ``samples_per_task`` records of one task each, each block with ``catalogue_negatives`` random
catalogue items. Every process draws the same global batch (same seed, same sampler state) and
tokenizes only its own share (:meth:`BatchDrawer.draw`), so data parallelism needs no
communication to agree on the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from recfound.model.recmodel import RecModel
from recfound.train.s2sched import S2Scheduler


@dataclass
class TaskData:
    """One task's training and validation records (TaskRecord columns)."""

    name: str
    kind: str
    train: pd.DataFrame
    valid: pd.DataFrame


@dataclass
class TaskStream:
    """Endless seeded passes over one task's training records."""

    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        order = self._order()
        while len(out) < n:
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            out.append(int(order[self.position]))
            self.position += 1
        return out


@dataclass
class EmbeddingBlock:
    """One InfoNCE: ``queries`` and ``documents`` (the queries' positives, then the catalogue
    negatives) as :meth:`RecModel.encode_texts` batches; ``excluded`` ``(Q, D)`` marks documents
    that are no negatives of a query (its history, another query's identical positive)."""

    task: str
    queries: dict[str, torch.Tensor]
    documents: dict[str, torch.Tensor]
    excluded: torch.Tensor
    # catalogue negatives as their own batch, embedded without gradients (train.negatives_grad
    # false); None when they are part of ``documents``
    negatives: dict[str, torch.Tensor] | None = None


@dataclass
class StepBatch:
    """This process's share of one micro-batch, on the training device.

    ``generative``: :meth:`RecModel.encode_with_answers` tensors (``input_ids``,
    ``attention_mask``, ``labels``: ``(B, T)``) of ``generative_tasks`` (one name per row), or
    None when this process has no generative sample. ``blocks``: its embedding blocks.
    """

    generative: dict[str, torch.Tensor] | None
    generative_tasks: list[str]
    blocks: list[EmbeddingBlock] = field(default_factory=list)
    # closed-set rows of ``generative``: (row, first answer token of each candidate, target's
    # position among them), for the softmax over the candidate set (losses.closed_set_loss)
    choices: list[tuple[int, list[int], int]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Tokens the model reads in this batch (padding excluded)."""
        parts = [self.generative] if self.generative is not None else []
        parts += [part for b in self.blocks for part in (b.queries, b.documents, b.negatives)]
        parts = [p for p in parts if p is not None]
        return int(sum(int(p["attention_mask"].sum()) for p in parts))


class BatchDrawer:
    """Draws micro-batches: task mix from the sampler, records from each task's stream.

    ``state_dict`` / ``load_state_dict`` hold the sampling RNG and every stream's position, so a
    resumed run draws exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        rec: RecModel,
        tasks: dict[str, TaskData],
        sampler: S2Scheduler,
        *,
        batch_size: int,
        blocks: int,
        samples_per_task: int,
        catalogue_negatives: int,
        catalogue: pd.DataFrame | None,
        seed: int,
        negatives_grad: bool = True,
    ) -> None:
        self.rec = rec
        self.negatives_grad = negatives_grad
        self.tasks = tasks
        self.sampler = sampler
        self.batch_size = batch_size
        self.blocks = blocks
        self.samples_per_task = samples_per_task
        self.catalogue_negatives = catalogue_negatives
        # the item catalogue (item_id, text): every item is a negative of every embedding query
        self.catalogue_texts = [] if catalogue is None else catalogue["text"].astype(str).tolist()
        self.catalogue_index = (
            {} if catalogue is None else {str(i): n for n, i in enumerate(catalogue["item_id"])}
        )
        self.streams = {
            name: TaskStream(len(tasks[name].train), seed=seed * 1000 + i)
            for i, name in enumerate(sorted(tasks))
        }
        self.rng = np.random.default_rng(seed)
        self._first_tokens: dict[str, int] = {}  # answer text → its first token (cache)

    def draw(self, rank: int = 0, world: int = 1) -> StepBatch:
        """The next micro-batch's share of process ``rank`` of ``world``, as tensors.

        Generative samples are dealt out round-robin. Embedding blocks are dealt out when every
        process gets as many (InfoNCE needs a whole block), otherwise every process takes all
        of them; either way every process runs the same number of forward passes (FSDP needs
        that) and the step's loss normalisation (``Trainer.batch_loss``) stays exact.
        """
        generative, blocks = self._draw_records()
        mine = generative[rank::world]
        if len(blocks) % world == 0:
            blocks = blocks[rank::world]
        rec = self.rec
        batch = None
        if mine:
            batch = rec.encode_with_answers(
                [r.prompt for _, r in mine], [r.target for _, r in mine]
            )
        embedding = [self._block(task, records, negatives) for task, records, negatives in blocks]
        return StepBatch(batch, [t for t, _ in mine], embedding, self._choices(mine))

    def validation_block(
        self, task: str, records: pd.DataFrame, rng: np.random.Generator
    ) -> EmbeddingBlock:
        """The validation batch ``records`` of an embedding task as one block, with
        ``catalogue_negatives`` catalogue items drawn once by ``rng`` (the trainer draws it from
        its seed, so the validation loss is comparable across steps and runs).

        The negatives are drawn among the items that are none of the records' positives (by
        item id, or by text where records carry no id); an item a query already shows is
        excluded as in training (:meth:`_negatives_exclude`).
        """
        rows = [record for _, record in records.iterrows()]
        targets = {str(r.target) for r in rows}
        positives = {self._items_of(r)[0] for r in rows}
        pool = [
            i
            for i, text in enumerate(self.catalogue_texts)
            if i not in positives and text not in targets
        ]
        n = min(self.catalogue_negatives, len(pool))
        negatives = sorted(int(i) for i in rng.choice(pool, size=n, replace=False)) if n else []
        return self._block(task, rows, negatives)

    def _block(self, task: str, records: list[pd.Series], negatives: list[int]) -> EmbeddingBlock:
        """The block of ``records`` (their prompts the queries, their targets the positives) and
        the catalogue rows ``negatives``, tokenized on the model's device."""
        rec = self.rec
        queries = rec.encode_texts([r.prompt for r in records])
        positives = [r.target for r in records]
        negative_texts = [self.catalogue_texts[i] for i in negatives]
        excluded = torch.cat(
            [self._in_batch_exclude(records), self._negatives_exclude(records, negatives)], 1
        )
        if self.negatives_grad or not negative_texts:
            documents, separate = rec.encode_texts(positives + negative_texts), None
        else:
            documents, separate = rec.encode_texts(positives), rec.encode_texts(negative_texts)
        return EmbeddingBlock(task, queries, documents, excluded.to(rec.device), separate)

    def _choices(self, records: list[tuple[str, pd.Series]]) -> list[tuple[int, list[int], int]]:
        """The closed-set rows among ``records``: a record whose target is one of its candidates
        and whose candidates each start with their own token (labels, item identifiers)."""
        out = []
        for row, (_, record) in enumerate(records):
            candidates = [str(c) for c in record.get("candidates", [])]
            target = str(record.target)
            if len(candidates) < 2 or target not in candidates:
                continue
            tokens = self.rec.closed_set_row(candidates, self._first_tokens)
            if tokens is not None:
                out.append((row, tokens, candidates.index(target)))
        return out

    def _draw_records(
        self,
    ) -> tuple[list[tuple[str, pd.Series]], list[tuple[str, list[pd.Series], list[int]]]]:
        """The global micro-batch: (task, record) generative pairs, and (task, records, catalogue
        rows) embedding blocks; the same lists on every process."""
        generative = self.sampler.allocate(self.batch_size, self.rng, "generative")
        blocks = self.sampler.allocate(self.blocks, self.rng, "embedding")
        names = generative + [name for name in blocks for _ in range(self.samples_per_task)]
        counts = {n: names.count(n) for n in set(names)}
        picked = {n: self.streams[n].take(c) for n, c in sorted(counts.items())}

        def row(name: str) -> pd.Series:
            return self.tasks[name].train.iloc[picked[name].pop(0)]

        gen_rows = [(name, row(name)) for name in generative]
        emb_rows = [(name, [row(name) for _ in range(self.samples_per_task)]) for name in blocks]
        return gen_rows, [(n, records, self._draw_negatives()) for n, records in emb_rows]

    def _draw_negatives(self) -> list[int]:
        """Catalogue rows drawn uniformly (without replacement) as one block's extra negatives."""
        n = min(self.catalogue_negatives, len(self.catalogue_texts))
        if n <= 0:
            return []
        return sorted(self.rng.choice(len(self.catalogue_texts), size=n, replace=False).tolist())

    # ---- negatives beyond the batch ----------------------------------------------------------

    def _items_of(self, record: pd.Series) -> tuple[int | None, list[int]]:
        """Catalogue rows of a record's positive item and of the items the query already shows."""
        index = self.catalogue_index
        history = [index[h] for h in record.get("history_ids", []) if h in index]
        return index.get(str(record.get("item_id", ""))), history

    def _negatives_exclude(self, records: list[pd.Series], negatives: list[int]) -> torch.Tensor:
        """``(B, len(negatives))``: a drawn catalogue item that is some query's positive is in the
        batch already, and one a query already shows (its history) is no negative of it.

        Catalogue-wide negatives are what full-ranking evaluation contrasts a query with. They
        are drawn afresh each step and embedded with the current weights: a stale memory bank
        lets fresh queries and positives drift away from it together, and the embeddings
        collapse while the loss falls (seen here: cosine 0.998 between any two texts).
        """
        column = {item: j for j, item in enumerate(negatives)}
        exclude = torch.zeros((len(records), len(negatives)), dtype=torch.bool)
        for row, record in enumerate(records):
            positive, history = self._items_of(record)
            for item in history:
                if item in column:
                    exclude[row, column[item]] = True
            if positive in column:
                exclude[:, column[positive]] = True
        return exclude

    def _in_batch_exclude(self, records: list[pd.Series]) -> torch.Tensor:
        """``(B, B)``: another query's positive that this query already shows (its history) or
        that is the same item as this query's positive is not a negative of it."""
        items = [self._items_of(r) for r in records]
        exclude = torch.zeros((len(records), len(records)), dtype=torch.bool)
        for i, (positive, history) in enumerate(items):
            for j, (other, _) in enumerate(items):
                if i != j and other is not None and (other == positive or other in history):
                    exclude[i, j] = True
        return exclude

    # ---- resuming -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "streams": {k: [s.epoch, s.position] for k, s in self.streams.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        for name, (epoch, position) in state["streams"].items():
            self.streams[name].epoch, self.streams[name].position = epoch, position
