"""Stage `build_tasks`: normalized tables → validated per-task train/valid/test parquet files.

When the tables came from a data repository (`fetch-data`), their data version
(``data_version.json``) is carried into ``paths.tasks``.

Everything is built and validated in a staging directory first; ``paths.tasks`` is replaced only
when the task datasets pass validation, so a failure leaves the previous datasets intact. The
datasets and ``reports/task_counts.json`` are one unit (``reports/manifests/build_tasks.json``,
:func:`recfound.artifacts.publish_unit`); ``reports/validation/tasks.json`` is the validation's
own result, written whether or not it passes (it says why a build stopped).
"""

from __future__ import annotations

import logging
from pathlib import Path

from recfound import artifacts
from recfound.config import EMBEDDING_TASKS, Config
from recfound.data.build import TaskDatasets, build_task_datasets
from recfound.data.ingest import read_tables, table_digests
from recfound.layout import (
    ITEMS_FILE,
    MANIFEST_FILE,
    SPLIT_INTERACTIONS_FILE,
    TRAIN_INTERACTIONS_FILE,
    unit_manifest,
    validation_dir,
)
from recfound.tracking.lineage import recorded_data_version, write_data_version
from recfound.validation.validate import (
    raise_for_failures,
    require_validated_tables,
    validate_task_datasets,
)

log = logging.getLogger(__name__)

__all__ = ["ITEMS_FILE", "SPLIT_INTERACTIONS_FILE", "run_build_tasks", "task_counts"]


def task_counts(datasets: TaskDatasets) -> dict[str, dict[str, int]]:
    """Per task and split, the number of records (the stage's DVC metrics)."""
    return {
        task: {split: len(frame) for split, frame in splits.items()}
        for task, splits in sorted(datasets.frames.items())
    }


def run_build_tasks(cfg: Config, validation_result: str | Path | None = None) -> TaskDatasets:
    """Build the task datasets from ``paths.interim``, which must have passed ``validate``:
    its result (``validation_result``, by default ``<paths.reports>/validation/tables.json``)
    says so for exactly these table files, or :class:`TablesNotValidatedError` is raised."""
    tables = read_tables(cfg.paths.interim)
    require_validated_tables(
        Path(validation_result or validation_dir(cfg.paths.reports) / "tables.json"),
        table_digests(cfg.paths.interim),
        Path(cfg.paths.interim),
    )
    datasets = build_task_datasets(tables, cfg.tasks, seed=cfg.seed)
    for task, reason in sorted(datasets.skipped.items()):
        log.warning("skipped task %s: %s", task, reason)

    report = validate_task_datasets(
        datasets.frames,
        enabled_tasks=list(cfg.tasks.enabled),
        cold_items=list(datasets.cold_items),
        report_dir=validation_dir(cfg.paths.reports),
    )
    raise_for_failures(report)

    counts = task_counts(datasets)
    n_emb = sum(1 for task in counts if task in EMBEDDING_TASKS)
    n_gen = len(counts) - n_emb
    metrics = {
        "num_tasks": len(counts),
        "num_generative_tasks": n_gen,
        "num_embedding_tasks": n_emb,
        "records": counts,
    }
    reports = Path(cfg.paths.reports)
    manifest = unit_manifest(reports, "build_tasks")
    with artifacts.publish_unit(manifest, writer="recfound build-tasks") as unit:
        staging = unit.directory(cfg.paths.tasks)
        for task, splits in datasets.frames.items():
            for split, frame in splits.items():
                artifacts.write_parquet(staging / task / f"{split}.parquet", frame)
        # Evaluation ranks every item by the same text the retrieval targets use, and the
        # baselines learn from exactly the interactions the model could see in training.
        artifacts.write_parquet(staging / ITEMS_FILE, datasets.item_texts)
        artifacts.write_parquet(staging / TRAIN_INTERACTIONS_FILE, datasets.train_interactions)
        artifacts.write_parquet(staging / SPLIT_INTERACTIONS_FILE, datasets.split_interactions)
        artifacts.write_json(
            staging / MANIFEST_FILE,
            {
                "source": tables.info.name,
                "built": counts,
                "skipped": dict(sorted(datasets.skipped.items())),
                "derived": dict(sorted(datasets.derived.items())),
                "cold_items": sorted(datasets.cold_items),
            },
        )
        if (version := recorded_data_version(cfg.paths.interim)) is not None:
            write_data_version(staging, version)  # fetched data: its version travels on
        unit.write_json(reports / "task_counts.json", metrics)
    log.info(
        "built %d tasks (%d embedding, %d generative) into %s; skipped %d",
        len(counts),
        n_emb,
        n_gen,
        cfg.paths.tasks,
        len(datasets.skipped),
    )
    return datasets
