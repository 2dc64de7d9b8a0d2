"""Top-k recommendations over the whole catalogue: the ``recommend`` request.

A request names a user of the catalogue's snapshot (``user_id``) or gives a history (item ids,
oldest first), ``k``, optional extra exclusions (``exclude``), an attribute filter (``filter``:
``{"genre": "Comedy"}``, ``{"genre": ["Comedy", "Drama"], "year": [1995, 1996]}``) and the path:

- ``generative``: the ``sequential_recommendation`` prompt of the user's recent history, then the
  log-probability of every item's identifier token after it (:meth:`RecModel.catalogue_scores`):
  exactly how evaluation ranks the catalogue. Items without an identifier cannot be generated.
- ``embedding``: the ``user2item`` query embedding against the catalogue's item embeddings
  (:class:`recfound.serving.ann.ItemIndex`, exact below a size threshold, IVF above). Every item
  with a text is reachable, those without an identifier (new, cold) included.
- ``fused``: reciprocal-rank fusion of the two (Cormack et al., 2009): an item's score is
  ``1/(60 + generative rank) + 1/(60 + embedding rank)`` over each path's top
  ``fuse_depth`` items (an item absent from one list gets nothing from it). Ranks, not scores, are
  fused: log-probabilities and cosines live on different scales, and RRF needs no weight fitted.
  Whether it helps is measured on validation by the ``recommend`` stage
  (``reports/recommend.json``).

Seen items (the whole history, as the full-ranking evaluation excludes every item the user met
before the target) are excluded unless ``exclude_seen`` is false; ``exclude`` adds more. The answer
is up to ``k`` items (fewer only when the filter and exclusions leave fewer), best first, with
their ids, titles and scores (the path's own: log-probability, cosine or the fused RRF score).

:class:`Recommender` keeps no per-call state: concurrent calls share only read-only arrays, the
faiss index (read-only search) and the models (whose task selection is per call).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recfound.errors import UserInputError
from recfound.model.recmodel import RecModel, top_k_items
from recfound.serving.ann import ItemIndex
from recfound.serving.catalogue import Catalogue

PATHS = ("generative", "embedding", "fused")
RRF_CONSTANT = 60
FILTER_ATTRIBUTES = ("genre", "year")
REQUEST_FIELDS = ("user_id", "history", "k", "exclude", "filter", "path", "exclude_seen")


@dataclass(frozen=True)
class RecommendLimits:
    """Limits and defaults of a request (``serving.*`` in params.yaml)."""

    max_k: int = 100
    default_k: int = 10
    max_history: int = 2000  # items in ``history`` and in ``exclude``
    default_path: str = "generative"
    fuse_depth: int = 200


class RecommendRequestError(UserInputError):
    """A bad ``recommend`` request; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RecommendRequest:
    """One validated request (see the module docstring)."""

    history: tuple[str, ...]
    k: int
    path: str
    exclude: tuple[str, ...] = ()
    filter: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    exclude_seen: bool = True
    user_id: str | None = None


@dataclass(frozen=True)
class Recommendation:
    """The answer to one request, best first."""

    item_ids: list[str]
    titles: list[str]
    scores: list[float]
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.item_ids,
            "titles": self.titles,
            "scores": self.scores,
            "path": self.path,
        }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _short(value: Any) -> str:
    if isinstance(value, np.generic):  # a DataFrame cell: say 1000, not np.int64(1000)
        value = value.item()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _id_list(value: Any, name: str, catalogue: Catalogue, limit: int) -> tuple[str, ...]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise RecommendRequestError(
            name, f"{name!r} must be a list of item ids, got {_short(value)}"
        )
    if len(value) > limit:
        raise RecommendRequestError(
            name,
            f"{name!r} has {len(value)} items; the limit is serving.max_history = {limit}",
        )
    out = []
    for n, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
            raise RecommendRequestError(
                name, f"{name}[{n}] must be an item id (a string), got {_short(item)}"
            )
        item = str(item)
        if item not in catalogue.item_index:
            raise RecommendRequestError(
                name, f"{name}[{n}] = {item!r} is not an item of the model's catalogue"
            )
        out.append(item)
    return tuple(out)


def _filter(value: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if _missing(value):
        return ()
    if not isinstance(value, Mapping):
        raise RecommendRequestError(
            "filter",
            f"'filter' must be an object like {{'genre': 'Comedy'}}, got {_short(value)}",
        )
    out = []
    for attribute, wanted in value.items():
        if attribute not in FILTER_ATTRIBUTES:
            raise RecommendRequestError(
                "filter",
                f"'filter' has unknown attribute {attribute!r}; allowed: "
                + ", ".join(FILTER_ATTRIBUTES),
            )
        values = list(wanted) if isinstance(wanted, (list, tuple, np.ndarray)) else [wanted]
        if not values:
            raise RecommendRequestError("filter", f"'filter.{attribute}' is empty")
        for v in values:
            ok = isinstance(v, str) if attribute == "genre" else _is_int(v)
            if not ok:
                kind = "a genre name" if attribute == "genre" else "a year (integer)"
                raise RecommendRequestError(
                    "filter", f"'filter.{attribute}' must be {kind} or a list of them, got {v!r}"
                )
        out.append((attribute, tuple(int(v) if attribute == "year" else v for v in values)))
    return tuple(out)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, (int, np.integer))


def parse_request(
    row: Mapping[str, Any], catalogue: Catalogue, limits: RecommendLimits, paths: Sequence[str]
) -> RecommendRequest:
    """A request from a mapping (one served row, or a Python call), checked field by field;
    :class:`RecommendRequestError` names the field that is wrong."""
    user_id, history = row.get("user_id"), row.get("history")
    if isinstance(history, np.ndarray):
        history = history.tolist()
    has_user, has_history = not _missing(user_id), not _missing(history)
    if has_user == has_history:
        raise RecommendRequestError(
            "user_id",
            "give either 'user_id' (a user of the model's catalogue snapshot) or 'history' "
            "(item ids, oldest first), not " + ("both" if has_user else "neither"),
        )
    if has_user:
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int, np.integer)):
            raise RecommendRequestError(
                "user_id", f"'user_id' must be a string, got {_short(user_id)}"
            )
        user_id = str(user_id)
        if user_id not in catalogue.histories:
            raise RecommendRequestError(
                "user_id",
                f"'user_id' {user_id!r} is not in the model's catalogue snapshot "
                f"({len(catalogue.histories)} users); send the user's 'history' instead",
            )
        items = catalogue.histories[user_id]
    else:
        items = _id_list(history, "history", catalogue, limits.max_history)
    k = row.get("k")
    if _missing(k):
        k = limits.default_k
    if not _is_int(k) or not 1 <= int(k) <= limits.max_k:
        raise RecommendRequestError(
            "k",
            f"'k' is {_short(k)}; allowed: an integer from 1 to serving.max_k = {limits.max_k}",
        )
    path = row.get("path")
    path = limits.default_path if _missing(path) else path
    if path not in PATHS:
        raise RecommendRequestError(
            "path", f"'path' is {_short(path)}; allowed: {', '.join(PATHS)}"
        )
    if path not in paths:
        raise RecommendRequestError(
            "path",
            f"'path' {path!r} is not available for this model (it needs the tasks "
            f"{catalogue.generative_task} and {catalogue.embedding_task} as the path uses them); "
            f"available: {', '.join(paths) or 'none'}",
        )
    exclude = row.get("exclude")
    if not _missing(exclude):
        exclude = _id_list(exclude, "exclude", catalogue, limits.max_history)
    exclude_seen = row.get("exclude_seen")
    exclude_seen = True if _missing(exclude_seen) else exclude_seen
    if not isinstance(exclude_seen, (bool, np.bool_)):
        raise RecommendRequestError(
            "exclude_seen", f"'exclude_seen' must be true or false, got {_short(exclude_seen)}"
        )
    return RecommendRequest(
        history=tuple(items),
        k=int(k),
        path=str(path),
        exclude=() if _missing(exclude) else exclude,
        filter=_filter(row.get("filter")),
        exclude_seen=bool(exclude_seen),
        user_id=user_id if has_user else None,
    )


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], constant: int = RRF_CONSTANT
) -> list[tuple[int, float]]:
    """``(item, score)`` best first: each item's sum over rankings of ``1 / (constant + rank)``
    (rank from 1). Ties keep the order of first appearance across the rankings, read in turn."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (constant + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))


class Recommender:
    """Answers :class:`RecommendRequest` s from a catalogue, its index and the model.

    ``model_for(task)`` returns the :class:`RecModel` that answers a task (the pyfunc's folded
    model, or the adapted model itself); ``task_kinds`` says which tasks the model has.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        index: ItemIndex | None,
        model_for: Callable[[str], RecModel],
        task_kinds: Mapping[str, str],
        limits: RecommendLimits | None = None,
        batch_size: int = 32,
    ) -> None:
        self.catalogue = catalogue
        self.index = index
        self.model_for = model_for
        self.limits = limits or RecommendLimits()
        self.batch_size = batch_size
        generative = task_kinds.get(catalogue.generative_task) == "generative"
        embedding = task_kinds.get(catalogue.embedding_task) == "embedding" and index is not None
        if index is not None and len(index) != len(catalogue):
            raise ValueError(f"the index has {len(index)} items, the catalogue {len(catalogue)}")
        self.paths: tuple[str, ...] = tuple(
            p
            for p, ok in zip(PATHS, (generative, embedding, generative and embedding), strict=True)
            if ok
        )

    def parse(self, row: Mapping[str, Any]) -> RecommendRequest:
        return parse_request(row, self.catalogue, self.limits, self.paths)

    def recommend(
        self, requests: Sequence[RecommendRequest | Mapping[str, Any]]
    ) -> list[Recommendation]:
        """One :class:`Recommendation` per request, in order (mappings are parsed first)."""
        parsed = [r if isinstance(r, RecommendRequest) else self.parse(r) for r in requests]
        excluded = [self._excluded(r) for r in parsed]
        allowed = [self._allowed(r) for r in parsed]
        need_gen = [i for i, r in enumerate(parsed) if r.path in ("generative", "fused")]
        need_emb = [i for i, r in enumerate(parsed) if r.path in ("embedding", "fused")]
        generative = self._generative_scores([parsed[i] for i in need_gen])
        queries = self._queries([parsed[i] for i in need_emb])
        gen_row = {i: n for n, i in enumerate(need_gen)}
        emb_row = {i: n for n, i in enumerate(need_emb)}
        out = []
        for i, request in enumerate(parsed):
            depth = request.k if request.path != "fused" else max(request.k, self.limits.fuse_depth)
            gen = emb = None
            if i in gen_row:
                gen = self._top_generative(generative[gen_row[i]], excluded[i], allowed[i], depth)
            if i in emb_row:
                emb = self._top_embedding(queries[emb_row[i]], excluded[i], allowed[i], depth)
            if request.path == "generative":
                ranked = gen
            elif request.path == "embedding":
                ranked = emb
            else:
                fused = reciprocal_rank_fusion([[r for r, _ in gen], [r for r, _ in emb]])
                ranked = fused[: request.k]
            ranked = ranked[: request.k]
            out.append(
                Recommendation(
                    item_ids=[self.catalogue.item_ids[r] for r, _ in ranked],
                    titles=[self.catalogue.titles[r] for r, _ in ranked],
                    scores=[float(s) for _, s in ranked],
                    path=request.path,
                )
            )
        return out

    # ---- pieces -----------------------------------------------------------------------------

    def _excluded(self, request: RecommendRequest) -> np.ndarray:
        index = self.catalogue.item_index
        items = list(request.exclude)
        if request.exclude_seen:
            items += list(request.history)
        return np.array(sorted({index[i] for i in items}), dtype=np.int64)

    def _allowed(self, request: RecommendRequest) -> np.ndarray | None:
        """A mask of the items the filter allows (None: every item)."""
        mask = None
        for attribute, values in request.filter:
            part = self.catalogue.matching(attribute, values)
            mask = part if mask is None else mask & part
        return mask

    def _generative_scores(self, requests: Sequence[RecommendRequest]) -> torch.Tensor | None:
        if not requests:
            return None
        task = self.catalogue.generative_task
        prompts = [self.catalogue.next_item_prompt(r.history) for r in requests]
        model = self.model_for(task)
        return model.catalogue_scores(prompts, self.catalogue.tokens, task, self.batch_size)

    def _queries(self, requests: Sequence[RecommendRequest]) -> np.ndarray | None:
        if not requests:
            return None
        task = self.catalogue.embedding_task
        texts = [self.catalogue.user_query(r.history) for r in requests]
        vectors = self.model_for(task).embed(texts, task, batch_size=self.batch_size)
        return vectors.float().cpu().numpy()

    def _top_generative(
        self, scores: torch.Tensor, excluded: np.ndarray, allowed: np.ndarray | None, k: int
    ) -> list[tuple[int, float]]:
        row = scores.unsqueeze(0)
        if allowed is not None:
            row = row.masked_fill(~torch.as_tensor(allowed).unsqueeze(0), float("-inf"))
        top = top_k_items(row, [excluded.tolist()], k)[0].tolist()
        return [(r, float(scores[r])) for r in top if r >= 0]

    def _top_embedding(
        self, query: np.ndarray, excluded: np.ndarray, allowed: np.ndarray | None, k: int
    ) -> list[tuple[int, float]]:
        assert self.index is not None  # only requested on paths that have it
        blocked = set(excluded.tolist())
        if allowed is None:
            scores, rows = self.index.search(query[None, :], k + len(blocked))
            found = [
                (int(r), float(s))
                for r, s in zip(rows[0], scores[0], strict=True)
                if r >= 0 and int(r) not in blocked
            ]
            if len(found) >= min(k, len(self.index) - len(blocked)):
                return found[:k]
            candidates = np.arange(len(self.index))  # the approximate search fell short
        else:
            candidates = np.flatnonzero(allowed)
        if len(blocked):
            candidates = candidates[~np.isin(candidates, excluded)]
        if not len(candidates):
            return []
        exact = self.index.exact_scores(query, candidates)
        take = min(k, len(candidates))
        best = np.argpartition(-exact, take - 1)[:take]
        best = best[np.lexsort((candidates[best], -exact[best]))]
        return [(int(candidates[b]), float(exact[b])) for b in best]
