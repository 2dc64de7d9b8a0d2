"""Stage `validate`: Great Expectations on the normalized tables; stops the pipeline on failure."""

from __future__ import annotations

import logging

from recfound.config import Config
from recfound.data.ingest import read_tables, table_digests
from recfound.layout import validation_dir
from recfound.validation.validate import ValidationReport, raise_for_failures, validate_tables

log = logging.getLogger(__name__)


def run_validate(cfg: Config) -> ValidationReport:
    """Validate ``paths.interim``; raise :class:`DataValidationError` listing failed expectations.

    The full results (JSON) and the GX data docs (HTML) are written whether or not it passes.
    """
    tables = read_tables(cfg.paths.interim)
    digests = table_digests(cfg.paths.interim)  # build-tasks checks it builds from these files
    report = validate_tables(tables, validation_dir(cfg.paths.reports), inputs=digests)
    for warning in report.warnings:
        log.warning("%s", warning)
    raise_for_failures(report)
    log.info("tables passed validation (%s)", report.statistics)
    return report
