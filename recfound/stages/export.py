"""Stage `export`: one task of the registered model as an int8 ONNX device artifact.

Reads the backbone (``paths.backbone``), the merged bundle (``paths.merged``), the item catalogue
(``<paths.tasks>/items.parquet``) and the register stage's ``<paths.reports>/registry.json``;
writes the artifact (:mod:`recfound.device.export`) to ``models/device/<task>/`` (or ``--out``);
logs it to MLflow as ``device/<task>/`` among the artifacts of the registered version's run,
and tags the version ``device.<task>`` with the artifact's URI, so it sits next to the version it
was made from. Without a registry report the artifact is written but not logged (a warning says
so).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from recfound.config import Config
from recfound.device.export import export_task
from recfound.errors import UserInputError
from recfound.model.adapter_format import CONFIG_FILE
from recfound.model.bundle import load_bundle, read_spec

log = logging.getLogger(__name__)

DEVICE_DIR = Path("models/device")
REGISTRY_REPORT = "registry.json"
ARTIFACT_PATH = "device"
VERSION_TAG = "device.{task}"


def registered_version(reports_dir: str | Path) -> dict[str, Any] | None:
    """The register stage's report (model name, version, run id), or None."""
    path = Path(reports_dir) / REGISTRY_REPORT
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
        return {k: report[k] for k in ("model_name", "version", "mlflow_run_id")}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{path} is damaged ({exc}); run `recfound register` again") from None


def run_export(cfg: Config, task: str, out: str | Path | None = None) -> dict[str, Any]:
    """Export ``task``, log it next to the registered version, return what was written."""
    backbone = Path(cfg.paths.backbone)
    bundle = Path(cfg.paths.merged)
    for path, what, stage in (
        (backbone / "config.json", "the backbone", "pretrain"),
        (bundle / CONFIG_FILE, "the merged model", "merge"),
    ):
        if not path.exists():
            raise UserInputError(f"{what} not found at {path}; run `recfound {stage}` first")
    spec, _ = read_spec(bundle)
    items_path = Path(cfg.paths.tasks) / "items.parquet"
    items = pd.read_parquet(items_path) if items_path.is_file() else None
    version = registered_version(cfg.paths.reports)
    directory = Path(out) if out is not None else DEVICE_DIR / task
    rec = load_bundle(backbone, bundle)
    exported = export_task(
        rec, task, dict(spec.task_kinds), directory, items=items, provenance=version or {}
    )
    report: dict[str, Any] = {**exported.to_dict(), "registered": version, "artifact_uri": None}
    if version is None:
        log.warning(
            "no %s under %s: the artifact is not logged to MLflow; run `recfound register` first "
            "to log it next to a registered version",
            REGISTRY_REPORT,
            cfg.paths.reports,
        )
    else:
        report["artifact_uri"] = log_next_to_version(cfg, task, directory, version)
    return report


def log_next_to_version(cfg: Config, task: str, directory: Path, version: dict[str, Any]) -> str:
    """Log ``directory`` into the version's run (``device/<task>``) and tag the version."""
    from recfound.tracking.registry import configure_registry

    client = configure_registry(cfg.tracking)
    run_id = version["mlflow_run_id"]
    client.log_artifacts(run_id, str(directory), f"{ARTIFACT_PATH}/{task}")
    uri = f"runs:/{run_id}/{ARTIFACT_PATH}/{task}"
    client.set_model_version_tag(
        version["model_name"], str(version["version"]), VERSION_TAG.format(task=task), uri
    )
    log.info("logged %s to %s (version %s)", directory, uri, version["version"])
    return uri
