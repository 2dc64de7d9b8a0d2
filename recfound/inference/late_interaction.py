"""Late interaction: candidate scoring with the item side computed once per catalogue.

Today's scoring (:meth:`RecModel.score`) runs ``prompt + candidate`` through the whole model once
per candidate: a request with N candidates reads its prompt N times. M6-Rec splits the model
instead: lower layers read the user side and the item side separately, upper layers let them
interact. Here, for a decoder-only model whose answer follows the prompt:

- **item side, once per catalogue** (:meth:`LateInteractionScorer.cache_catalogue`): each
  candidate answer (``" " + text`` + EOS) runs alone through the lower ``split_layer`` layers,
  after a BOS token that stands in for the prompt as attention sink. Rotary attention depends on
  relative positions only, so these states hold at any offset and are stored per text.
- **user side, once per request**: the prompt runs through every layer; its keys/values are
  kept, and its last position predicts each answer's first token exactly as before.
- **light interaction**: the candidates' cached states run through the upper layers only,
  attending to the prompt's keys/values and to themselves; the head scores their tokens.

``split_layer=0`` caches only token embeddings: the scores equal :meth:`RecModel.score` (up to
float rounding and the prompt cut, see below) and the saving is the shared prompt alone. A
higher split saves the candidates' lower layers too, at the price that those layers no longer see
the prompt (the measured score drop is the trade-off).

One difference from :meth:`RecModel.score`: a long prompt is cut from the left once per request
(to fit its longest answer), not once per candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from recfound.inference.decoder import DecoderSteps, causal_mask
from recfound.model.recmodel import RecModel, answer_ids, per_request


class LateInteractionScorer:
    """Scores candidate answers of one task's folded model with a per-catalogue item cache."""

    def __init__(self, rec: RecModel, split_layer: int = 0) -> None:
        self.steps = DecoderSteps(rec.model)
        if not 0 <= split_layer < self.steps.num_layers:
            raise ValueError(
                f"split_layer must be in [0, {self.steps.num_layers}) for this "
                f"{self.steps.num_layers}-layer model, got {split_layer}"
            )
        self.rec = rec
        self.tokenizer = rec.tokenizer
        self.split_layer = split_layer
        self.max_length = rec.max_length
        self._items: dict[str, torch.Tensor] = {}  # text -> (answer tokens, hidden) states
        self._ids: dict[str, list[int]] = {}

    # ---- item side -----------------------------------------------------------------------

    @torch.no_grad()
    def cache_catalogue(self, texts: Iterable[str], batch_size: int = 64) -> int:
        """Compute and keep the item side of every new text; returns how many were new."""
        new = [t for t in dict.fromkeys(texts) if t not in self._items]
        bos = self.tokenizer.bos_token_id
        for start in range(0, len(new), batch_size):
            chunk = new[start : start + batch_size]
            rows = [answer_ids(self.tokenizer, t, self.max_length) for t in chunk]
            sink = [] if bos is None else [bos]
            ids, mask = self._pad([sink + r for r in rows])
            if self.split_layer:
                hidden, _ = self.steps.run(ids, mask, stop=self.split_layer)
            else:
                hidden = self.steps.embed(ids)
            for text, row, states in zip(chunk, rows, hidden, strict=True):
                self._ids[text] = row
                self._items[text] = states[len(sink) : len(sink) + len(row)].clone()
        return len(new)

    @property
    def cached_items(self) -> int:
        return len(self._items)

    def cache_bytes(self) -> int:
        """Memory the item cache holds (its hidden states)."""
        return sum(t.numel() * t.element_size() for t in self._items.values())

    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        device = self.rec.device
        return ids.to(device), mask.to(device)

    # ---- requests ------------------------------------------------------------------------

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        length_normalize: bool = True,
    ) -> list[list[float]]:
        """Log-likelihood of each candidate after its prompt (mean per token by default), as
        :meth:`RecModel.score`; candidates missing from the cache are added to it first."""
        if len(prompts) != len(candidates):
            raise ValueError(f"got {len(prompts)} prompts and {len(candidates)} candidate lists")
        self.cache_catalogue(c for cands in candidates for c in cands)
        steps = self.steps
        tok = self.tokenizer
        # user side: every prompt once, through every layer (cut to fit its longest answer)
        prompt_rows = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            longest = max((len(self._ids[c]) for c in cands), default=1)
            prompt_rows.append(tok(prompt)["input_ids"][-(self.max_length - longest) :])
        p_ids, p_mask = self._pad(prompt_rows)
        p_hidden, p_cache = steps.run(p_ids, p_mask)
        lengths = p_mask.sum(1)
        last = p_hidden[torch.arange(len(prompts)), lengths - 1]
        first_logprobs = steps.logprobs(last)  # (requests, vocab): each answer's first token
        # light interaction: cached candidate states through the upper layers
        owner = torch.tensor(
            [r for r, cands in enumerate(candidates) for _ in cands], dtype=torch.long
        ).to(p_ids.device)
        flat = [c for cands in candidates for c in cands]
        if not flat:
            return [[] for _ in prompts]
        width = max(len(self._ids[c]) for c in flat)
        hidden = p_hidden.new_zeros((len(flat), width, p_hidden.shape[-1]))
        c_mask = torch.zeros((len(flat), width), dtype=torch.long, device=p_ids.device)
        targets = torch.full_like(c_mask, tok.pad_token_id)
        for i, text in enumerate(flat):
            n = len(self._ids[text])
            hidden[i, :n] = self._items[text]
            c_mask[i, :n] = 1
            targets[i, :n] = torch.tensor(self._ids[text])
        offsets = lengths[owner]  # (candidates,): where each answer starts
        positions = offsets[:, None] + torch.arange(width, device=p_ids.device)[None, :]
        rope = steps.rope(hidden, positions)
        # a candidate token sees its prompt's real tokens and the answer tokens up to itself
        mask = torch.cat(
            [
                p_mask[owner][:, None, None, :].bool().expand(-1, 1, width, -1),
                causal_mask(c_mask, width),
            ],
            dim=3,
        )
        for index in range(self.split_layer, steps.num_layers):
            past = tuple(t[owner] for t in p_cache[index])
            hidden, _ = steps.layer(index, hidden, rope, mask, past=past)
        logprobs = steps.logprobs(hidden[:, :-1])  # position j predicts answer token j + 1
        picked = logprobs.gather(-1, targets[:, 1:, None]).squeeze(-1) * c_mask[:, 1:]
        first = first_logprobs[owner].gather(-1, targets[:, :1]).squeeze(-1)
        totals = first + picked.sum(1)
        if length_normalize:
            totals = totals / c_mask.sum(1).clamp(min=1)
        return per_request(totals.tolist(), candidates)
