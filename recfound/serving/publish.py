"""Publish a model: log the bundle as the RecFound pyfunc (models from code, no pickle) in a
``register`` run, and register it as a new version of the registered model. Serving owns what is
logged (:mod:`recfound.serving.pyfunc`); tracking owns the run and the registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow

from recfound.config import ServingConfig, TrackingConfig
from recfound.model.bundle import read_spec
from recfound.serving.pyfunc import (
    SIGNATURE,
    input_example,
    model_code_path,
    package_dir,
    pinned_requirements,
)
from recfound.tracking.lock import process_owner
from recfound.tracking.registry import REGISTERED_BY_TAG, RegisteredVersion, configure_registry
from recfound.tracking.runs import RunInputs, stage_run
from recfound.tracking.version_card import run_metrics

log = logging.getLogger(__name__)


def log_and_register(
    *,
    tracking_cfg: TrackingConfig,
    model_name: str,
    backbone_dir: str | Path,
    bundle_dir: str | Path,
    metrics: dict[str, Any],
    metrics_path: str | Path | None,
    params: dict[str, Any],
    tags: dict[str, str],
    inputs: RunInputs | None = None,
    records_path: str | Path | None = None,
    serving: ServingConfig | None = None,
    catalogue_dir: str | Path | None = None,
    decisions_path: str | Path | None = None,
) -> RegisteredVersion:
    """Log the bundle as a pyfunc model in a ``register`` run and register it as a new version.

    The run holds the params, the scores (as metrics and as the ``metrics.json`` artifact), the
    datasets (``inputs``) and the model; it is the version's source run. The version gets
    ``tags`` (:func:`version_tags`). The model is logged from code (no pickle) with ``serving``
    (folded or not, request limits) as its model config. ``catalogue_dir`` (a serving
    catalogue: items, identifiers, histories snapshot, ANN index) travels as the ``catalogue``
    artifact, for ``recommend`` requests; ``decisions_path`` (the two-label cuts evaluation
    chose, :mod:`recfound.serving.decisions`) as the ``decisions`` artifact.
    """
    spec, _ = read_spec(bundle_dir)
    configure_registry(tracking_cfg)
    with stage_run(tracking_cfg, "register", params, inputs=inputs) as run:
        if metrics_path is not None:
            mlflow.log_artifact(str(metrics_path))
        if records_path is not None and Path(records_path).is_file():
            mlflow.log_artifact(str(records_path))
        mlflow.log_metrics(run_metrics(metrics))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model_code_path(),
            model_config=(serving or ServingConfig()).model_dump(),
            artifacts={
                "backbone": str(backbone_dir),
                "bundle": str(bundle_dir),
                **({"catalogue": str(catalogue_dir)} if catalogue_dir is not None else {}),
                **({"decisions": str(decisions_path)} if decisions_path is not None else {}),
            },
            code_paths=[package_dir()],
            pip_requirements=pinned_requirements(),
            signature=SIGNATURE,
            input_example=input_example(spec.task_kinds),
            metadata={"task_kinds": dict(spec.task_kinds), **tags},
        )
        version = mlflow.register_model(
            info.model_uri, model_name, tags={**tags, REGISTERED_BY_TAG: process_owner()}
        )
    log.info("registered %s version %s (run %s)", model_name, version.version, run.info.run_id)
    return RegisteredVersion(
        name=model_name,
        version=int(version.version),
        run_id=run.info.run_id,
        model_uri=f"models:/{model_name}/{version.version}",
    )
