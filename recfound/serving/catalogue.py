"""The catalogue a registered model recommends from: items, identifiers, a snapshot of histories.

A :class:`Catalogue` is built from the task data (``paths.tasks``: ``items.parquet`` with each
item's text and identifier token, ``interactions.parquet`` with every warm interaction and its
leave-one-out split) and, for titles and attributes, the normalized item table
(``paths.interim/items.parquet``, optional):

- ``items``: one row per catalogue item in the order of ``items.parquet`` (the order evaluation
  ranks in): ``item_id``, ``title``, ``token`` (``''`` for an item without an identifier: cold,
  or met only in validation/test), ``text`` (what the item's embedding reads), ``genres``
  (a list), ``year``;
- ``histories``: user → the items they met, oldest first, in the snapshot's splits (train and
  valid by default: everything the model may know about a user when it recommends their next,
  i.e. test, item);
- the prompt settings (``item_noun``, ``sequence_length``) the task builders wrote prompts with,
  so a request's prompt is the one the model was trained and evaluated on.

It is saved as a folder (``items.parquet``, ``histories.parquet``, ``catalogue.json``) and travels
with the registered model as the ``catalogue`` artifact, with the ANN index beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from recfound import artifacts
from recfound.data.tasks.base import item_noun_of
from recfound.data.tasks.sequential_recommendation import next_item_prompt
from recfound.data.tasks.user2item import user_query
from recfound.errors import UserInputError
from recfound.layout import ITEMS_FILE, MANIFEST_FILE, SPLIT_INTERACTIONS_FILE

CATALOGUE_ITEMS_FILE = "items.parquet"
HISTORIES_FILE = "histories.parquet"
CATALOGUE_FILE = "catalogue.json"
SPLIT_ORDER = ("train", "valid", "test")
GENERATIVE_TASK = "sequential_recommendation"  # identifier logits after its prompt
EMBEDDING_TASK = "user2item"  # the user query against the item texts
ITEM_COLUMNS = ("item_id", "title", "token", "text", "genres", "year")


class CatalogueError(UserInputError):
    """The task data a catalogue is built from is missing or inconsistent."""


@dataclass
class Catalogue:
    """Items, their identifiers and attributes, and a snapshot of user histories."""

    items: pd.DataFrame
    histories: dict[str, tuple[str, ...]]
    item_noun: str = "item"
    sequence_length: int = 50
    snapshot_splits: tuple[str, ...] = ("train", "valid")
    generative_task: str = GENERATIVE_TASK
    embedding_task: str = EMBEDDING_TASK
    info: dict = field(default_factory=dict)

    # ---- lookups -----------------------------------------------------------------------------

    @cached_property
    def item_ids(self) -> list[str]:
        return self.items["item_id"].astype(str).tolist()

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    @cached_property
    def tokens(self) -> list[str]:
        """Each item's identifier token, ``''`` for none (catalogue order)."""
        return self.items["token"].fillna("").astype(str).tolist()

    @cached_property
    def titles(self) -> list[str]:
        return self.items["title"].astype(str).tolist()

    @cached_property
    def texts(self) -> list[str]:
        return self.items["text"].astype(str).tolist()

    @cached_property
    def has_identifier(self) -> np.ndarray:
        return np.array([bool(t) for t in self.tokens], dtype=bool)

    @cached_property
    def _token_of(self) -> dict[str, str]:
        return {i: t for i, t in zip(self.item_ids, self.tokens, strict=True) if t}

    def __len__(self) -> int:
        return len(self.items)

    # ---- prompts -----------------------------------------------------------------------------

    def recent(self, history: Sequence[str]) -> list[str]:
        """The last ``sequence_length`` items of a history: what a prompt shows."""
        return list(history[-self.sequence_length :]) if self.sequence_length else []

    def sequence_text(self, history: Sequence[str]) -> str:
        """The recent history as identifier tokens (items without one are left out, as the task
        builders leave them out)."""
        return " ".join(self._token_of[i] for i in self.recent(history) if i in self._token_of)

    def next_item_prompt(self, history: Sequence[str]) -> str:
        """The ``sequential_recommendation`` prompt of a user with this history."""
        return next_item_prompt(self.item_noun, self.sequence_text(history))

    def user_query(self, history: Sequence[str]) -> str:
        """The ``user2item`` query of a user with this history."""
        return user_query(self.item_noun, self.sequence_text(history))

    # ---- attributes --------------------------------------------------------------------------

    @cached_property
    def genre_sets(self) -> list[frozenset[str]]:
        return [frozenset(str(g).lower() for g in gs) for gs in self.items["genres"]]

    @cached_property
    def years(self) -> np.ndarray:
        return pd.to_numeric(self.items["year"], errors="coerce").to_numpy(dtype=float)

    def matching(self, attribute: str, values: Sequence[str | int]) -> np.ndarray:
        """A boolean mask of the items whose ``attribute`` is one of ``values``
        (``genre``: any of the item's genres, case-insensitive; ``year``: the release year)."""
        if attribute == "genre":
            wanted = {str(v).lower() for v in values}
            return np.array([bool(gs & wanted) for gs in self.genre_sets], dtype=bool)
        if attribute == "year":
            return np.isin(self.years, [float(v) for v in values])
        raise KeyError(attribute)

    # ---- persistence -------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        items = self.items[list(ITEM_COLUMNS)].copy()
        items["genres"] = items["genres"].map(list)
        artifacts.write_parquet(directory / CATALOGUE_ITEMS_FILE, items)
        users, item_ids = [], []
        for user, history in self.histories.items():
            users += [user] * len(history)
            item_ids += list(history)
        artifacts.write_parquet(
            directory / HISTORIES_FILE, pd.DataFrame({"user_id": users, "item_id": item_ids})
        )
        artifacts.write_json(
            directory / CATALOGUE_FILE,
            {
                "item_noun": self.item_noun,
                "sequence_length": self.sequence_length,
                "snapshot_splits": list(self.snapshot_splits),
                "generative_task": self.generative_task,
                "embedding_task": self.embedding_task,
                "items": len(self.items),
                "items_with_identifier": int(self.has_identifier.sum()),
                "users": len(self.histories),
                "interactions": len(item_ids),
                **self.info,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Catalogue:
        directory = Path(directory)
        meta = json.loads((directory / CATALOGUE_FILE).read_text())
        items = pd.read_parquet(directory / CATALOGUE_ITEMS_FILE)
        items["genres"] = items["genres"].map(lambda g: tuple(str(x) for x in g))
        frame = pd.read_parquet(directory / HISTORIES_FILE)
        return cls(
            items=items,
            histories=_histories(frame),
            item_noun=meta["item_noun"],
            sequence_length=int(meta["sequence_length"]),
            snapshot_splits=tuple(meta["snapshot_splits"]),
            generative_task=meta["generative_task"],
            embedding_task=meta["embedding_task"],
        )


def _histories(frame: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """User → item ids in the frame's row order (which is chronological in our files)."""
    users = frame["user_id"].astype(str).to_numpy()
    items = frame["item_id"].astype(str).to_numpy()
    out: dict[str, list[str]] = {}
    for user, item in zip(users, items, strict=True):
        out.setdefault(user, []).append(item)
    return {u: tuple(h) for u, h in out.items()}


def _titles_and_attributes(items: pd.DataFrame, interim: Path | None) -> pd.DataFrame:
    """Title ("Toy Story (1995)"), genres and year of each item, from the normalized items table
    when there is one; else the title is read from the item's text (after its identifier)."""
    out = pd.DataFrame({"item_id": items["item_id"].astype(str)})
    table = interim / ITEMS_FILE if interim is not None else None
    if table is not None and table.is_file():
        raw = pd.read_parquet(table).assign(item_id=lambda f: f["item_id"].astype(str))
        raw = raw.drop_duplicates("item_id").set_index("item_id").reindex(out["item_id"])
        years = pd.to_numeric(raw["year"], errors="coerce")
        titles = raw["title"].fillna("").astype(str).str.strip()
        out["title"] = [
            f"{t} ({int(y)})" if not np.isnan(y) else t
            for t, y in zip(titles, years.to_numpy(dtype=float), strict=True)
        ]
        out["genres"] = [
            tuple(g for g in str(c).split("|") if g and g != "nan")
            for c in raw["categories"].fillna("")
        ]
        out["year"] = years.astype("Int64").to_numpy()
        return out
    texts = items["text"].astype(str)
    tokens = items["token"].fillna("").astype(str)
    out["title"] = [
        text[len(tok) :].strip().split(" — ")[0] if tok and text.startswith(tok) else text
        for text, tok in zip(texts, tokens, strict=True)
    ]
    out["genres"] = [() for _ in range(len(out))]
    out["year"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out


def build_catalogue(
    tasks_dir: str | Path,
    interim_dir: str | Path | None,
    sequence_length: int,
    snapshot_splits: Sequence[str] = ("train", "valid"),
) -> Catalogue:
    """The catalogue of the task data in ``tasks_dir`` with the histories of ``snapshot_splits``
    (train + valid: what the model may know before a user's test item; train alone: before the
    validation item)."""
    tasks_dir = Path(tasks_dir)
    for name in (ITEMS_FILE, SPLIT_INTERACTIONS_FILE):
        if not (tasks_dir / name).is_file():
            raise CatalogueError(
                f"{tasks_dir / name} is missing: run `recfound build-tasks` first (the catalogue "
                "needs the items with their identifiers and the split interactions)"
            )
    unknown = sorted(set(snapshot_splits) - set(SPLIT_ORDER))
    if unknown:
        raise CatalogueError(f"unknown split(s) {unknown}; allowed: {', '.join(SPLIT_ORDER)}")
    items = pd.read_parquet(tasks_dir / ITEMS_FILE)
    items = items.assign(
        item_id=items["item_id"].astype(str), token=items["token"].fillna("").astype(str)
    )
    attributes = _titles_and_attributes(items, Path(interim_dir) if interim_dir else None)
    table = items[["item_id", "token", "text"]].merge(attributes, on="item_id", how="left")
    interactions = pd.read_parquet(tasks_dir / SPLIT_INTERACTIONS_FILE)
    snapshot = interactions[interactions["split"].astype(str).isin(list(snapshot_splits))]
    manifest_path = tasks_dir / MANIFEST_FILE
    source = json.loads(manifest_path.read_text()).get("source") if manifest_path.is_file() else ""
    return Catalogue(
        items=table[list(ITEM_COLUMNS)].reset_index(drop=True),
        histories=_histories(snapshot),
        item_noun=item_noun_of(source or ""),
        sequence_length=sequence_length,
        snapshot_splits=tuple(snapshot_splits),
        info={"source": source or ""},
    )


def user_targets(tasks_dir: str | Path, split: str) -> dict[str, str]:
    """User → their ``split`` (valid or test) item: what a recommendation list is judged by."""
    frame = pd.read_parquet(Path(tasks_dir) / SPLIT_INTERACTIONS_FILE)
    held = frame[frame["split"].astype(str) == split]
    return dict(zip(held["user_id"].astype(str), held["item_id"].astype(str), strict=True))
