"""Run the expectation suites on the data and turn GX's results into a report a person can act on.

Each ``validate_*`` call runs Great Expectations in an *ephemeral* context (nothing is written to
the repository: no ``gx/`` folder), writes GX's full results to ``report_dir/<name>.json`` and
builds GX's HTML data docs as the site ``report_dir/data_docs/<name>/``. Both validate calls of the
pipeline share one report directory, so ``report_dir/data_docs/index.html`` is a small page
linking the sites present (``tables``, ``tasks``).

Great Expectations is imported only when a validation runs: importing it takes seconds.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recfound import artifacts
from recfound.data.schema import Tables
from recfound.errors import EXIT_INVALID_DATA, StageStopped, UserInputError

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.data_context import EphemeralDataContext

DATA_DOCS_DIR = "data_docs"
# SUMMARY keeps the JSON small (counts and the first values) even when every row fails.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 80

# Runs are offline: GX must not phone home, whichever module imports it first (the contexts are
# also configured with analytics off). A value the user set explicitly is kept.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class ExpectationFailure:
    """One unmet expectation: where, which, and a one-line summary with example values."""

    asset: str
    expectation_type: str
    column: str
    summary: str
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: list[Any] = field(default_factory=list)


@dataclass
class ValidationReport:
    """The outcome of one validate call; ``summary()`` is what the CLI prints on failure.

    ``statistics`` holds expectation counts (``evaluated_expectations``,
    ``successful_expectations``, ``unsuccessful_expectations``), ``rows.<asset>`` per asset and,
    for the tables, ``ingest.<change>`` counts. ``warnings`` name what passes but changes what the
    model learns (a degenerate source, what ingest changed; see
    :mod:`recfound.validation.degenerate`).
    """

    success: bool
    failures: list[ExpectationFailure] = field(default_factory=list)
    statistics: dict[str, int] = field(default_factory=dict)
    name: str = ""
    results_path: Path | None = None
    data_docs_index: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        evaluated = self.statistics.get("evaluated_expectations", 0)
        if self.success:
            head = f"{self.name} validation passed: {evaluated} expectations met"
        else:
            head = (
                f"{self.name} validation failed: {len(self.failures)} of {evaluated} "
                "expectations not met"
            )
        lines = [head]
        lines += [f"  - [{f.asset}] {f.summary} ({f.expectation_type})" for f in self.failures]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.results_path is not None:
            lines.append(f"full results: {self.results_path}")
        if self.data_docs_index is not None:
            lines.append(f"data docs: {self.data_docs_index}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "failures": [asdict(f) for f in self.failures],
            "statistics": dict(self.statistics),
            "warnings": list(self.warnings),
            "results_path": None if self.results_path is None else str(self.results_path),
            "data_docs_index": None if self.data_docs_index is None else str(self.data_docs_index),
        }


class DataValidationError(StageStopped):
    """The data failed validation; the message is the report's summary."""

    exit_code = EXIT_INVALID_DATA
    headline = "data validation failed:\n"

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def raise_for_failures(report: ValidationReport) -> None:
    """Raise :class:`DataValidationError` unless every expectation was met."""
    if not report.success:
        raise DataValidationError(report)


class TablesNotValidatedError(UserInputError):
    """build-tasks was asked to use tables that did not pass validate (failed, never validated,
    or changed since)."""


def require_validated_tables(result_path: Path, digests: dict[str, str], interim: Path) -> None:
    """The validation result at ``result_path`` (validate's ``tables.json``) passed, for tables
    with exactly these ``digests``; :class:`TablesNotValidatedError` otherwise."""
    again = f"run `recfound validate` (tables in {interim}) and fix what it reports"
    try:
        result = json.loads(Path(result_path).read_text())
    except FileNotFoundError:
        raise TablesNotValidatedError(
            f"the tables in {interim} have no validation result ({result_path} is missing); "
            + again
        ) from None
    except ValueError as exc:
        raise TablesNotValidatedError(f"{result_path} is unreadable ({exc}); " + again) from None
    if result.get("success") is not True:
        failed = len(result.get("failures", []))
        raise TablesNotValidatedError(
            f"the tables in {interim} failed validation ({failed} expectation(s) not met, see "
            f"{result_path}); task datasets are built only from tables that pass. Fix the data "
            "and run `recfound ingest` and `recfound validate` again"
        )
    if result.get("inputs") != digests:
        raise TablesNotValidatedError(
            f"the tables in {interim} changed since they were validated ({result_path} describes "
            "other files); " + again
        )


def validate_tables(
    tables: Tables, report_dir: Path, inputs: dict[str, str] | None = None
) -> ValidationReport:
    """Check the normalized tables (see :mod:`recfound.validation.suites`); results: ``tables``,
    with ``inputs`` (the digests of the table files) recorded for build-tasks."""
    from recfound.validation import degenerate, suites

    interactions = suites.interactions_frame(tables.interactions, tables.items, tables.users)
    return _run_suites(
        "tables",
        [
            (
                "interactions",
                interactions,
                suites.interactions_suite(tables.info, columns=tables.interactions.columns),
            ),
            ("items", tables.items, suites.items_suite()),
            ("users", tables.users, suites.users_suite()),
        ],
        Path(report_dir).resolve(),
        extra={"inputs": inputs},
        warnings=degenerate.source_warnings(tables),
        statistics=degenerate.change_statistics(tables),
    )


def validate_task_datasets(
    frames: dict[str, dict[str, pd.DataFrame]],
    enabled_tasks: list[str],
    cold_items: list[str],
    report_dir: Path,
) -> ValidationReport:
    """Check every task file (``frames[task][split]``), including the train-leakage check.

    All files are validated as one concatenated frame (one GX run, not one per file); failures
    name the offending task/split in their examples. Results are written as ``tasks``.
    """
    from recfound.validation import suites

    records = suites.task_records_frame(frames, cold_items)
    return _run_suites(
        "tasks",
        [("task_records", records, suites.task_records_suite(enabled_tasks))],
        Path(report_dir).resolve(),
    )


# --- running GX -------------------------------------------------------------------------------


def _ephemeral_context(site_dir: Path) -> EphemeralDataContext:
    """An in-memory GX context: no analytics, no progress bars, data docs written to site_dir."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={
            "recfound": {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(site_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suites(
    name: str,
    checks: list[tuple[str, pd.DataFrame, ExpectationSuite]],
    report_dir: Path,
    extra: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
    statistics: dict[str, int] | None = None,
) -> ValidationReport:
    """Validate each (asset, frame, suite), then write the JSON results and the data docs;
    ``warnings`` and ``statistics`` are added to the report as they are."""
    import great_expectations as gx

    docs_root = report_dir / DATA_DOCS_DIR
    results: dict[str, ExpectationSuiteValidationResult] = {}
    rows: dict[str, int] = {}
    # The site is built aside and swapped in whole, so a crash never leaves half a site.
    with artifacts.staged_directory(docs_root / name) as site_dir:
        context = _ephemeral_context(site_dir)
        source = context.data_sources.add_pandas(name)
        for asset, frame, suite in checks:
            batch = source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe(asset)
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=asset, data=batch, suite=context.suites.add(suite))
            )
            results[asset] = definition.run(
                batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT
            )
            rows[asset] = len(frame)
        context.build_data_docs()

    frames = {asset: frame for asset, frame, _ in checks}
    failures = [
        _failure(asset, result, frames[asset])
        for asset, suite_result in results.items()
        for result in suite_result.results
        if not result.success
    ]
    counts = {
        "evaluated_expectations": sum(len(r.results) for r in results.values()),
        "successful_expectations": sum(sum(x.success for x in r.results) for r in results.values()),
    }
    counts["unsuccessful_expectations"] = (
        counts["evaluated_expectations"] - counts["successful_expectations"]
    )
    counts.update({f"rows.{asset}": count for asset, count in rows.items()})
    counts.update(statistics or {})
    report = ValidationReport(
        success=all(r.success for r in results.values()),
        failures=failures,
        statistics=counts,
        name=name,
        results_path=report_dir / f"{name}.json",
        data_docs_index=docs_root / "index.html",
        warnings=list(warnings or []),
    )
    artifacts.write_json(
        report.results_path,
        {
            **report.to_dict(),
            **(extra or {}),
            "results": {a: r.to_json_dict() for a, r in results.items()},
        },
    )
    _write_docs_index(report_dir)
    return report


# --- GX results → readable failures ------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy scalars → Python, tuples → lists, long strings shortened: values fit for a summary."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(ValueError, TypeError):  # .item() of a multi-element array
            value = value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) > MAX_EXAMPLE_CHARS:
        return value[: MAX_EXAMPLE_CHARS - 1] + "…"
    return value


def _examples(values: list[Any]) -> list[Any]:
    """The first distinct values, at most :data:`MAX_EXAMPLES`."""
    seen: list[Any] = []
    for value in values:
        plain = _plain(value)
        if plain not in seen:
            seen.append(plain)
        if len(seen) == MAX_EXAMPLES:
            break
    return seen


def _exception_message(result: ExpectationValidationResult) -> str | None:
    """GX's error when the expectation could not be computed (e.g. a missing column), else None."""
    info = result.exception_info or {}
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for entry in candidates:
        if entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "error").strip()
            return message.splitlines()[0] if message else "error"
    return None


def _files_of(frame: pd.DataFrame, rows: list[Any]) -> list[str]:
    """``task/split`` of the given rows of a combined task frame (empty for other frames)."""
    from recfound.validation.suites import FILE_SPLIT, FILE_TASK

    if FILE_TASK not in frame.columns or FILE_SPLIT not in frame.columns:
        return []
    rows = [r for r in rows if r in frame.index]
    located = frame.loc[rows, [FILE_TASK, FILE_SPLIT]].itertuples(index=False, name=None)
    return _examples([f"{task}/{split}" for task, split in located])


def _failure(
    asset: str, result: ExpectationValidationResult, frame: pd.DataFrame
) -> ExpectationFailure:
    config = result.expectation_config
    meta = config.meta or {}
    kwargs = config.kwargs
    column = str(meta.get("column") or kwargs.get("column") or kwargs.get("column_A") or "")
    problem = str(meta.get("problem") or config.type.replace("_", " "))
    where = column or asset
    outcome = result.result or {}
    error = _exception_message(result)
    unexpected = outcome.get("unexpected_count")
    total = outcome.get("element_count")
    examples: list[Any] = []
    if error is not None:
        summary = f"{where}: could not be checked: {error}"
    elif unexpected is not None:
        # The unexpected values of a not-null check are all nulls: no example is worth showing.
        if config.type != "expect_column_values_to_not_be_null":
            examples = _examples(outcome.get("partial_unexpected_list") or [])
        summary = f"{where}: {unexpected} of {total} {problem}"
        if examples:
            summary += f", e.g. {examples}"
        if files := _files_of(frame, outcome.get("partial_unexpected_index_list") or []):
            summary += f" (in {', '.join(files)})"
    elif "observed_value" in outcome:
        summary = f"{where}: {_plain(outcome['observed_value'])} {problem}"
    else:
        summary = f"{where}: {problem}"
    return ExpectationFailure(
        asset=asset,
        expectation_type=config.type,
        column=column,
        summary=summary,
        unexpected_count=None if unexpected is None else int(unexpected),
        element_count=None if total is None else int(total),
        examples=examples,
    )


def _write_docs_index(report_dir: Path) -> None:
    """``data_docs/index.html``: a link to each GX site present, with its last outcome."""
    docs_root = report_dir / DATA_DOCS_DIR
    items = []
    for site in sorted(p for p in docs_root.iterdir() if (p / "index.html").is_file()):
        outcome = "unknown"
        results = report_dir / f"{site.name}.json"
        if results.is_file():
            with contextlib.suppress(ValueError, KeyError):  # unreadable: outcome stays unknown
                outcome = "passed" if json.loads(results.read_text())["success"] else "FAILED"
        name = html.escape(site.name)
        items.append(f'<li><a href="{name}/index.html">{name}</a>: {outcome}</li>')
    artifacts.write_text(
        docs_root / "index.html",
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        "<title>RecFound data validation</title></head>\n<body><h1>RecFound data validation"
        "</h1>\n<p>Great Expectations data docs per validation step:</p>\n<ul>\n"
        + "\n".join(items)
        + "\n</ul>\n</body></html>\n",
    )
