"""The serving catalogue a registered model carries: the :class:`Catalogue` and its ANN index.

Built at registration (and by the batch ``recommend`` stage, the same way): the catalogue from the
task data, every item's text embedded with the embedding task's weights (``user2item``: the
documents its queries were trained against; items without an identifier are embedded too, so
they are recommendable through the embedding path) and the faiss index over those vectors. One
folder::

    <dir>/catalogue/   items.parquet, histories.parquet, catalogue.json
    <dir>/index/       index.faiss, embeddings.npy, index.json   (when the model has user2item)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recfound.config import ServingConfig
from recfound.model.recmodel import RecModel
from recfound.serving.ann import IndexSettings, ItemIndex
from recfound.serving.catalogue import Catalogue, build_catalogue

log = logging.getLogger(__name__)

CATALOGUE_DIR = "catalogue"
INDEX_DIR = "index"


def index_settings(serving: ServingConfig, seed: int = 0) -> IndexSettings:
    return IndexSettings(
        kind=serving.index_kind,
        exact_below=serving.index_exact_below,
        nprobe=serving.index_nprobe,
        seed=seed,
    )


def catalogue_embeddings(rec: RecModel, catalogue: Catalogue, batch_size: int = 64) -> np.ndarray:
    """``(items, hidden)`` float32: every item's text embedded by the embedding task."""
    vectors = rec.embed(catalogue.texts, catalogue.embedding_task, batch_size=batch_size)
    return vectors.float().cpu().numpy()


def build_index(
    rec: RecModel, task_kinds: Mapping[str, str], catalogue: Catalogue, settings: IndexSettings
) -> ItemIndex | None:
    """The catalogue's index, or None when the model has no embedding task to embed with."""
    if task_kinds.get(catalogue.embedding_task) != "embedding":
        log.warning(
            "the model has no %s task: the catalogue gets no index (embedding path unavailable)",
            catalogue.embedding_task,
        )
        return None
    return ItemIndex.build(catalogue_embeddings(rec, catalogue), settings)


def write_serving_catalogue(
    rec: RecModel,
    task_kinds: Mapping[str, str],
    tasks_dir: str | Path,
    interim_dir: str | Path | None,
    sequence_length: int,
    serving: ServingConfig,
    out_dir: str | Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the catalogue (train + valid histories) and its index into ``out_dir``; a summary."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    catalogue = build_catalogue(tasks_dir, interim_dir, sequence_length)
    catalogue.save(out_dir / CATALOGUE_DIR)
    index = build_index(rec, task_kinds, catalogue, index_settings(serving, seed))
    if index is not None:
        index.save(out_dir / INDEX_DIR)
    summary = {
        "items": len(catalogue),
        "items_with_identifier": int(catalogue.has_identifier.sum()),
        "users": len(catalogue.histories),
        "index": index.kind if index is not None else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    log.info("serving catalogue: %s", summary)
    return summary


def load_serving_catalogue(directory: str | Path) -> tuple[Catalogue, ItemIndex | None]:
    directory = Path(directory)
    catalogue = Catalogue.load(directory / CATALOGUE_DIR)
    index_dir = directory / INDEX_DIR
    index = ItemIndex.load(index_dir) if index_dir.is_dir() else None
    return catalogue, index
