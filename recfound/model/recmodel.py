"""One model for generation and embeddings (GritLM-style, as in RecFound).

:class:`RecModel` wraps an adapted causal LM (TMoLE or plain LoRA) and its tokenizer:

- ``generate(prompts, task)`` — greedy text generation for generative tasks;
- ``embed(texts, task)`` — L2-normalised vectors: mean pooling over the input tokens with
  bidirectional attention by default (causal attention and last-token pooling are options);
- ``score(prompts, candidates, task)`` — log-likelihood of each candidate answer given the prompt
  (ratings, like/dislike, candidate ranking);
- ``generative_loss`` — next-token cross-entropy on answer tokens only;
- ``contrastive_loss`` — InfoNCE with in-batch negatives at a temperature.

The adapter decides how the task changes the weights; this class only tells it which task each
sample belongs to (``adapter.task(names)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def top_k_items(scores: torch.Tensor, exclude: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """``(n, k)`` catalogue indices of the best-scored items of each row, best first, never one of
    that row's ``exclude`` (the items the user already met) nor an item that cannot be scored
    (``-inf``). Rows with fewer than ``k`` candidates are padded with ``-1``."""
    masked = scores.clone().float()
    for row, items in enumerate(exclude):
        if len(items):
            masked[row, torch.as_tensor(list(items), dtype=torch.long)] = float("-inf")
    k = min(k, masked.shape[1])
    values, indices = masked.topk(k, dim=1)
    return indices.masked_fill(torch.isinf(values), -1)


def per_request(values: Sequence[float], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
    """Flat per-candidate values cut back into one list per request (``candidates``' shape)."""
    out, start = [], 0
    for cands in candidates:
        out.append(list(values[start : start + len(cands)]))
        start += len(cands)
    return out


def answer_ids(tokenizer, answer: str, max_length: int) -> list[int]:
    """Token ids of ``answer`` as the model reads it after a prompt: ``" " + answer`` and EOS,
    cut at ``max_length // 2`` tokens."""
    ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return (ids + [tokenizer.eos_token_id])[: max_length // 2]


def answer_rows(
    tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Per pair, the ids of ``prompt + " " + answer + EOS`` and its labels (``IGNORE_INDEX`` on
    the prompt). The answer is cut at ``max_length // 2`` tokens, the prompt from the left so
    that both fit in ``max_length``. (The device runtime encodes with this too.)"""
    rows, labels = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p_ids = tokenizer(prompt)["input_ids"]
        a_ids = answer_ids(tokenizer, answer, max_length)
        p_ids = p_ids[-(max_length - len(a_ids)) :]
        rows.append(p_ids + a_ids)
        labels.append([IGNORE_INDEX] * len(p_ids) + a_ids)
    return rows, labels


class TaskAdapter(Protocol):
    """What RecModel needs of an adapter (TMoLE or LoRA)."""

    model: torch.nn.Module

    def task(self, task: str | Sequence[str]) -> contextlib.AbstractContextManager: ...


def bidirectional_mask(attention_mask: torch.Tensor, dtype: torch.dtype, implementation: str):
    """A 4D mask ``(batch, 1, seq, seq)`` letting every token attend to every non-pad token.

    Transformers uses a 4D mask as given. SDPA takes booleans (True = attend); eager attention adds
    the mask, so it gets 0 / most-negative floats.
    """
    keep = attention_mask[:, None, None, :].bool().expand(-1, 1, attention_mask.shape[1], -1)
    if implementation == "eager":
        mask = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
        return mask.masked_fill(~keep, torch.finfo(dtype).min)
    return keep


class RecModel:
    """An adapted causal LM that generates, embeds and scores for recommendation tasks."""

    def __init__(
        self,
        adapter: TaskAdapter,
        tokenizer,
        *,
        pooling: Literal["mean", "last"] = "mean",
        embedding_attention: Literal["bidirectional", "causal"] = "bidirectional",
        max_length: int = 256,
        temperature: float = 0.05,
    ) -> None:
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.embedding_attention = embedding_attention
        self.max_length = max_length
        self.temperature = temperature

    @property
    def model(self) -> torch.nn.Module:
        return self.adapter.model

    @property
    def decoder(self) -> torch.nn.Module:
        """The transformer without its LM head (adapters included): its last hidden states are
        what embeddings pool and what the head scores, so a caller that needs a few positions'
        logits (answers, the next item) or none (embeddings) never pays for the others."""
        model = self.model
        if hasattr(model, "get_base_model"):  # a peft model wraps the transformers model
            model = model.get_base_model()
        return model.base_model

    def head_logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Log-probabilities over the vocabulary from last hidden states ``(..., hidden)``."""
        return torch.log_softmax(self.model.get_output_embeddings()(hidden).float(), dim=-1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- batching -------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for ``texts`` (after truncation), for throughput figures."""
        return int(self._encode(texts)["attention_mask"].sum())

    def _encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")
        }

    def encode_with_answers(
        self, prompts: Sequence[str], answers: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Token ids of ``prompt + answer + EOS``; labels are -100 everywhere but the answer.

        Long prompts are cut from the left so the answer always fits in ``max_length``.
        """
        rows, labels = answer_rows(self.tokenizer, prompts, answers, self.max_length)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        label_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, lab) in enumerate(zip(rows, labels, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(row)] = 1
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "labels": label_ids.to(self.device),
        }

    @contextlib.contextmanager
    def _for_tasks(self, tasks: str | Sequence[str], n: int) -> Iterator[None]:
        names = [tasks] * n if isinstance(tasks, str) else list(tasks)
        if len(names) != n:
            raise ValueError(f"got {len(names)} task names for {n} samples")
        with self.adapter.task(names):
            yield

    # ---- generation ------------------------------------------------------------------------

    def answer_token_logprobs(
        self, prompts: Sequence[str], answers: Sequence[str], tasks: str | Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of the answers, and the mask of answer positions."""
        return self.logprobs_of(self.encode_with_answers(prompts, answers), tasks)

    def logprobs_of(
        self, batch: dict[str, torch.Tensor], tasks: str | Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`answer_token_logprobs` for a batch made by :meth:`encode_with_answers`."""
        prompts = batch["input_ids"]
        with self._for_tasks(tasks, len(prompts)):
            hidden = self.decoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE_INDEX
        # the head runs only where an answer token is predicted
        logprobs = self.head_logprobs(hidden[:, :-1][mask])
        picked = torch.zeros(targets.shape, dtype=logprobs.dtype, device=logprobs.device)
        picked[mask] = logprobs.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
        return picked, mask

    def generative_loss(
        self, prompts: Sequence[str], answers: Sequence[str], tasks: str | Sequence[str]
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over answer tokens (prompt tokens do not count)."""
        picked, mask = self.answer_token_logprobs(prompts, answers, tasks)
        return -(picked.sum() / mask.sum().clamp(min=1))

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        task: str,
        length_normalize: bool = True,
    ) -> list[list[float]]:
        """Log-likelihood of each candidate answer after its prompt (mean per token by default)."""
        flat_prompts = [p for p, cands in zip(prompts, candidates, strict=True) for _ in cands]
        flat_answers = [c for cands in candidates for c in cands]
        picked, mask = self.answer_token_logprobs(flat_prompts, flat_answers, task)
        totals = picked.sum(-1)
        if length_normalize:
            totals = totals / mask.sum(-1).clamp(min=1)
        return per_request(totals.tolist(), candidates)

    @torch.no_grad()
    def catalogue_scores(
        self,
        prompts: Sequence[str],
        item_tokens: Sequence[str],
        task: str,
        batch_size: int = 32,
    ) -> torch.Tensor:
        """Generative retrieval: ``(len(prompts), len(item_tokens))`` next-token log-probabilities
        of every item's identifier token right after its prompt (one forward pass per batch).

        An answer of a next-item task starts with the item's identifier token, so this ranks the
        whole catalogue exactly as the model would generate its first answer token. Items without
        an identifier (empty string, e.g. cold items) score ``-inf``.
        """
        self.model.eval()
        ids = self.item_token_ids(item_tokens)
        known = ids >= 0
        tok = self.tokenizer
        sides = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "left", "left"
        rows = []
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start : start + batch_size])
                batch = self._encode(chunk)
                with self._for_tasks(task, len(chunk)):
                    hidden = self.decoder(**batch).last_hidden_state[:, -1]
                logprobs = self.head_logprobs(hidden)
                out = torch.full((len(chunk), len(ids)), -torch.inf, device=logprobs.device)
                out[:, known] = logprobs[:, ids[known]]
                rows.append(out.cpu())
        finally:
            tok.padding_side, tok.truncation_side = sides
        return torch.cat(rows) if rows else torch.empty(0, len(ids))

    def item_token_ids(self, item_tokens: Sequence[str]) -> torch.Tensor:
        """Vocabulary id of each identifier token (``-1`` for an empty or unknown one)."""
        vocab = self.tokenizer.get_vocab()
        return torch.tensor([vocab.get(t, -1) if t else -1 for t in item_tokens], dtype=torch.long)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        task: str,
        max_new_tokens: int = 32,
        batch_size: int = 16,
    ) -> list[str]:
        """Greedy continuation of each prompt, decoded without special tokens.

        Prompts are batched with *left* padding (and cut from the left when too long), so every
        row's last prompt token sits at the same position and greedy decoding matches decoding
        the prompts one at a time.
        """
        self.model.eval()
        tok = self.tokenizer
        sides = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "left", "left"
        outputs: list[str] = []
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start : start + batch_size])
                batch = tok(
                    chunk,
                    padding=True,
                    truncation=True,
                    max_length=max(1, self.max_length - max_new_tokens),
                    return_tensors="pt",
                )
                ids = batch["input_ids"].to(self.device)
                with self._for_tasks(task, len(chunk)):
                    generated = self.model.generate(
                        input_ids=ids,
                        attention_mask=batch["attention_mask"].to(self.device),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id,
                    )
                outputs.extend(
                    tok.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True)
                )
        finally:
            tok.padding_side, tok.truncation_side = sides
        return [o.strip() for o in outputs]

    # ---- embeddings ------------------------------------------------------------------------

    def embed_batch(self, texts: Sequence[str], tasks: str | Sequence[str]) -> torch.Tensor:
        """Normalised embeddings ``(len(texts), hidden)``, with gradients (for training).

        A text whose first line is an instruction (``"Find the movie …\n<content>"``) is read
        whole, but mean pooling covers only the content after the first line break: the
        embedding says what the content is, not what the template says (as GritLM pools).
        """
        batch = self._encode(texts)
        mask = batch["attention_mask"]
        attention = mask
        if self.embedding_attention == "bidirectional":
            config = self.model.config
            attention = bidirectional_mask(
                mask, next(self.model.parameters()).dtype, config._attn_implementation
            )
        with self._for_tasks(tasks, len(texts)):
            hidden = self.decoder(
                input_ids=batch["input_ids"], attention_mask=attention
            ).last_hidden_state.float()
        if self.pooling == "mean":
            weights = (mask * self._content_mask(texts, mask.shape[1])).unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:  # last non-pad token
            last = mask.sum(1) - 1
            pooled = hidden[torch.arange(len(texts), device=hidden.device), last]
        return F.normalize(pooled, dim=-1)

    def _content_mask(self, texts: Sequence[str], width: int) -> torch.Tensor:
        """``(len(texts), width)``: 0 on the instruction line's tokens, 1 elsewhere (right padding).

        A text without a line break, or whose content would be empty, is content throughout.
        """
        out = torch.ones((len(texts), width), dtype=torch.long, device=self.device)
        for row, text in enumerate(texts):
            instruction, newline, content = text.partition("\n")
            if newline and content.strip():
                n = len(self.tokenizer(instruction + newline)["input_ids"])
                out[row, : min(n, width - 1)] = 0
        return out

    @torch.no_grad()
    def embed(self, texts: Sequence[str], task: str, batch_size: int = 64) -> torch.Tensor:
        """Normalised embeddings for many texts, in batches, without gradients."""
        self.model.eval()
        parts = [
            self.embed_batch(texts[i : i + batch_size], task)
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty(0)

    def contrastive_loss(
        self,
        queries: Sequence[str],
        positives: Sequence[str],
        tasks: str | Sequence[str],
        negatives: Sequence[str] = (),
        exclude: torch.Tensor | None = None,
        in_batch_exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """InfoNCE: each query against its positive, the batch's other positives and the extra
        ``negatives`` (documents embedded in the same pass, with gradients).

        ``exclude`` ``(B, len(negatives))`` marks extra negatives that are no negatives of a query
        (its own positive, or an item it already shows); ``in_batch_exclude`` ``(B, B)`` does the
        same for the batch's other positives. Excluded logits leave the softmax.
        """
        q = self.embed_batch(queries, tasks)
        documents = self.embed_batch([*positives, *negatives], tasks)
        logits = q @ documents.T / self.temperature
        mask = torch.zeros_like(logits, dtype=torch.bool)
        if in_batch_exclude is not None:
            mask[:, : len(positives)] = in_batch_exclude
        if exclude is not None and len(negatives):
            mask[:, len(positives) :] = exclude
        logits = logits.masked_fill(mask, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(queries), device=logits.device))
