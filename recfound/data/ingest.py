"""Load the configured source, apply k-core filtering, and read/write the normalized tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recfound import artifacts
from recfound.config import DataConfig
from recfound.data import schema as S
from recfound.data.sources import IngestError, k_core, load_amazon_jsonl, load_ml100k
from recfound.data.sources import load_recbole_atomic as _load_atomic

TABLE_FILES = {
    "interactions": "interactions.parquet",
    "items": "items.parquet",
    "users": "users.parquet",
}
SOURCE_FILE = "source.json"


def load_source(cfg: DataConfig) -> S.Tables:
    """Read the source named in the config into normalized tables (no filtering yet)."""
    rating_range = (cfg.rating_min, cfg.rating_max)
    if cfg.source == "ml-100k":
        return load_ml100k(rating_threshold=cfg.rating_threshold)
    if cfg.source == "recbole_atomic":
        folder = Path(cfg.path or "")
        name = cfg.dataset_name or folder.name
        return _load_atomic(
            folder,
            name,
            rating_range=rating_range,
            rating_threshold=cfg.rating_threshold,
            timestamps=cfg.timestamps,
        )
    if cfg.source == "amazon_jsonl":
        return load_amazon_jsonl(
            cfg.path or "", rating_range=rating_range, rating_threshold=cfg.rating_threshold
        )
    raise IngestError(f"data.source {cfg.source!r} has no loader")  # config forbids this


DUPLICATE_KEY = ["user_id", "item_id", "timestamp"]


def filter_tables(tables: S.Tables, cfg: DataConfig) -> S.Tables:
    """Drop duplicated rows, keep the first ``max_users`` users (by id) and apply k-core
    filtering to interactions.

    A row repeating an earlier row's (user, item, timestamp) is one event read twice: it is
    dropped *before* k-core, so it does not count towards a user's or item's interactions; how
    many were dropped is recorded as ``duplicate_rows`` in ``info.changes`` (validate reports it).
    Items and users tables are kept whole (so validation can still see a reference to an item the
    items table lacks); interactions are sorted by user and time for readable files.
    """
    interactions = tables.interactions
    info = tables.info
    duplicated = interactions.duplicated(DUPLICATE_KEY)
    if duplicated.any():
        interactions = interactions[~duplicated]
        info = dataclasses.replace(
            info, changes={**info.changes, "duplicate_rows": int(duplicated.sum())}
        )
    if cfg.max_users is not None:
        keep = sorted(interactions["user_id"].unique(), key=_natural_key)[: cfg.max_users]
        interactions = interactions[interactions["user_id"].isin(set(keep))]
    interactions = k_core(interactions, cfg.min_user_interactions, cfg.min_item_interactions)
    interactions = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    return S.Tables(
        interactions=interactions.reset_index(drop=True),
        items=tables.items,
        users=tables.users,
        info=info,
    )


def _natural_key(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (0, value)


def write_tables(tables: S.Tables, folder: str | Path) -> None:
    """Write the three tables and ``source.json``; each file is replaced atomically."""
    folder = Path(folder)
    for name, filename in TABLE_FILES.items():
        artifacts.write_parquet(folder / filename, getattr(tables, name))
    artifacts.write_json(folder / SOURCE_FILE, tables.info.to_dict())


def table_digests(folder: str | Path) -> dict[str, str]:
    """SHA-256 of each table file in ``folder`` (validate records them, build-tasks compares)."""
    folder = Path(folder)
    names = [*TABLE_FILES.values(), SOURCE_FILE]
    return {
        name: artifacts.file_digest(folder / name) for name in names if (folder / name).is_file()
    }


def read_tables(folder: str | Path) -> S.Tables:
    """Read what :func:`write_tables` wrote; a missing or damaged file is an ``IngestError``."""
    folder = Path(folder)
    frames: dict[str, pd.DataFrame] = {}
    for name, filename in TABLE_FILES.items():
        path = folder / filename
        if not path.is_file():
            raise IngestError(f"missing {path}: run `recfound ingest` first")
        try:
            frames[name] = pd.read_parquet(path)
        except (OSError, pa.ArrowException) as exc:
            raise IngestError(f"{path} is unreadable (truncated or not parquet): {exc}") from None
    info_path = folder / SOURCE_FILE
    try:
        info = S.SourceInfo.from_dict(json.loads(info_path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise IngestError(f"{info_path} is missing or unreadable: {exc}") from None
    return S.Tables(info=info, **frames)
