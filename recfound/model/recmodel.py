"""One model for generation and embeddings (GritLM-style, as in RecFound).

:class:`RecModel` wraps an adapted causal LM (TMoLE or plain LoRA) and its tokenizer:

- ``generate(prompts, task)`` — greedy text generation for generative tasks;
- ``embed(texts, task)`` — L2-normalised vectors: mean pooling over the input tokens with
  bidirectional attention by default (causal attention and last-token pooling are options);
- ``score(prompts, candidates, task)`` — log-likelihood of each candidate answer given the prompt
  (ratings, like/dislike, candidate ranking);
- ``answer_tokens`` and ``embed_tokens`` — the forward passes training's losses are computed from
  (the losses themselves, InfoNCE at ``temperature`` included, are ``recfound.train.losses``).

The adapter decides how the task changes the weights; this class only tells it which task each
sample belongs to (``adapter.task(names)``).

Thread safety: a fast tokenizer keeps its padding and truncation settings as state that every
call rewrites, so every tokenizer call here runs under one lock with the padding / truncation side
it needs (:meth:`RecModel.tokenize`). With the adapter's context-local task selection, one
RecModel can serve concurrent requests from several threads.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from recfound.model.code_tree import build_code_tree, code_scores, rows_per_pass, tree_inputs

IGNORE_INDEX = -100
# One token of an item identifier: ``<item_340>`` (atomic) or one position of a semantic code.
IDENTIFIER_TOKEN = re.compile(r"<[^<>\s]+>")
# Fast tokenizers rewrite their backend's padding/truncation state on every call: one lock for
# every tokenizer call made here (tokenizing is cheap next to the forward passes it feeds).
_TOKENIZER_LOCK = threading.RLock()


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


def flat_pairs(
    prompts: Sequence[str], candidates: Sequence[Sequence[str]]
) -> tuple[list[str], list[str]]:
    """One (prompt, answer) pair per candidate, request by request: each prompt repeated once per
    candidate of its request, and the candidates in one list (:func:`per_request` cuts values of
    these pairs back into requests)."""
    flat_prompts = [p for p, cands in zip(prompts, candidates, strict=True) for _ in cands]
    return flat_prompts, [c for cands in candidates for c in cands]


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


def length_groups(lengths: Sequence[int], groups: int) -> list[torch.Tensor]:
    """Rows of a right-padded batch split into ``min(groups, len(lengths))`` groups of similar
    length, each a tensor of row indices (shortest rows first): the contiguous cut of the
    rows sorted by length that pads the fewest positions when each group is cut to its own
    longest row. Running each group as its own forward pass gives every row the same values
    (up to float rounding), with less work on padding; the count depends only on ``groups``
    and the number of rows, so processes with equally many rows run equally many passes."""
    n = len(lengths)
    k = max(1, min(groups, n))
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    if k == 1:
        return [torch.tensor(order, dtype=torch.long)]
    width = [lengths[i] for i in order]
    # cost[j][i]: fewest padded positions of rows order[:i] in j groups; cut[j][i]: last cut
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    cost[0][0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for start in range(j - 1, i):
                value = cost[j - 1][start] + (i - start) * width[i - 1]
                if value < cost[j][i]:
                    cost[j][i], cut[j][i] = value, start
    bounds, end = [], n
    for j in range(k, 0, -1):
        bounds.append((cut[j][end], end))
        end = cut[j][end]
    return [torch.tensor(order[a:b], dtype=torch.long) for a, b in reversed(bounds)]


def _widen(values: torch.Tensor, width: int) -> torch.Tensor:
    """``(rows, w)`` values right-padded with zeros (False) to ``(rows, width)``."""
    missing = width - values.shape[1]
    if missing <= 0:
        return values
    return torch.cat([values, values.new_zeros((values.shape[0], missing))], 1)


def _tasks_of(tasks: str | Sequence[str], rows: torch.Tensor) -> str | list[str]:
    """The task names of ``rows`` of a batch whose rows are of ``tasks`` (one name: all)."""
    return tasks if isinstance(tasks, str) else [tasks[i] for i in rows.tolist()]


def in_row_order(parts: Sequence[torch.Tensor], groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-group results ``parts`` (rows of each ``groups`` entry, in its order) as one tensor in
    the batch's row order."""
    rows = torch.cat(list(groups)).to(parts[0].device)
    return torch.cat(list(parts))[torch.argsort(rows)]


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


class DecoderStates(torch.nn.Module):
    """The forward pass every RecModel loss and score runs: the decoder's last hidden states
    ``(batch, seq, hidden)`` and, where ``head_at`` ``(batch, seq)`` is True, the LM head's
    log-probabilities ``(n_true, vocab)`` (None without ``head_at``).

    It is the module a trainer hands to ``accelerator.prepare``: DDP and FSDP see every forward
    pass (the head included) through their wrapper, so gradients are synchronised and sharded
    weights gathered, however many forward passes a step makes.
    """

    def __init__(self, causal_lm: torch.nn.Module) -> None:
        super().__init__()
        self.causal_lm = causal_lm

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        head_at: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = self.causal_lm
        if hasattr(model, "get_base_model"):  # a peft model wraps the transformers model
            model = model.get_base_model()
        hidden = model.base_model(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        if head_at is None:
            return hidden, None
        logits = self.causal_lm.get_output_embeddings()(hidden[head_at])
        return hidden, torch.log_softmax(logits.float(), dim=-1)


class AnswerTokens(NamedTuple):
    """Teacher-forced answer tokens of a batch from :meth:`RecModel.encode_with_answers`, each
    ``(batch, seq - 1)``: log-probability of the true token, answer positions, and whether the
    model's most likely token is the true one (token accuracy is ``correct.sum() / mask.sum()``).
    ``first`` ``(batch, vocab)``: the log-probabilities where each row's first answer token is
    predicted (what a closed set of answers is scored by)."""

    logprobs: torch.Tensor
    mask: torch.Tensor
    correct: torch.Tensor
    first: torch.Tensor


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
        # what losses and scores call; a trainer replaces it by its DDP/FSDP-prepared wrapper
        self.states: torch.nn.Module = DecoderStates(adapter.model)

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

    def tokenize(self, texts, *, side: Literal["left", "right"] | None = None, **kwargs):
        """``self.tokenizer(texts, **kwargs)`` under the tokenizer lock, padding and truncating
        on ``side`` (the tokenizer's own sides when None); the sides are restored after."""
        tok = self.tokenizer
        with _TOKENIZER_LOCK:
            sides = tok.padding_side, tok.truncation_side
            if side is not None:
                tok.padding_side, tok.truncation_side = side, side
            try:
                return tok(texts, **kwargs)
            finally:
                tok.padding_side, tok.truncation_side = sides

    def _encode(
        self, texts: Sequence[str], side: Literal["left", "right"] | None = None
    ) -> dict[str, torch.Tensor]:
        batch = self.tokenize(
            list(texts),
            side=side,
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
        with _TOKENIZER_LOCK:  # a fast tokenizer is not safe to call from two threads at once
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
        answer = self.answer_tokens(batch, tasks)
        return answer.logprobs, answer.mask

    def answer_tokens(
        self, batch: dict[str, torch.Tensor], tasks: str | Sequence[str], groups: int = 1
    ) -> AnswerTokens:
        """Teacher-forced log-probabilities and hits of the answer tokens (the LM head runs only
        where an answer token is predicted). ``groups`` > 1 runs rows of similar length as
        separate forward passes, each cut to its longest row (:func:`length_groups`): the same
        values with less work on padding where prompts differ in length (a training step's mix
        of tasks)."""
        if groups <= 1 or len(batch["input_ids"]) <= 1:
            return self._answers_of(batch, tasks)
        lengths = batch["attention_mask"].sum(1)
        full = batch["input_ids"].shape[1]
        order = length_groups(lengths.tolist(), groups)
        parts = []
        for rows in order:
            index = rows.to(lengths.device)
            width = int(lengths[index].max())
            part = {k: batch[k][index, :width] for k in ("input_ids", "attention_mask", "labels")}
            answer = self._answers_of(part, _tasks_of(tasks, rows))
            # back to the batch's width: the positions beyond ``width`` are padding
            parts.append(
                answer._replace(
                    **{
                        f: _widen(getattr(answer, f), full - 1)
                        for f in ("logprobs", "mask", "correct")
                    }
                )
            )
        return AnswerTokens(
            *(in_row_order([getattr(p, f) for p in parts], order) for f in AnswerTokens._fields)
        )

    def _answers_of(
        self, batch: dict[str, torch.Tensor], tasks: str | Sequence[str]
    ) -> AnswerTokens:
        """:meth:`answer_tokens` of ``batch`` in one forward pass."""
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE_INDEX
        head_at = F.pad(mask, (0, 1), value=False)  # the position before each answer token
        with self._for_tasks(tasks, len(targets)):
            _, logprobs = self.states(batch["input_ids"], batch["attention_mask"], head_at)
        true = targets[mask]
        picked = torch.zeros(targets.shape, dtype=logprobs.dtype, device=logprobs.device)
        picked[mask] = logprobs.gather(-1, true.unsqueeze(-1)).squeeze(-1)
        correct = torch.zeros(targets.shape, dtype=torch.bool, device=logprobs.device)
        correct[mask] = logprobs.argmax(-1) == true
        counts = mask.sum(1)  # every row has an answer token (EOS at least)
        first = logprobs[torch.cumsum(counts, 0) - counts]
        return AnswerTokens(picked, mask, correct, first)

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        task: str,
        length_normalize: bool = True,
    ) -> list[list[float]]:
        """Log-likelihood of each candidate answer after its prompt (mean per token by default)."""
        flat_prompts, flat_answers = flat_pairs(prompts, candidates)
        picked, mask = self.answer_token_logprobs(flat_prompts, flat_answers, task)
        totals = picked.sum(-1)
        if length_normalize:
            totals = totals / mask.sum(-1).clamp(min=1)
        return per_request(totals.tolist(), candidates)

    def first_answer_tokens(self, answers: Sequence[str]) -> list[int]:
        """Vocabulary id of each answer's first token as the model reads it after a prompt."""
        with _TOKENIZER_LOCK:
            return [answer_ids(self.tokenizer, a, self.max_length)[0] for a in answers]

    def closed_set_tokens(self, candidates: Sequence[Sequence[str]]) -> list[list[int]] | None:
        """Per row, the first answer token of each candidate, or None when some row has two
        candidates that start with the same token (the first token then cannot tell them apart).

        Item candidates start with their identifier token and labels (``yes``/``no``, ``1``-``5``)
        are one token each, so a closed set is usually decided by one next-token distribution.
        """
        rows = [self.closed_set_row(c) for c in candidates]
        return None if any(r is None for r in rows) else rows

    def closed_set_row(
        self, candidates: Sequence[str], cache: dict[str, int] | None = None
    ) -> list[int] | None:
        """The first answer token of each candidate, or None when two of them start with the same
        token. ``cache`` (answer text → first token) is read and filled when given."""
        cache = {} if cache is None else cache
        missing = [c for c in candidates if c not in cache]
        if missing:
            cache.update(zip(missing, self.first_answer_tokens(missing), strict=True))
        tokens = [cache[c] for c in candidates]
        return tokens if len(set(tokens)) == len(tokens) else None

    @torch.no_grad()
    def choice_scores(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        task: str,
        batch_size: int = 32,
    ) -> list[list[float]]:
        """Closed-set scores: per prompt, the log-probability of each candidate *within its
        candidate set* (log-softmax over the set; ``exp`` sums to 1 per row).

        When every candidate of a row starts with its own token, a candidate's score is its
        first answer token's next-token log-probability after the prompt (one forward pass per
        prompt, the way training's closed-set loss sees it): for item candidates this is their
        identifier's log-probability, so it ranks them exactly as the catalogue ranking
        (:meth:`catalogue_scores`) restricted to them. Otherwise a row falls back to the summed
        log-likelihood of each whole candidate answer (:meth:`score` without length
        normalisation), normalised over the set.
        """
        self.model.eval()
        out: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            cands = [list(c) for c in candidates[start : start + batch_size]]
            tokens = self.closed_set_tokens(cands)
            if tokens is None:
                raw = self.score(chunk, cands, task, length_normalize=False)
                out += [
                    torch.log_softmax(torch.tensor(r, dtype=torch.float64), 0).tolist() for r in raw
                ]
                continue
            logprobs = self.next_token_logprobs(chunk, task)
            for row, ids in enumerate(tokens):
                picked = logprobs[row, torch.as_tensor(ids, dtype=torch.long)]
                out.append(torch.log_softmax(picked.double(), 0).tolist())
        return out

    def next_token_logprobs(self, prompts: Sequence[str], task: str) -> torch.Tensor:
        """``(len(prompts), vocab)`` log-probabilities of the token after each prompt (the prompt
        cut from the left as :meth:`encode_with_answers` cuts it before a one-token answer)."""
        batch = self._encode(prompts, side="left")
        with self._for_tasks(task, len(prompts)):
            hidden = self.decoder(**batch).last_hidden_state[:, -1]
        return self.head_logprobs(hidden).cpu()

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

        Multi-token identifiers (``tasks.item_ids: semantic``) score the sum of their tokens'
        log-probabilities, every item's code exhaustively in one tree-masked pass per batch
        (:mod:`recfound.model.code_tree`); identifiers with an unknown token score ``-inf``.
        """
        self.model.eval()
        codes = self.identifier_codes(item_tokens)
        if codes is not None:
            return self._code_catalogue_scores(prompts, codes, task, batch_size)
        ids = self.item_token_ids(item_tokens)
        known = ids >= 0
        rows = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            logprobs = self.next_token_logprobs(chunk, task)
            out = torch.full((len(chunk), len(ids)), -torch.inf)
            out[:, known] = logprobs[:, ids[known]]
            rows.append(out)
        return torch.cat(rows) if rows else torch.empty(0, len(ids))

    def identifier_codes(self, item_tokens: Sequence[str]) -> torch.Tensor | None:
        """``(items, depth)`` token ids of multi-token identifiers (a row of ``-1`` for an empty
        identifier or one with a token the vocabulary lacks), or None when every identifier is
        at most one token (atomic identifiers: :meth:`item_token_ids`)."""
        split = [IDENTIFIER_TOKEN.findall(t) if t else [] for t in item_tokens]
        depths = {len(parts) for parts in split if parts}
        if not depths or depths == {1}:
            return None
        if len(depths) > 1:
            raise ValueError(
                f"item identifiers have different numbers of tokens ({sorted(depths)}); semantic "
                "codes all have levels + 1 tokens: rebuild the tasks"
            )
        vocab = self.tokenizer.get_vocab()
        (depth,) = depths
        rows = [[vocab.get(t, -1) for t in parts] if parts else [-1] * depth for parts in split]
        codes = torch.tensor(rows, dtype=torch.long).reshape(len(rows), depth)
        codes[(codes < 0).any(1)] = -1
        return codes

    def unknown_identifiers(self, item_tokens: Sequence[str]) -> int:
        """How many non-empty identifiers have a token the vocabulary lacks."""
        codes = self.identifier_codes(item_tokens)
        if codes is None:
            ids = self.item_token_ids(item_tokens)
            return int(
                sum(1 for i, t in zip(ids.tolist(), item_tokens, strict=True) if t and i < 0)
            )
        named = torch.tensor([bool(t) for t in item_tokens])
        return int(((codes[:, 0] < 0) & named).sum())

    def _code_catalogue_scores(
        self, prompts: Sequence[str], codes: torch.Tensor, task: str, batch_size: int
    ) -> torch.Tensor:
        """:meth:`catalogue_scores` of multi-token identifiers ``codes`` (see there)."""
        known = codes[:, 0] >= 0
        tree = build_code_tree(codes[known])
        batch_size = rows_per_pass(tree, len(self.tokenizer), batch_size)
        room = codes.shape[1] + 1  # the code and EOS, as training cut the prompt
        rows = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            batch = self.left_padded_prompts(chunk, room)
            inputs = tree_inputs(
                batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), tree
            )
            length = batch["input_ids"].shape[1]
            with self._for_tasks(task, len(chunk)):
                hidden = self.decoder(**inputs).last_hidden_state[:, length - 1 :]
            scores = code_scores(self.head_logprobs(hidden), tree).cpu()
            out = torch.full((len(chunk), len(codes)), -torch.inf)
            out[:, known] = scores.to(out.dtype)
            rows.append(out)
        return torch.cat(rows) if rows else torch.empty(0, len(codes))

    def left_padded_prompts(self, prompts: Sequence[str], room: int) -> dict[str, torch.Tensor]:
        """Prompts tokenized with *left* padding, cut from the left to leave ``room`` tokens of
        ``max_length`` for what follows them (CPU tensors)."""
        return self.tokenize(
            list(prompts),
            side="left",
            padding=True,
            truncation=True,
            max_length=max(1, self.max_length - room),
            return_tensors="pt",
        )

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
        outputs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            batch = self.left_padded_prompts(chunk, max_new_tokens)
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
            outputs.extend(tok.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True))
        return [o.strip() for o in outputs]

    # ---- embeddings ------------------------------------------------------------------------

    def embed_batch(self, texts: Sequence[str], tasks: str | Sequence[str]) -> torch.Tensor:
        """Normalised embeddings ``(len(texts), hidden)``, with gradients (for training).

        A text whose first line is an instruction (``"Find the movie …\n<content>"``) is read
        whole, but mean pooling covers only the content after the first line break: the
        embedding says what the content is, not what the template says (as GritLM pools).
        """
        return self.embed_tokens(self.encode_texts(texts), tasks)

    def encode_texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and pooling weights ``(len(texts), seq)`` of texts to embed."""
        batch = self._encode(texts)
        mask = batch["attention_mask"]
        if self.pooling == "mean":
            pool = mask * self._content_mask(texts, mask.shape[1])
        else:  # last non-pad token
            pool = F.one_hot(mask.sum(1) - 1, mask.shape[1]) * mask
        return {**batch, "pool": pool}

    def embed_tokens(
        self, batch: dict[str, torch.Tensor], tasks: str | Sequence[str]
    ) -> torch.Tensor:
        """:meth:`embed_batch` of a batch made by :meth:`encode_texts`."""
        mask = batch["attention_mask"]
        attention = mask
        if self.embedding_attention == "bidirectional":
            config = self.model.config
            attention = bidirectional_mask(
                mask, next(self.model.parameters()).dtype, config._attn_implementation
            )
        with self._for_tasks(tasks, len(mask)):
            hidden, _ = self.states(batch["input_ids"], attention)
        weights = batch["pool"].unsqueeze(-1).float()
        pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)
        return F.normalize(pooled, dim=-1)

    def _content_mask(self, texts: Sequence[str], width: int) -> torch.Tensor:
        """``(len(texts), width)``: 0 on the instruction line's tokens, 1 elsewhere (right padding).

        A text without a line break, or whose content would be empty, is content throughout.
        """
        out = torch.ones((len(texts), width), dtype=torch.long, device=self.device)
        for row, text in enumerate(texts):
            instruction, newline, content = text.partition("\n")
            if newline and content.strip():
                n = len(self.tokenize(instruction + newline)["input_ids"])
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
