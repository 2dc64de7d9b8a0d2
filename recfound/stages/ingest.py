"""Stage `ingest`: source → normalized parquet tables under ``paths.interim``.

Control tokens in the source's text are escaped and oversized fields cut
(:mod:`recfound.data.clean`), duplicated rows dropped before k-core; ``source.json`` counts each
change and the validate stage reports them.
"""

from __future__ import annotations

import logging

from recfound import artifacts
from recfound.config import Config
from recfound.data import schema as S
from recfound.data.clean import clean_text_fields
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
    tables = filter_tables(clean_text_fields(raw, cfg.data.max_field_chars), cfg.data)
    for change, count in sorted(tables.info.changes.items()):
        log.warning("ingest changed the source: %s = %d (see `recfound validate`)", change, count)
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
