"""Stage `register`: the merged model becomes a registered MLflow model version, gated by alias.

Reads the backbone (``paths.backbone``), the merged bundle (``paths.merged``), the evaluation
scores (``<paths.reports>/metrics.json``) and per-record outputs (``eval_records.json``); compares
them with the current champion's, record by record (``registry`` gates in params.yaml: a task
regressed only when its paired 95% interval lies entirely below ``-max_regression``); logs and
registers the model as ``registry.model_name`` with the data version, params and scores as version
tags, the per-record outputs as an artifact of its run; gives it alias ``champion`` if it passed,
``challenger`` otherwise. Writes ``<paths.reports>/registry.json`` with the comparison (difference
and paired interval) behind each task's verdict.

The model is logged and registered first; the gates are judged afterwards, under the registry's
promotion lock, against the champion as it is then (:func:`recfound.tracking.registry.promote`):
two registrations started together can both log, but the later promotion sees the earlier one's
result, so the worse of the two never ends up champion.

``run_promote`` is the by-hand promotion of a registered version (``recfound promote``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from recfound import artifacts
from recfound.config import Config
from recfound.errors import UserInputError
from recfound.evaluation.outputs import BootstrapSettings
from recfound.layout import (
    EVALUATION_MANIFEST,
    ITEMS_FILE,
    METRICS_FILE,
    SPLIT_INTERACTIONS_FILE,
)
from recfound.model.adapter_format import CONFIG_FILE
from recfound.model.bundle import load_bundle, read_spec
from recfound.serving.decisions import DECISIONS_FILE, cuts_from_records, write_decisions
from recfound.serving.publish import log_and_register
from recfound.serving.snapshot import write_serving_catalogue
from recfound.tracking.gates import GateDecision, non_finite_scores
from recfound.tracking.lineage import code_commit
from recfound.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    NonFiniteScoreError,
    configure_registry,
    promote,
)
from recfound.tracking.runs import task_inputs
from recfound.tracking.version_card import (
    RECORDS_ARTIFACT,
    read_records,
    version_description,
    version_tags,
)

log = logging.getLogger(__name__)

REPORT_FILE = "registry.json"


class PromotionRefused(UserInputError):
    """``recfound promote`` without --force, for a version that fails the gates."""


# ---- inputs -------------------------------------------------------------------------------


def _require(path: Path, what: str, stage: str) -> None:
    if not path.exists():
        raise UserInputError(
            f"{what} not found at {path}; run `recfound {stage}` (or `dvc repro {stage}`) first"
        )


def read_metrics(path: Path, primary: str) -> dict[str, Any]:
    """metrics.json, checked for what the gates read (overall primary metric, task scores)."""
    try:
        metrics = json.loads(path.read_text())
        float(metrics["overall"][primary])
        for values in metrics.get("tasks", {}).values():
            float(values["score"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(
            f"{path} is not a usable evaluation report ({type(exc).__name__}: {exc}); it needs "
            f"overall.{primary} and a score per task. Run `recfound evaluate` again"
        ) from None
    non_finite = non_finite_scores(metrics, primary)
    if non_finite:
        raise NonFiniteScoreError(
            f"{path} holds scores that are not finite numbers: {'; '.join(non_finite)}. A model "
            "with such scores is not registered; see evaluation.md for the task, fix the cause "
            "and run `recfound evaluate` again"
        )
    return metrics


def check_evaluation_unit(reports: Path) -> None:
    """Evaluate's reports come from one complete run: their manifest (written last) lists
    metrics.json and eval_records.json (when present) with the digests they have now;
    :class:`~recfound.artifacts.ManifestError` otherwise (a killed evaluate, a file replaced)."""
    digests = artifacts.check_manifest(
        reports / EVALUATION_MANIFEST, rerun="`recfound evaluate` (or `dvc repro evaluate`)"
    )
    for name in (METRICS_FILE, RECORDS_ARTIFACT):
        if name not in digests and (name == METRICS_FILE or (reports / name).exists()):
            raise artifacts.ManifestError(
                f"{reports / name} is not listed in {reports / EVALUATION_MANIFEST}: it does not "
                "come from the evaluation run the manifest describes. Run `recfound evaluate` "
                "again"
            )


def serving_catalogue(
    cfg: Config, backbone: Path, bundle: Path, out_dir: str | Path
) -> dict[str, Any] | None:
    """Write the catalogue the model recommends from (items, identifiers, train + valid
    histories, ANN index over the item embeddings) into ``out_dir``; its summary, or None (with a
    warning) when the task data has no catalogue (``recommend`` then answers a client error)."""
    tasks = Path(cfg.paths.tasks)
    if not (tasks / ITEMS_FILE).is_file() or not (tasks / SPLIT_INTERACTIONS_FILE).is_file():
        log.warning("no catalogue in %s: the model is registered without one", tasks)
        return None
    spec, _ = read_spec(bundle)
    rec = load_bundle(backbone, bundle)
    return write_serving_catalogue(
        rec,
        spec.task_kinds,
        tasks,
        cfg.paths.interim,
        cfg.tasks.sequence_length,
        cfg.serving,
        out_dir,
        seed=cfg.seed,
    )


def registry_params(cfg: Config) -> dict[str, Any]:
    """The settings recorded with a version (paths and tracking are about this machine only)."""
    return cfg.model_dump(exclude={"paths", "tracking"})


# ---- stages -------------------------------------------------------------------------------


def run_register(cfg: Config) -> dict[str, Any]:
    """Register the merged model, gate it against the champion, write reports/registry.json."""
    backbone = Path(cfg.paths.backbone)
    bundle = Path(cfg.paths.merged)
    metrics_path = Path(cfg.paths.reports) / "metrics.json"
    _require(backbone / "config.json", "the backbone", "pretrain")
    _require(bundle / CONFIG_FILE, "the merged model", "merge")
    _require(metrics_path, "the evaluation report", "evaluate")
    records_path = Path(cfg.paths.reports) / RECORDS_ARTIFACT
    check_evaluation_unit(Path(cfg.paths.reports))
    metrics = read_metrics(metrics_path, cfg.registry.primary_metric)
    records = read_records(records_path)
    if records is None:
        log.warning("%s is missing: task regressions are judged on point scores", records_path)
    inputs = task_inputs(cfg, "training", "validation", "test")
    data = inputs.version
    name = cfg.registry.model_name

    client = configure_registry(cfg.tracking)
    cuts = cuts_from_records(records or {}, list(read_spec(bundle)[0].task_kinds))
    with tempfile.TemporaryDirectory(prefix="recfound-register-") as work:
        catalogue_dir = Path(work) / "catalogue"
        catalogue = serving_catalogue(cfg, backbone, bundle, catalogue_dir)
        registered = log_and_register(
            tracking_cfg=cfg.tracking,
            model_name=name,
            backbone_dir=backbone,
            bundle_dir=bundle,
            metrics=metrics,
            metrics_path=metrics_path,
            params=registry_params(cfg),
            tags=version_tags(metrics, cfg.registry.primary_metric, data, code_commit()),
            inputs=inputs,
            records_path=records_path if records is not None else None,
            serving=cfg.serving,
            catalogue_dir=catalogue_dir if catalogue is not None else None,
            decisions_path=write_decisions(Path(work) / DECISIONS_FILE, cuts) if cuts else None,
        )
    decision = promote(
        client,
        cfg.registry,
        registered.version,
        challenger_on_refusal=True,
        candidate_records=records,
        settings=BootstrapSettings(seed=cfg.seed),
    )
    alias = CHAMPION if decision.promote else CHALLENGER
    client.update_model_version(
        name, str(registered.version), version_description(metrics, decision, data, alias)
    )
    report = {
        "model_name": name,
        "version": registered.version,
        "model_uri": registered.model_uri,
        "alias": alias,
        "champion_uri": f"models:/{name}@{CHAMPION}",
        "mlflow_run_id": registered.run_id,
        "data_version": data.md5,
        "data_version_source": data.origin,
        "data": data.to_dict(),
        "catalogue": catalogue,
        "decision_thresholds": {task: cut.threshold for task, cut in sorted(cuts.items())},
        "decision": decision.to_dict(),
    }
    client.log_dict(registered.run_id, report, REPORT_FILE)
    artifacts.write_json(Path(cfg.paths.reports) / REPORT_FILE, report)
    log.info("%s version %d → alias %s; %s", name, registered.version, alias, decision.summary())
    return report


def run_promote(cfg: Config, version: int, force: bool = False) -> dict[str, Any]:
    """Promote a registered version by hand; one that fails the gates is refused unless forced."""
    client = configure_registry(cfg.tracking)
    name = cfg.registry.model_name
    decision: GateDecision = promote(client, cfg.registry, version, force=force)
    if not decision.promote:
        raise PromotionRefused(
            f"{name} version {version} is not promoted: it {decision.summary()}\n"
            "The champion stays. Use --force to promote it anyway."
        )
    log.info("%s version %d is now %s; %s", name, version, CHAMPION, decision.summary())
    return {"model_name": name, "version": version, "alias": CHAMPION, **decision.to_dict()}
