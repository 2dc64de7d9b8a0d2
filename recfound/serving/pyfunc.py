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
- generative task with candidates → ``output_type="scores"``, ``scores`` (the log-probability of
  each candidate within the candidate set, as evaluation scores a closed set:
  :meth:`RecModel.choice_scores`) and ``generation`` (the best candidate; for a two-label task
  asked its two labels, the label chosen at the cut evaluation chose on validation records —
  the model's ``decisions`` artifact, :mod:`recfound.serving.decisions`);
- generative task without candidates → ``output_type="generation"``, ``generation`` (greedy text).

A row with ``task: "recommend"`` asks for the top-k items of the model's catalogue instead
(:mod:`recfound.serving.recommend`: ``user_id`` or ``history``, ``k``, ``exclude``, ``filter``,
``path``, ``exclude_seen``; no ``input``) → ``kind="recommend"``,
``output_type="recommendations"``, ``items``, ``titles``, ``scores``, ``path``. The catalogue
(items, identifiers, histories snapshot, ANN index) is the model's ``catalogue`` artifact, written
at registration; a version without one answers recommend rows with a client error.

Rows of one task are answered in one batched call, by that task's *folded* model by default
(:class:`recfound.model.folded.FoldedModels`: TMoLE experts merged into the weights, built once per
task on first use and cached; ``folded: false`` answers through the adapter, as before).

Requests are checked against the ``serving`` settings of params.yaml (rows, characters, candidates,
``max_new_tokens``); a request beyond a limit or with a bad field is a client error (HTTP 400 under
``mlflow models serve``) whose message names the row and the field; a request param the model
does not take (anything but ``max_new_tokens``) is a client error naming it and the params the
model takes (see :class:`IgnoredParamsFilter` for how it is seen under MLflow, which drops such
params before ``predict``); a failure of the model itself
is a server error (HTTP 500). Concurrent requests are independent: the task selection is
context-local and the tokenizer is called under a lock (see :mod:`recfound.model.recmodel`).

The registered model is defined from code (MLflow "models from code"): its ``python_model`` is
:mod:`recfound.serving.model_code`, which builds a :class:`RecFoundModel`; nothing is pickled. The
backbone and the bundle (safetensors) travel as model artifacts, the ``recfound`` package as model
code, and the ``serving`` settings as the model config, so a registered version needs nothing else.

Without MLflow (benchmarks, tests), from a backbone directory and a bundle directory::

    from recfound.serving.pyfunc import RecFoundModel
    folded = RecFoundModel.from_dirs(backbone_dir, bundle_dir)                  # folded (default)
    unfolded = RecFoundModel.from_dirs(backbone_dir, bundle_dir, folded=False)  # through TMoLE
    answers = folded.predict(None, [{"task": "rating_prediction", "input": "...",
                                     "candidates": ["1", "2", "3", "4", "5"]}],
                             params={"max_new_tokens": 8})
    folded.warm_up()            # builds every task's folded model now instead of on first use

``from_dirs`` takes the limits of :class:`recfound.config.ServingConfig` as keywords too
(``max_rows=...``); ``model.rec`` is the adapted :class:`RecModel` (``model.rec.model``: the TMoLE
model, ``model.folded_models.for_task(t).model``: a plain folded ``nn.Module``).
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.pyfunc.context import get_prediction_context
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType, Array

import recfound
from recfound.config import ServingConfig
from recfound.model.bundle import load_bundle, read_spec
from recfound.model.folded import FoldedModels
from recfound.model.recmodel import RecModel
from recfound.serving.decisions import DecisionsError, LabelCut, read_decisions
from recfound.serving.recommend import (
    REQUEST_FIELDS,
    Recommender,
    RecommendLimits,
    RecommendRequestError,
)
from recfound.serving.snapshot import load_serving_catalogue

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("task", "input", "candidates")
OUTPUT_COLUMNS = (
    "task",
    "kind",
    "output_type",
    "generation",
    "embedding",
    "scores",
    "items",
    "titles",
    "path",
)
RECOMMEND = "recommend"  # the request that answers top-k items from the model's catalogue
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
    "faiss-cpu",
)

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "task"),
            # every task row needs it (checked by the model); recommend rows read other fields
            ColSpec("string", "input", required=False),
            # a list of strings, checked by the model: "any" lets rows without candidates
            # (missing, null or NaN once in a DataFrame) through MLflow's schema check
            ColSpec(AnyType(), "candidates", required=False),
            # recommend rows (recfound.serving.recommend), checked by the model field by field
            *[ColSpec(AnyType(), name, required=False) for name in REQUEST_FIELDS],
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
            ColSpec(Array("string"), "items", required=False),
            ColSpec(Array("string"), "titles", required=False),
            ColSpec("string", "path", required=False),
        ]
    ),
    params=ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS)]),
)


PARAM_NAMES = tuple(spec.name for spec in SIGNATURE.params.params)

# MLflow's pyfunc wrapper (PyFuncModel._predict → mlflow.models.utils._enforce_params_schema)
# removes every request param that the signature's ParamSchema does not declare before it calls
# ``predict``, and only logs it on this logger; the filter below reads that record.
MLFLOW_PARAMS_LOGGER = "mlflow.models.utils"
_IGNORED_PARAMS = re.compile(r"Unrecognized params (\[.*?\]) are ignored")
_UNKNOWN_PARAMS_ATTRIBUTE = "recfound_unknown_params"


class IgnoredParamsFilter(logging.Filter):
    """Remembers, on the request's MLflow prediction context, the params MLflow dropped.

    Under ``mlflow models serve`` (and ``mlflow.pyfunc.load_model(...).predict``) MLflow 3
    removes every param the model's ParamSchema does not declare *before* ``predict`` runs, and
    says so only in a warning ("Unrecognized params [...] are ignored for inference") on the
    ``mlflow.models.utils`` logger, in the thread and the prediction context
    (:func:`mlflow.pyfunc.context.get_prediction_context`, one per ``predict`` call) of the
    request. This filter sees that record and notes the names on that context; ``predict`` then
    refuses the request naming them. The record itself is passed on unchanged.

    It depends on MLflow logging the warning: with the ``mlflow`` logger above WARNING
    (``MLFLOW_LOGGING_LEVEL=ERROR``) the record is never made and such params are dropped
    silently again (tests/tracking/test_serve_http.py checks it over HTTP).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        match = _IGNORED_PARAMS.search(record.getMessage())
        context = get_prediction_context()
        if match is not None and context is not None:
            try:
                names = sorted(str(name) for name in ast.literal_eval(match.group(1)))
            except (ValueError, SyntaxError, TypeError):
                names = [match.group(1)]
            setattr(context, _UNKNOWN_PARAMS_ATTRIBUTE, names)
        return True


def watch_ignored_params() -> None:
    """Attach :class:`IgnoredParamsFilter` to MLflow's params logger (once per process)."""
    logger = logging.getLogger(MLFLOW_PARAMS_LOGGER)
    if not any(type(f).__name__ == IgnoredParamsFilter.__name__ for f in logger.filters):
        logger.addFilter(IgnoredParamsFilter())


watch_ignored_params()


def _refuse_unknown_params(params: Mapping[str, Any] | None, limits: ServingConfig) -> None:
    """A client error naming the request params this model does not take: those passed to
    ``predict`` directly, and those MLflow dropped on the way (:class:`IgnoredParamsFilter`)."""
    unknown = {str(name) for name in (params or {}) if str(name) not in PARAM_NAMES}
    context = get_prediction_context()
    unknown |= set(getattr(context, _UNKNOWN_PARAMS_ATTRIBUTE, None) or ())
    if unknown:
        raise client_error(
            f"params: unknown parameter(s) {sorted(unknown)}; this model takes only "
            f"{', '.join(repr(n) for n in PARAM_NAMES)} (an integer, 1 to "
            f"serving.max_new_tokens = {limits.max_new_tokens})"
        )


def pinned_requirements() -> list[str]:
    """``name==version`` of each runtime package as installed here (local labels like +cpu cut)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in RUNTIME_PACKAGES]


def package_dir() -> str:
    """The ``recfound`` package directory, logged as model code."""
    return str(Path(recfound.__file__).resolve().parent)


def model_code_path() -> str:
    """The file MLflow logs as the model's definition ("models from code"), instead of a pickle."""
    return str(Path(__file__).resolve().with_name("model_code.py"))


def client_error(message: str) -> MlflowException:
    """A bad request (HTTP 400 under ``mlflow models serve``)."""
    return MlflowException.invalid_parameter_value(message)


def server_error(message: str) -> MlflowException:
    """A failure of the model, not of the request (HTTP 500 under ``mlflow models serve``)."""
    return MlflowException(message, error_code=INTERNAL_ERROR)


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


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text_field(value: Any, row: int, name: str, limits: ServingConfig) -> str:
    """A row's string field, checked: present, a string, at most ``max_input_chars`` long."""
    if _is_missing(value):
        raise client_error(f"row {row}: {name!r} is null; give the text the task reads")
    if not isinstance(value, str):
        raise client_error(
            f"row {row}: {name!r} must be a string, got {type(value).__name__} {_short(value)}"
        )
    if len(value) > limits.max_input_chars:
        raise client_error(
            f"row {row}: {name!r} has {len(value)} characters; the limit is "
            f"serving.max_input_chars = {limits.max_input_chars}"
        )
    return value


def _candidate_list(value: Any, row: int, limits: ServingConfig | None = None) -> list[str]:
    """A row's candidates; missing (None, NaN, NA) means none. Each must be a string."""
    limits = limits or ServingConfig()
    if _is_missing(value):
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise client_error(
            f"row {row}: 'candidates' must be a list of strings, got {_short(value)}"
        )
    values = list(value)
    if len(values) > limits.max_candidates:
        raise client_error(
            f"row {row}: 'candidates' has {len(values)} entries; the limit is "
            f"serving.max_candidates = {limits.max_candidates}"
        )
    out = []
    for n, candidate in enumerate(values):
        if not isinstance(candidate, str):
            raise client_error(
                f"row {row}: 'candidates' must be a list of strings; entry {n} is "
                f"{type(candidate).__name__} {_short(candidate)}"
            )
        out.append(_text_field(candidate, row, f"candidates[{n}]", limits))
    if out and not any(candidate.strip() for candidate in out):
        raise client_error(
            f"row {row}: every entry of 'candidates' is empty; give at least one non-empty "
            "candidate, or leave 'candidates' out"
        )
    return out


def _check_work(texts: list[str], candidates: list[list[str]], limits: ServingConfig) -> None:
    """The whole request's work within ``serving.max_request_chars``: each row's input is read
    once per candidate (once without candidates), and each candidate once."""
    work = sum(
        len(text) * max(1, len(row)) + sum(map(len, row))
        for text, row in zip(texts, candidates, strict=True)
    )
    if work > limits.max_request_chars:
        raise client_error(
            f"the request makes the model read {work} characters (each row's input once per "
            "candidate, plus the candidates); the limit is serving.max_request_chars = "
            f"{limits.max_request_chars}: send fewer rows or candidates per request"
        )


def _max_new_tokens(params: Mapping[str, Any] | None, limits: ServingConfig) -> int:
    """The request's ``max_new_tokens`` (default 32, capped by the limit), checked."""
    value = (params or {}).get("max_new_tokens")
    if value is None:
        return min(DEFAULT_MAX_NEW_TOKENS, limits.max_new_tokens)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise client_error(
            f"params: 'max_new_tokens' must be an integer, got {type(value).__name__} "
            f"{_short(value)}"
        )
    if not 1 <= int(value) <= limits.max_new_tokens:
        raise client_error(
            f"params: 'max_new_tokens' is {int(value)}; allowed: 1 to "
            f"serving.max_new_tokens = {limits.max_new_tokens}"
        )
    return int(value)


def _as_frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, Mapping):
        frame = pd.DataFrame([model_input])
    elif isinstance(model_input, Sequence) and not isinstance(model_input, str):
        rows = list(model_input)
        if not all(isinstance(r, Mapping) for r in rows):
            raise client_error(
                "a request is a list of {'task', 'input', 'candidates'} rows (objects); got "
                + ", ".join(sorted({type(r).__name__ for r in rows}))
            )
        frame = pd.DataFrame(rows)
    else:
        raise client_error(
            "a request is a DataFrame or a list of {'task', 'input', 'candidates'} rows, "
            f"got {type(model_input).__name__}"
        )
    if frame.empty:
        raise client_error("the request has no rows; send at least one {'task', 'input'} row")
    recommend_only = "task" in frame.columns and (frame["task"] == RECOMMEND).all()
    missing = [c for c in ("task", "input") if c not in frame.columns]
    if recommend_only:
        missing = []
    if missing:
        raise client_error(
            f"request is missing column(s) {missing}; every row needs 'task' and 'input' "
            "(and optionally 'candidates', a list of strings)"
        )
    return frame.reset_index(drop=True)


def recommend_limits(settings: ServingConfig) -> RecommendLimits:
    """The ``recommend`` request's limits and defaults from the serving settings."""
    return RecommendLimits(
        max_k=settings.max_k,
        default_k=settings.default_k,
        max_history=settings.max_history,
        default_path=settings.recommend_path,
        fuse_depth=settings.fuse_depth,
    )


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


@dataclass(frozen=True)
class _TaskRows:
    """One task's rows of a request with the model that answers them; ``texts`` and
    ``candidates`` are the whole request's, indexed by row, and so are the ``answers`` written."""

    rec: RecModel
    task: str
    rows: list[int]
    texts: list[str]
    candidates: list[list[str]]
    cut: LabelCut | None = None

    def embed(self, answers: list[dict[str, Any]]) -> None:
        rec, task, candidates = self.rec, self.task, self.candidates
        vectors = rec.embed([self.texts[i] for i in self.rows], task).cpu()
        with_candidates = [i for i in self.rows if candidates[i]]
        flat = [c for i in with_candidates for c in candidates[i]]
        candidate_vectors = rec.embed(flat, task).cpu() if flat else None
        start = 0
        for n, i in enumerate(self.rows):
            answer = {"output_type": "embedding", "embedding": vectors[n].tolist()}
            if candidates[i]:
                block = candidate_vectors[start : start + len(candidates[i])]
                start += len(candidates[i])
                answer["scores"] = (block @ vectors[n]).tolist()
            answers[i] = answer

    def generate(self, answers: list[dict[str, Any]], max_new_tokens: int) -> None:
        rec, task, texts, candidates = self.rec, self.task, self.texts, self.candidates
        for chunk in _chunks([i for i in self.rows if candidates[i]], candidates):
            values = rec.choice_scores(
                [texts[i] for i in chunk], [candidates[i] for i in chunk], task
            )
            for i, scores in zip(chunk, values, strict=True):
                best = self.cut.choose(candidates[i], scores) if self.cut else None
                if best is None:
                    best = max(range(len(scores)), key=scores.__getitem__)
                answers[i] = {
                    "output_type": "scores",
                    "scores": [float(s) for s in scores],
                    "generation": candidates[i][best],
                }
        free = [i for i in self.rows if not candidates[i]]
        if free:
            generated = rec.generate([texts[i] for i in free], task, max_new_tokens)
            for i, text in zip(free, generated, strict=True):
                answers[i] = {"output_type": "generation", "generation": text}


class RecFoundModel(mlflow.pyfunc.PythonModel):
    """The merged model behind ``models:/recfound@champion`` (see the module docstring)."""

    def load_context(self, context) -> None:
        config = dict(context.model_config or {})
        try:
            settings = ServingConfig.model_validate(config)
        except ValueError as error:
            raise server_error(f"the model's serving config {config} is invalid: {error}") from None
        self.load(
            context.artifacts["backbone"],
            context.artifacts["bundle"],
            settings,
            context.artifacts.get("catalogue"),
            context.artifacts.get("decisions"),
        )

    @classmethod
    def from_dirs(
        cls,
        backbone_dir: str | Path,
        bundle_dir: str | Path,
        catalogue_dir: str | Path | None = None,
        decisions_path: str | Path | None = None,
        **settings: Any,
    ) -> RecFoundModel:
        """The model from a backbone directory and a bundle directory, without MLflow.

        ``catalogue_dir`` (optional) is a serving catalogue
        (:func:`recfound.serving.snapshot.write_serving_catalogue`): with it, the model answers
        ``recommend`` requests. ``decisions_path`` (optional) is a decisions file
        (:mod:`recfound.serving.decisions`): two-label tasks then answer at its cuts.
        ``settings`` are :class:`ServingConfig` fields: ``folded`` (default True) and the limits.
        """
        model = cls()
        model.load(
            backbone_dir, bundle_dir, ServingConfig(**settings), catalogue_dir, decisions_path
        )
        return model

    def load(
        self,
        backbone_dir: str | Path,
        bundle_dir: str | Path,
        settings: ServingConfig,
        catalogue_dir: str | Path | None = None,
        decisions_path: str | Path | None = None,
    ) -> None:
        spec, _ = read_spec(bundle_dir)
        self.task_kinds: dict[str, str] = dict(spec.task_kinds)
        self.settings = settings
        try:
            self.cuts = read_decisions(decisions_path)
        except DecisionsError as error:
            raise server_error(f"the model's decisions artifact is unusable: {error}") from None
        self.rec = load_bundle(backbone_dir, bundle_dir)
        if torch.cuda.is_available():
            self.rec.model.to("cuda")
        self.folded_models = FoldedModels(self.rec)
        self.recommender: Recommender | None = None
        if catalogue_dir is not None and Path(catalogue_dir).is_dir():
            catalogue, index = load_serving_catalogue(catalogue_dir)
            self.recommender = Recommender(
                catalogue,
                index,
                self.model_for,
                self.task_kinds,
                recommend_limits(settings),
            )

    def model_for(self, task: str) -> RecModel:
        """The RecModel that answers ``task``: its folded model, or the adapted one (unfolded)."""
        return self.folded_models.for_task(task) if self.settings.folded else self.rec

    def warm_up(self) -> None:
        """Build every task's folded model now (otherwise each is built on its first request)."""
        if self.settings.folded:
            for task in self.task_kinds:
                self.folded_models.for_task(task)

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        limits = self.settings
        frame = _as_frame(model_input)
        if len(frame) > limits.max_rows:
            raise client_error(
                f"the request has {len(frame)} rows; the limit is "
                f"serving.max_rows = {limits.max_rows}: split it into smaller requests"
            )
        _refuse_unknown_params(params, limits)
        max_new_tokens = _max_new_tokens(params, limits)
        answered = [*sorted(self.task_kinds), RECOMMEND]
        tasks = []
        for i, task in enumerate(frame["task"].tolist()):
            if _is_missing(task) or not isinstance(task, str):
                raise client_error(
                    f"row {i}: 'task' must be a task name, got {_short(task)}; "
                    f"this model answers: {', '.join(answered)}"
                )
            tasks.append(task)
        unknown = sorted(set(tasks) - set(self.task_kinds) - {RECOMMEND})
        if unknown:
            raise client_error(
                f"unknown task(s) {unknown}; this model answers: {', '.join(answered)}"
            )
        recommend_rows = [i for i, t in enumerate(tasks) if t == RECOMMEND]
        requests = self._recommend_requests(frame, recommend_rows)
        inputs = frame["input"].tolist() if "input" in frame.columns else [None] * len(frame)
        texts = [
            "" if t == RECOMMEND else _text_field(v, i, "input", limits)
            for i, (t, v) in enumerate(zip(tasks, inputs, strict=True))
        ]
        has_candidates = "candidates" in frame.columns
        candidates = [
            _candidate_list(frame["candidates"].iloc[i], i, limits)
            if has_candidates and tasks[i] != RECOMMEND
            else []
            for i in range(len(frame))
        ]
        _check_work(texts, candidates, limits)
        answers: list[dict[str, Any]] = [{} for _ in range(len(frame))]
        if requests:
            self._recommend(recommend_rows, requests, answers)
        for task in dict.fromkeys(t for t in tasks if t != RECOMMEND):  # in order of appearance
            rows = [i for i, t in enumerate(tasks) if t == task]
            try:
                task_rows = _TaskRows(
                    self.model_for(task), task, rows, texts, candidates, self.cuts.get(task)
                )
                if self.task_kinds[task] == "embedding":
                    task_rows.embed(answers)
                else:
                    task_rows.generate(answers, max_new_tokens)
            except MlflowException:
                raise
            except Exception as error:  # the model failed, not the request: a server error
                log.exception("answering %d row(s) of task %s failed", len(rows), task)
                raise server_error(
                    f"the model failed on {len(rows)} row(s) of task {task!r} "
                    f"({type(error).__name__}: {error}); this is a server-side error, "
                    "the request was valid"
                ) from error
        out = [
            {
                "task": tasks[i],
                "kind": self.task_kinds.get(tasks[i], RECOMMEND),
                "generation": None,
                "embedding": None,
                "scores": None,
                "items": None,
                "titles": None,
                "path": None,
                **answers[i],
            }
            for i in range(len(frame))
        ]
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS), dtype=object)  # None stays None

    def _recommend_requests(self, frame: pd.DataFrame, rows: list[int]) -> list[Any]:
        """The recommend rows, each checked (a bad field is a client error naming the row)."""
        if not rows:
            return []
        if self.recommender is None:
            raise client_error(
                f"row {rows[0]}: this model version carries no catalogue, so it cannot answer "
                "'recommend' (it was registered before catalogues were); register it again"
            )
        present = [c for c in REQUEST_FIELDS if c in frame.columns]
        out = []
        for i in rows:
            values = {c: frame[c].iloc[i] for c in present}
            try:
                out.append(self.recommender.parse(values))
            except RecommendRequestError as error:
                raise client_error(f"row {i}: {error}") from None
        return out

    def _recommend(self, rows: list[int], requests: list[Any], answers: list[dict]) -> None:
        assert self.recommender is not None
        try:
            results = self.recommender.recommend(requests)
        except Exception as error:  # the request was checked: a failure here is the model's
            log.exception("answering %d recommend row(s) failed", len(rows))
            raise server_error(
                f"the model failed on {len(rows)} recommend row(s) ({type(error).__name__}: "
                f"{error}); this is a server-side error, the request was valid"
            ) from error
        for i, result in zip(rows, results, strict=True):
            answers[i] = {"output_type": "recommendations", **result.to_dict()}
