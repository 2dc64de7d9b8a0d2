"""Where the pipeline's files live inside the folders of ``paths`` (params.yaml).

The names a stage writes and another reads are defined here, in the library, so no stage imports
another stage to find its inputs.
"""

from __future__ import annotations

from pathlib import Path

# inside paths.tasks (written by build-tasks)
MANIFEST_FILE = "manifest.json"
ITEMS_FILE = "items.parquet"
TRAIN_INTERACTIONS_FILE = "train_interactions.parquet"
SPLIT_INTERACTIONS_FILE = "interactions.parquet"
# inside paths.reports
RECORDS_FILE = "eval_records.json"  # evaluate's per-record outputs (register, ablate)
METRICS_FILE = "metrics.json"
# evaluate's reports are one unit: this manifest (written last) holds the digest of each file
EVALUATION_MANIFEST = "evaluation_manifest.json"


def validation_dir(reports: str | Path) -> Path:
    """The Great Expectations results and data docs of validate and build-tasks."""
    return Path(reports) / "validation"


def unit_manifest(reports: str | Path, stage: str) -> Path:
    """The manifest of ``stage``'s outputs, published as one unit
    (:func:`recfound.artifacts.publish_unit`); evaluate's is ``EVALUATION_MANIFEST``."""
    return Path(reports) / "manifests" / f"{stage}.json"
