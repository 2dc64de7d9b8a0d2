"""Early exit: score candidates after fewer layers when an intermediate layer is already sure.

An *exit head* sits after each intermediate layer: a linear map ``(hidden, hidden)`` that starts
as the identity, followed by the model's own final norm and LM head (so an untrained head is
the "logit lens" of that layer). :func:`train_exit_heads` fits the maps after training, with the
model frozen, by distilling the model's last layer on a task's *train* records (KL of the
answer-token distributions). A request (one prompt, its candidates) leaves the stack at the
first exit where the softmax over its candidates' scores puts at least ``threshold`` on the best
one; :func:`calibrate_threshold` picks the threshold on *validation* records (the lowest one
whose score stays within a tolerance of the full model's).

Scoring requests only: a generated token that exits early leaves the skipped layers without the
keys/values later tokens need, so free generation is not covered; embeddings have no confidence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from recfound.errors import UserInputError
from recfound.inference.decoder import DecoderSteps, causal_mask
from recfound.model.recmodel import RecModel, flat_pairs

HEADS_FILE = "exit_heads.safetensors"
HEADS_CONFIG = "exit_heads.json"
NEVER = math.inf  # a threshold no confidence reaches: every request runs every layer


class ExitHeadsError(UserInputError):
    """Exit heads are missing, damaged or were fitted for another model."""


class ExitHeads(nn.Module):
    """One identity-initialised ``nn.Linear(hidden, hidden)`` after each layer in ``layers``
    (1-based: ``layers=(1, 2)`` exits after the first and the second decoder layer)."""

    def __init__(self, hidden_size: int, layers: Sequence[int]) -> None:
        super().__init__()
        self.layers = tuple(int(layer) for layer in layers)
        self.maps = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in self.layers)
        with torch.no_grad():
            for linear in self.maps:
                linear.weight.copy_(torch.eye(hidden_size))
                linear.bias.zero_()

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.maps[self.layers.index(layer)](hidden)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            str(directory / HEADS_FILE),
        )
        hidden = self.maps[0].in_features if self.maps else 0
        (directory / HEADS_CONFIG).write_text(
            json.dumps({"hidden_size": hidden, "layers": list(self.layers)})
        )

    @classmethod
    def load(cls, directory: str | Path) -> ExitHeads:
        directory = Path(directory)
        try:
            config = json.loads((directory / HEADS_CONFIG).read_text())
            heads = cls(int(config["hidden_size"]), config["layers"])
            heads.load_state_dict(load_file(str(directory / HEADS_FILE)))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ExitHeadsError(
                f"cannot load exit heads from {directory} ({exc}); fit them again "
                "(train_exit_heads) for this model"
            ) from None
        return heads


def intermediate_layers(rec: RecModel) -> tuple[int, ...]:
    """Every layer an exit can follow: ``1 .. num_layers - 1``."""
    return tuple(range(1, DecoderSteps(rec.model).num_layers))


def train_exit_heads(
    rec: RecModel,
    prompts: Sequence[str],
    answers: Sequence[str],
    layers: Sequence[int] | None = None,
    steps: int = 100,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> ExitHeads:
    """Fit exit heads on ``(prompt, answer)`` pairs (a task's train records) by distilling the
    model's own last layer on the answer tokens; the model stays frozen."""
    runner = DecoderSteps(rec.model)
    layers = tuple(layers or intermediate_layers(rec))
    if not layers or min(layers) < 1 or max(layers) >= runner.num_layers:
        raise ValueError(f"exit layers must be in [1, {runner.num_layers}), got {layers}")
    hidden_size = runner.embed_tokens.embedding_dim
    heads = ExitHeads(hidden_size, layers).to(rec.device)
    optimizer = torch.optim.Adam(heads.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps if len(prompts) else 0):
        pick = torch.randint(len(prompts), (min(batch_size, len(prompts)),), generator=generator)
        batch = rec.encode_with_answers([prompts[i] for i in pick], [answers[i] for i in pick])
        loss = _distillation_loss(runner, heads, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    heads.eval()
    return heads


def _distillation_loss(
    runner: DecoderSteps, heads: ExitHeads, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Sum over exits of KL(last layer || exit) on the answer tokens of an encoded batch."""
    answer_rows = batch["labels"][:, 1:] != -100
    states = _layer_states(runner, batch["input_ids"], batch["attention_mask"])
    teacher = runner.logprobs(states[-1][:, :-1][answer_rows])
    loss = torch.zeros((), device=teacher.device)
    for layer in heads.layers:
        student = runner.logprobs(heads(layer, states[layer][:, :-1][answer_rows]))
        loss = loss + F.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return loss


@torch.no_grad()
def exit_divergence(
    rec: RecModel, heads: ExitHeads, prompts: Sequence[str], answers: Sequence[str]
) -> float:
    """The distillation loss of ``heads`` on ``(prompt, answer)`` pairs (lower: the exits agree
    more with the last layer)."""
    batch = rec.encode_with_answers(list(prompts), list(answers))
    return float(_distillation_loss(DecoderSteps(rec.model), heads.to(rec.device), batch))


@torch.no_grad()
def _layer_states(
    runner: DecoderSteps, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> list[torch.Tensor]:
    """Hidden states after every layer: ``[embeddings, layer 1, …, layer L]``."""
    hidden = runner.embed(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    rope = runner.rope(hidden, positions.expand(input_ids.shape[0], -1))
    mask = causal_mask(attention_mask, input_ids.shape[1])
    states = [hidden]
    for index in range(runner.num_layers):
        hidden, _ = runner.layer(index, hidden, rope, mask)
        states.append(hidden)
    return states


@dataclass
class ExitScores:
    """Scores per request (as :meth:`RecModel.score`) and the layers each request ran."""

    scores: list[list[float]]
    layers: list[int]


class EarlyExitScorer:
    """Candidate scoring that stops at the first confident exit (see the module docstring)."""

    def __init__(self, rec: RecModel, heads: ExitHeads, threshold: float = NEVER) -> None:
        self.rec = rec
        self.runner = DecoderSteps(rec.model)
        self.heads = heads.to(rec.device)
        self.threshold = threshold
        if heads.layers and max(heads.layers) >= self.runner.num_layers:
            raise ExitHeadsError(
                f"exit heads after layers {heads.layers} do not fit this "
                f"{self.runner.num_layers}-layer model; fit them for this model"
            )

    @property
    def num_layers(self) -> int:
        return self.runner.num_layers

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        length_normalize: bool = True,
    ) -> ExitScores:
        if len(prompts) != len(candidates):
            raise ValueError(f"got {len(prompts)} prompts and {len(candidates)} candidate lists")
        flat_prompts, flat_answers = flat_pairs(prompts, candidates)
        out = ExitScores([[] for _ in prompts], [0 for _ in prompts])
        if not flat_answers:
            return out
        batch = self.rec.encode_with_answers(flat_prompts, flat_answers)
        runner = self.runner
        owner = torch.tensor(
            [r for r, cands in enumerate(candidates) for _ in cands], device=self.rec.device
        )
        targets = batch["labels"][:, 1:]
        answer = targets != -100
        hidden = runner.embed(batch["input_ids"])
        width = hidden.shape[1]
        positions = torch.arange(width, device=hidden.device).expand(hidden.shape[0], -1)
        cos, sin = runner.rope(hidden, positions)
        mask = causal_mask(batch["attention_mask"], width)
        rows = torch.arange(hidden.shape[0], device=hidden.device)  # sequences still running
        for index in range(runner.num_layers):
            hidden, _ = runner.layer(index, hidden, (cos[rows], sin[rows]), mask[rows])
            depth = index + 1
            last = depth == runner.num_layers
            if not last and (depth not in self.heads.layers or self.threshold == NEVER):
                continue
            mapped = hidden if last else self.heads(depth, hidden)
            values = self._sequence_scores(mapped, targets[rows], answer[rows], length_normalize)
            done = self._finish(values, owner[rows], candidates, depth, out, force=last)
            if done.all():
                break
            keep = ~done
            hidden, rows = hidden[keep], rows[keep]
        return out

    def _sequence_scores(
        self, hidden: torch.Tensor, targets: torch.Tensor, answer: torch.Tensor, normalize: bool
    ) -> torch.Tensor:
        logprobs = self.runner.logprobs(hidden[:, :-1][answer])
        picked = torch.zeros(targets.shape, device=hidden.device)
        picked[answer] = logprobs.gather(-1, targets[answer].unsqueeze(-1)).squeeze(-1)
        totals = picked.sum(-1)
        return totals / answer.sum(-1).clamp(min=1) if normalize else totals

    def _finish(
        self,
        values: torch.Tensor,
        owners: torch.Tensor,
        candidates: Sequence[Sequence[str]],
        depth: int,
        out: ExitScores,
        force: bool,
    ) -> torch.Tensor:
        """Record the requests that exit at ``depth``; returns which running rows are done."""
        done = torch.zeros(len(values), dtype=torch.bool, device=values.device)
        for request in owners.unique().tolist():
            where = owners == request
            scores = values[where]
            confident = bool(torch.softmax(scores, 0).max() >= self.threshold)
            if force or confident:
                if len(scores) != len(candidates[request]):  # all of a request's rows run together
                    raise RuntimeError("a request's candidates were split across exits")
                out.scores[request] = scores.tolist()
                out.layers[request] = depth
                done |= where
        return done


@dataclass(frozen=True)
class ThresholdTrial:
    threshold: float
    score: float
    mean_layers: float


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold and every trial behind it (validation records only)."""

    threshold: float
    full_score: float
    tolerance: float
    trials: tuple[ThresholdTrial, ...]

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "threshold": None if self.threshold == NEVER else self.threshold,
            "trials": [
                {**asdict(t), "threshold": None if t.threshold == NEVER else t.threshold}
                for t in self.trials
            ],
        }


def calibrate_threshold(
    evaluate: Callable[[float], tuple[float, float]],
    thresholds: Sequence[float],
    tolerance: float,
) -> Calibration:
    """The lowest threshold, going down from the highest, whose score stays within
    ``tolerance`` of the full model's (the search stops at the first that does not).

    ``evaluate(threshold)`` returns ``(score, mean layers run)`` on validation records (higher
    score is better); :data:`NEVER` (no exit) gives the full model's score. No threshold that
    keeps the score: :data:`NEVER`.
    """
    full_score, full_layers = evaluate(NEVER)
    trials = [ThresholdTrial(NEVER, full_score, full_layers)]
    chosen = NEVER
    for threshold in sorted(thresholds, reverse=True):
        score, layers = evaluate(threshold)
        trials.append(ThresholdTrial(threshold, score, layers))
        if score < full_score - tolerance:
            break  # lower thresholds exit more: stop at the first that loses too much
        chosen = threshold
    return Calibration(chosen, full_score, tolerance, tuple(trials))
