"""Stage `ingest`: source → normalized parquet tables under ``paths.interim``."""

from __future__ import annotations

import logging

from recfound import artifacts
from recfound.config import Config
from recfound.data import schema as S
from recfound.data.ingest import filter_tables, load_source, write_tables

log = logging.getLogger(__name__)


def run_ingest(cfg: Config) -> S.Tables:
    """Load the configured source, filter it, and write the tables atomically."""
    raw = load_source(cfg.data)
    log.info(
        "read %s: %d interactions, %d items, %d users",
        raw.info.name,
        len(raw.interactions),
        len(raw.items),
        len(raw.users),
    )
    tables = filter_tables(raw, cfg.data)
    with artifacts.staged_directory(cfg.paths.interim) as staging:  # whole: no stale file stays
        write_tables(tables, staging)
    log.info(
        "wrote %s: %d interactions of %d users after %d-core filtering; signals: %s",
        cfg.paths.interim,
        len(tables.interactions),
        tables.interactions["user_id"].nunique(),
        cfg.data.min_user_interactions,
        ", ".join(tables.info.signals),
    )
    return tables
