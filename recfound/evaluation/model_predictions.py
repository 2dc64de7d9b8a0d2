"""The model's per-record outputs on an evaluation set, one protocol per task shape
(:mod:`recfound.evaluation.protocols`): embeddings ranked over the catalogue, identifier logits
over the catalogue, closed sets scored within the set, text generated; fusion of two signals of
one ranking where configured. ``quick=True`` (the merge objective) replaces generation by
teacher-forced answer-token accuracy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from recfound.baselines.rankers import BM25Ranker
from recfound.evaluation.outputs import (
    ChoiceOutputs,
    RecordOutputs,
    TokenAccuracyOutputs,
)
from recfound.evaluation.protocols import (
    FULL_RANKING_PROTOCOLS,
    EvalSet,
    assign_protocols,
    calibrated,
    candidate_outputs,
    catalogue_tokens,
    cutoffs_for,
    full_ranking_outputs,
    record_histories,
    record_keys,
    text_outputs,
)
from recfound.evaluation.scores import scored_metrics
from recfound.model.recmodel import RecModel

log = logging.getLogger(__name__)


@torch.no_grad()
def teacher_forced_counts(
    rec: RecModel, prompts: list[str], targets: list[str], task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per record: answer tokens predicted right given the true prefix, and answer tokens."""
    answer = rec.answer_tokens(rec.encode_with_answers(prompts, targets), task)
    return answer.correct.sum(dim=1).cpu().numpy(), answer.mask.sum(dim=1).cpu().numpy()


def user_prompts(
    data: EvalSet, task: str, users: Sequence[str], fallback: Sequence[str]
) -> list[str]:
    """Each user's prompt in ``task``'s records (the record's own prompt, from ``fallback``, where
    the user has none there)."""
    frame = data.frames[task]
    prompt_of = dict(zip(frame["user_id"].astype(str), frame["prompt"].astype(str), strict=True))
    return [prompt_of.get(u, p) for u, p in zip(users, fallback, strict=True)]


def embedding_scores(
    rec: RecModel,
    data: EvalSet,
    texts: list[str],
    task: str,
    batch_size: int,
    documents: dict[str, torch.Tensor] | None = None,
) -> np.ndarray:
    """Scores of every catalogue item for each of ``texts`` by ``task``'s embedding (the item
    embeddings are computed once per task into ``documents``)."""
    documents = {} if documents is None else documents
    if task not in documents:
        item_texts = data.items["text"].astype(str).tolist()
        documents[task] = rec.embed(item_texts, task, batch_size=batch_size)
    queries = rec.embed(texts, task, batch_size=batch_size)
    return (queries @ documents[task].T).float().cpu().numpy()


def model_outputs(
    rec: RecModel,
    data: EvalSet,
    protocols: Mapping[str, str] | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
    max_new_tokens: int = 24,
    batch_size: int = 32,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    answered_as: Mapping[str, str] | None = None,
    fusion: Mapping[str, str] | None = None,
    alone: dict[str, RecordOutputs] | None = None,
) -> dict[str, RecordOutputs]:
    """Task → the model's per-record outputs on ``data`` under ``protocols``.

    ``answered_as`` maps an evaluation task the model was not trained on (zero_shot) to the
    trained task whose adapter answers it. ``fusion`` ranks a full-ranking task by two signals
    (:func:`fused_scores`): a retrieval task mapped to ``"bm25"`` fuses its embedding with BM25
    (hybrid retrieval); a next-item task mapped to an embedding task fuses its identifier
    log-probabilities with that task's embedding of the same user (the ``user2item`` adapter).
    The single path's outputs (the model's own signal alone) go into ``alone[task]``.
    """
    fusion = dict(fusion or {})
    alone = {} if alone is None else alone
    rec.model.eval()
    protocols = dict(protocols or assign_protocols(data, rec))
    item_index = data.item_index
    earlier = data.earlier_items()
    item_texts = data.items["text"].astype(str).tolist()
    documents: dict[str, torch.Tensor] = {}
    out: dict[str, RecordOutputs] = {}
    for name, frame in data.frames.items():
        if progress:
            progress(name)
        protocol = protocols[name]
        task = (answered_as or {}).get(name, name)
        prompts = frame["prompt"].astype(str).tolist()
        targets = frame["target"].astype(str).tolist()
        if protocol in FULL_RANKING_PROTOCOLS:
            if protocol == "retrieval":
                scores = embedding_scores(rec, data, prompts, task, batch_size, documents)
                partner = None
                if fusion.get(name) == "bm25":
                    partner = BM25Ranker(item_texts).scores(prompts)
            else:
                tokens = catalogue_tokens(data.items) or []
                scores = rec.catalogue_scores(prompts, tokens, task, batch_size).numpy()
                partner = None
                other = fusion.get(name, "")
                if other in data.frames:
                    users = frame["user_id"].astype(str).tolist()
                    texts = user_prompts(data, other, users, prompts)
                    partner = embedding_scores(rec, data, texts, other, batch_size, documents)
            histories = record_histories(frame, earlier)
            if partner is not None:  # the single path's ranking, reported beside the fused one
                alone[name] = full_ranking_outputs(
                    frame, scores, item_index, histories, cutoffs_for(ks, protocol)
                )
                scores = fused_scores(scores, partner)
            out[name] = full_ranking_outputs(
                frame, scores, item_index, histories, cutoffs_for(ks, protocol)
            )
        elif protocol == "text" and quick:
            counts = [
                teacher_forced_counts(
                    rec, prompts[i : i + batch_size], targets[i : i + batch_size], task
                )
                for i in range(0, len(prompts), batch_size)
            ]
            out[name] = TokenAccuracyOutputs(
                **record_keys(frame),
                correct=np.concatenate([c for c, _ in counts]),
                total=np.concatenate([t for _, t in counts]),
            )
        elif protocol == "text":
            length = generation_length(rec, data.train_targets.get(name, targets), max_new_tokens)
            generated = rec.generate(prompts, task, max_new_tokens=length, batch_size=batch_size)
            out[name] = text_outputs(frame, generated)
        else:  # a closed set: labels or listed items, scored within the set
            outputs = closed_set_outputs(rec, frame, protocol, task, ks, batch_size)
            valid = data.calibration.get(name) if protocol == "classification" else None
            if valid is not None and not valid.empty:  # the cut of two labels, on validation
                validation = closed_set_outputs(rec, valid, protocol, task, ks, batch_size)
                outputs = calibrated(outputs, validation)
            if isinstance(outputs, ChoiceOutputs) and outputs.threshold is not None:
                log.info(
                    "%s: decision threshold %.3f (validation records)", name, outputs.threshold
                )
            out[name] = outputs
    return out


def closed_set_outputs(
    rec: RecModel,
    frame: pd.DataFrame,
    protocol: str,
    task: str,
    ks: Sequence[int],
    batch_size: int,
) -> RecordOutputs:
    """The model's outputs on records whose answer is one of their ``candidates``."""
    candidates = [list(c) for c in frame["candidates"]]
    prompts = frame["prompt"].astype(str).tolist()
    scores = rec.choice_scores(prompts, candidates, task, batch_size)
    return candidate_outputs(frame, scores, protocol, ks)


def fused_scores(*signals: np.ndarray) -> np.ndarray:
    """Two or more ``(queries, items)`` score matrices of one ranking, each standardised per
    query over the catalogue (z-scores) and added with equal weight: no signal's scale decides
    the mix and no weight is fitted (nothing is tuned on evaluation records). An item a signal
    cannot score (``-inf``: no identifier) takes that query's lowest finite score there, so the
    other signal can still rank it."""
    total = None
    for values in signals:
        values = np.array(values, dtype=np.float64)
        finite = np.isfinite(values)
        lowest = np.where(finite, values, np.inf).min(axis=1, keepdims=True)
        values = np.where(finite, values, np.where(np.isfinite(lowest), lowest, 0.0))
        spread = values.std(axis=1, keepdims=True)
        z = (values - values.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
        total = z if total is None else total + z
    return total


def generation_length(rec: RecModel, train_targets: Sequence[str], cap: int) -> int:
    """New tokens to generate for a task: enough for its longest training answer (the 95th
    percentile of their token counts, plus the end-of-text token), at most ``cap``.

    One fixed length cut ``item_profile`` answers (about 48 tokens) at 24, while short answers
    need far fewer steps. Training answers, never the evaluated ones, set it."""
    if not train_targets:
        return cap
    sample = list(train_targets)[:500]
    lengths = [len(ids) for ids in rec.tokenizer(sample, add_special_tokens=False)["input_ids"]]
    return int(min(cap, np.percentile(lengths, 95) + 1))


def evaluate_model(
    rec: RecModel, data: EvalSet, protocols: Mapping[str, str] | None = None, **options: Any
) -> dict[str, dict[str, Any]]:
    """Per task: its point metrics, ``score`` (higher is better), ``score_metric``, ``protocol``
    (no intervals: the merge objective's fast path; the evaluate stage uses the outputs).
    ``options`` are :func:`model_outputs`' (``ks``, ``max_new_tokens``, ``quick`` …)."""
    protocols = dict(protocols or assign_protocols(data, rec))
    return scored_metrics(model_outputs(rec, data, protocols, **options), protocols)
