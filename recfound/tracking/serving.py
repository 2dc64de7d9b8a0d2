"""The registered model: an MLflow pyfunc that answers task requests with the merged RecFound model.

A request is a table (a pandas DataFrame, or a list of dicts) with one row per query:

- ``task``: a task of the model (``user2item``, ``rating_prediction``, …);
- ``input``: the text the task reads (the prompt of a generative task, the query, user history or
  item text of an embedding task);
- ``candidates`` (optional): a list of strings.

The answer has one row per request row, in order, with ``task``, ``kind`` (``embedding`` or
``generative``), ``output_type`` and exactly the fields that type fills:

- embedding task → ``output_type="embedding"``, ``embedding`` (L2-normalised vector); with
  candidates, ``scores`` also holds the cosine similarity of the input to each candidate;
- generative task with candidates → ``output_type="scores"``, ``scores`` (mean log-likelihood of
  each candidate as the answer) and ``generation`` (the best candidate);
- generative task without candidates → ``output_type="generation"``, ``generation`` (greedy text).

Rows of one task are answered in one batched call. The backbone and the bundle travel as model
artifacts and the ``recfound`` package as model code, so a registered version needs nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType, Array

import recfound
from recfound.model.bundle import load_bundle, read_spec

INPUT_COLUMNS = ("task", "input", "candidates")
OUTPUT_COLUMNS = ("task", "kind", "output_type", "generation", "embedding", "scores")
DEFAULT_MAX_NEW_TOKENS = 32
SCORE_PAIRS = 256  # (prompt, candidate) sequences per forward pass when scoring

# What the model needs at serving time (pinned to the versions installed where it was logged);
# the recfound package itself travels as model code.
RUNTIME_PACKAGES = (
    "mlflow",
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "tokenizers",
    "pandas",
    "numpy",
)

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "task"),
            ColSpec("string", "input"),
            # a list of strings, checked by the model: "any" lets rows without candidates
            # (missing, null or NaN once in a DataFrame) through MLflow's schema check
            ColSpec(AnyType(), "candidates", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec("string", "task"),
            ColSpec("string", "kind"),
            ColSpec("string", "output_type"),
            ColSpec("string", "generation", required=False),
            ColSpec(Array("double"), "embedding", required=False),
            ColSpec(Array("double"), "scores", required=False),
        ]
    ),
    params=ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS)]),
)


def pinned_requirements() -> list[str]:
    """``name==version`` of each runtime package as installed here (local labels like +cpu cut)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in RUNTIME_PACKAGES]


def package_dir() -> str:
    """The ``recfound`` package directory, logged as model code."""
    return str(Path(recfound.__file__).resolve().parent)


def input_example(task_kinds: Mapping[str, str]) -> pd.DataFrame:
    """A request for the first embedding task and the first generative task of the model."""
    rows = []
    embedding = sorted(t for t, k in task_kinds.items() if k == "embedding")
    generative = sorted(t for t, k in task_kinds.items() if k != "embedding")
    if embedding:
        rows.append({"task": embedding[0], "input": "Toy Story (1995)", "candidates": None})
    if generative:
        rows.append(
            {
                "task": generative[0],
                "input": "The user watched: Toy Story (1995); Heat (1995). Next movie?",
                "candidates": ["GoldenEye (1995)", "Jumanji (1995)"],
            }
        )
    return pd.DataFrame(rows, columns=list(INPUT_COLUMNS))


def _candidate_list(value: Any, row: int) -> list[str]:
    """A row's candidates; missing (None, NaN, NA) means none."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise MlflowException.invalid_parameter_value(
            f"row {row}: 'candidates' must be a list of strings, got {value!r}"
        )
    return [str(c) for c in value]


def _as_frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, Mapping):
        frame = pd.DataFrame([model_input])
    elif isinstance(model_input, Sequence) and not isinstance(model_input, str):
        frame = pd.DataFrame(list(model_input))
    else:
        raise MlflowException.invalid_parameter_value(
            "a request is a DataFrame or a list of {'task', 'input', 'candidates'} rows, "
            f"got {type(model_input).__name__}"
        )
    missing = [c for c in ("task", "input") if c not in frame.columns]
    if missing:
        raise MlflowException.invalid_parameter_value(
            f"request is missing column(s) {missing}; every row needs 'task' and 'input' "
            "(and optionally 'candidates', a list of strings)"
        )
    return frame.reset_index(drop=True)


def _chunks(rows: list[int], candidates: list[list[str]]) -> list[list[int]]:
    """Rows split so that one scoring call reads at most SCORE_PAIRS (prompt, candidate) pairs."""
    chunks: list[list[int]] = []
    current: list[int] = []
    pairs = 0
    for i in rows:
        if current and pairs + len(candidates[i]) > SCORE_PAIRS:
            chunks.append(current)
            current, pairs = [], 0
        current.append(i)
        pairs += len(candidates[i])
    return chunks + [current] if current else chunks


class RecFoundModel(mlflow.pyfunc.PythonModel):
    """The merged model behind ``models:/recfound@champion`` (see the module docstring)."""

    def load_context(self, context) -> None:
        spec, _ = read_spec(context.artifacts["bundle"])
        self.task_kinds: dict[str, str] = dict(spec.task_kinds)
        self.rec = load_bundle(context.artifacts["backbone"], context.artifacts["bundle"])
        if torch.cuda.is_available():
            self.rec.model.to("cuda")

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = _as_frame(model_input)
        max_new_tokens = int((params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        tasks = frame["task"].astype(str).tolist()
        unknown = sorted(set(tasks) - set(self.task_kinds))
        if unknown:
            raise MlflowException.invalid_parameter_value(
                f"unknown task(s) {unknown}; "
                f"this model answers: {', '.join(sorted(self.task_kinds))}"
            )
        texts = frame["input"].astype(str).tolist()
        has_candidates = "candidates" in frame.columns
        candidates = [
            _candidate_list(frame["candidates"].iloc[i], i) if has_candidates else []
            for i in range(len(frame))
        ]
        answers: list[dict[str, Any]] = [{} for _ in range(len(frame))]
        for task in dict.fromkeys(tasks):  # tasks in order of first appearance
            rows = [i for i, t in enumerate(tasks) if t == task]
            if self.task_kinds[task] == "embedding":
                self._embed(task, rows, texts, candidates, answers)
            else:
                self._generate(task, rows, texts, candidates, answers, max_new_tokens)
        out = [
            {
                "task": tasks[i],
                "kind": self.task_kinds[tasks[i]],
                "generation": None,
                "embedding": None,
                "scores": None,
                **answers[i],
            }
            for i in range(len(frame))
        ]
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS), dtype=object)  # None stays None

    def _embed(
        self,
        task: str,
        rows: list[int],
        texts: list[str],
        candidates: list[list[str]],
        answers: list[dict[str, Any]],
    ) -> None:
        vectors = self.rec.embed([texts[i] for i in rows], task).cpu()
        with_candidates = [i for i in rows if candidates[i]]
        flat = [c for i in with_candidates for c in candidates[i]]
        candidate_vectors = self.rec.embed(flat, task).cpu() if flat else None
        start = 0
        for n, i in enumerate(rows):
            answer = {"output_type": "embedding", "embedding": vectors[n].tolist()}
            if candidates[i]:
                block = candidate_vectors[start : start + len(candidates[i])]
                start += len(candidates[i])
                answer["scores"] = (block @ vectors[n]).tolist()
            answers[i] = answer

    def _generate(
        self,
        task: str,
        rows: list[int],
        texts: list[str],
        candidates: list[list[str]],
        answers: list[dict[str, Any]],
        max_new_tokens: int,
    ) -> None:
        for chunk in _chunks([i for i in rows if candidates[i]], candidates):
            values = self.rec.score([texts[i] for i in chunk], [candidates[i] for i in chunk], task)
            for i, scores in zip(chunk, values, strict=True):
                best = max(range(len(scores)), key=scores.__getitem__)
                answers[i] = {
                    "output_type": "scores",
                    "scores": [float(s) for s in scores],
                    "generation": candidates[i][best],
                }
        free = [i for i in rows if not candidates[i]]
        if free:
            generated = self.rec.generate([texts[i] for i in free], task, max_new_tokens)
            for i, text in zip(free, generated, strict=True):
                answers[i] = {"output_type": "generation", "generation": text}
