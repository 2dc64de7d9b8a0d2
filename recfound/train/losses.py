"""The loss terms of training and validation, each defined once.

:meth:`Trainer.batch_loss <recfound.train.trainer.Trainer.batch_loss>` sums them into a step's
loss and :meth:`Trainer.validate <recfound.train.trainer.Trainer.validate>` reports them per task,
so a validation loss is the training loss of a fixed batch:

- :func:`answer_loss` — cross-entropy of the answer tokens of a generative batch (summed, and
  per sample as the mean over its answer tokens);
- :func:`closed_set_loss` — for closed-set samples, the cross-entropy of the softmax over their
  candidates' first answer tokens;
- :func:`block_infonce` — InfoNCE of one embedding block: each query against its positive, the
  block's other positives and the block's catalogue negatives (:func:`infonce` of embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recfound.model.recmodel import AnswerTokens, RecModel
from recfound.train.batches import EmbeddingBlock


class AnswerLoss(NamedTuple):
    """Cross-entropy of a batch's answer tokens: ``total`` (scalar) summed over every answer
    token, ``tokens`` (scalar) how many there are, ``per_sample`` ``(batch,)`` each sample's mean
    over its own answer tokens."""

    total: torch.Tensor
    tokens: torch.Tensor
    per_sample: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """Mean cross-entropy per answer token of the batch."""
        return self.total / self.tokens.clamp(min=1)


def answer_loss(answer: AnswerTokens) -> AnswerLoss:
    """:class:`AnswerLoss` of teacher-forced answer tokens (:meth:`RecModel.answer_tokens`)."""
    picked, mask = answer.logprobs, answer.mask
    per_sample = -picked.sum(-1) / mask.sum(-1).clamp(min=1)
    return AnswerLoss(-picked.sum(), mask.sum(), per_sample)


def closed_set_loss(
    first: torch.Tensor, choices: Sequence[tuple[int, list[int], int]]
) -> torch.Tensor:
    """Summed cross-entropy of the closed-set rows: row ``row``'s log-probabilities ``first``
    ``(batch, vocab)`` at its first answer token, renormalised over its candidates' first tokens
    ``tokens``, at the target's position ``target`` (rows as :attr:`StepBatch.choices`)."""
    total = torch.zeros((), device=first.device)
    for row, tokens, target in choices:
        within = torch.log_softmax(first[row, tokens], dim=0)
        total = total - within[target]
    return total


def infonce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    temperature: float,
    excluded: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean InfoNCE of normalised embeddings ``queries`` ``(Q, h)`` against ``documents``
    ``(D, h)``, ``D >= Q``: query i's positive is document i, every other document is a negative
    unless ``excluded`` ``(Q, D)`` marks it (it leaves that query's softmax)."""
    logits = queries @ documents.T / temperature
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries), device=logits.device))


class BlockLoss(NamedTuple):
    """:func:`block_infonce` of one block: the ``loss`` and the embeddings it was computed from
    (``queries`` ``(Q, h)``; ``documents`` ``(D, h)``: the positives, then the negatives)."""

    loss: torch.Tensor
    queries: torch.Tensor
    documents: torch.Tensor


def block_infonce(rec: RecModel, block: EmbeddingBlock) -> BlockLoss:
    """InfoNCE of an embedding block (:class:`EmbeddingBlock`): its queries against its positives
    and catalogue negatives, with the block's ``excluded`` mask. Negatives the block holds as
    their own batch (``train.negatives_grad: false``) are embedded without gradients."""
    queries = rec.embed_tokens(block.queries, block.task)
    documents = rec.embed_tokens(block.documents, block.task)
    if block.negatives is not None:
        with torch.no_grad():
            negatives = rec.embed_tokens(block.negatives, block.task)
        documents = torch.cat([documents, negatives])
    loss = infonce(queries, documents, rec.temperature, block.excluded)
    return BlockLoss(loss, queries, documents)
