"""What a registered version carries and how it is read back: a few tags, a description for the
version page, its scores (the register run's ``metrics.json``) and its per-record outputs (the
run's ``eval_records.json``, what the gates pair records on)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recfound.evaluation.scores import outputs_from_records
from recfound.tracking.gates import GateDecision, Records, overall_value
from recfound.tracking.lineage import DataVersion
from recfound.tracking.lock import RegistryError

log = logging.getLogger(__name__)

DATA_VERSION_TAG = "data_version"
DATA_REVISION_TAG = "data_revision"
GIT_COMMIT_TAG = "git_commit"
PRIMARY_METRIC_TAG = "primary_metric"
METRICS_ARTIFACT = "metrics.json"
METRIC_PREFIX = "metric."
RECORDS_ARTIFACT = "eval_records.json"  # per-record outputs of the evaluation (pairing key)


class RecordsError(RegistryError):
    """An ``eval_records.json`` (evaluate's per-record outputs) is cut short or damaged."""


# ---- tags <-> metrics ---------------------------------------------------------------------


def version_tags(
    metrics: dict[str, Any],
    primary_metric: str,
    data: DataVersion,
    code_commit: str | None = None,
) -> dict[str, str]:
    """The few tags of a registered version: data version and revision, the code's commit, the
    primary metric and its value. The full settings and every score stay on the version's run;
    :func:`apply_promotion` adds the gate result (``promotion.*``): nine tags at most."""
    tags = {DATA_VERSION_TAG: data.md5, PRIMARY_METRIC_TAG: primary_metric}
    if data.revision:
        tags[DATA_REVISION_TAG] = data.revision
    if code_commit:
        tags[GIT_COMMIT_TAG] = code_commit
    value = metrics.get("overall", {}).get(primary_metric)
    if value is not None:
        tags[f"{METRIC_PREFIX}overall.{primary_metric}"] = repr(float(value))
    return tags


def run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scores of metrics.json as flat MLflow metrics (``overall.mean_score``, ``x.score``)."""
    flat = {f"overall.{name}": float(v) for name, v in metrics.get("overall", {}).items()}
    for task, values in metrics.get("tasks", {}).items():
        flat[f"{task}.score"] = float(values["score"])
    return flat


def version_metrics(client: MlflowClient, version: ModelVersion) -> dict[str, Any]:
    """A version's scores in metrics.json's shape: its run's ``metrics.json`` (when that cannot
    be read, only the primary metric, from the version's tags)."""
    try:
        names = {a.path for a in client.list_artifacts(version.run_id)}
        if METRICS_ARTIFACT in names:
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(version.run_id, METRICS_ARTIFACT, tmp)
                return json.loads(Path(local).read_text())
    except MlflowException as exc:
        log.warning("cannot read %s of run %s: %s", METRICS_ARTIFACT, version.run_id, exc)
    tags = version.tags or {}  # the primary metric is a tag of every version
    primary = tags.get(PRIMARY_METRIC_TAG, "")
    value = tags.get(f"{METRIC_PREFIX}overall.{primary}")
    return {"overall": {primary: float(value)} if value else {}, "tasks": {}}


def version_description(
    metrics: dict[str, Any], decision: GateDecision, data: DataVersion, alias: str
) -> str:
    """A few lines for the version page: the verdict, the primary metric and every task's score
    against the champion, and the data the model was trained on."""
    primary = decision.primary_metric
    lines = [f"**{alias}**: {decision.summary().splitlines()[0]}."]
    value = overall_value(metrics, primary)
    if decision.champion_value is not None and value is not None:
        lines.append(
            f"{primary} {value:.4f} vs champion v{decision.champion_version} "
            f"{decision.champion_value:.4f} ({value - decision.champion_value:+.4f})."
        )
    elif value is not None:
        lines.append(f"{primary} {value:.4f}.")
    scores = []
    for task, values in sorted(metrics.get("tasks", {}).items()):
        score = f"{task} {float(values['score']):.3f}"
        comparison = decision.comparisons.get(task)
        if comparison is not None:
            flag = ", regressed" if comparison["regressed"] else ""
            score += f" ({comparison['difference']:+.3f}{flag})"
        scores.append(score)
    if scores:
        lines.append("Scores (vs champion): " + "; ".join(scores) + ".")
    lines += [f"Failed gate: {failure}" for failure in decision.failures]
    lines.append(f"Data: {data.describe()}.")
    return "\n\n".join(lines)


def read_records(path: str | Path) -> Records | None:
    """Task → per-record outputs from an ``eval_records.json`` (None when there is none); a file
    cut short or damaged is a :class:`RecordsError` naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return outputs_from_records(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordsError(
            f"{path} is not a usable per-record report ({type(exc).__name__}: {exc}); the file "
            "is cut short or damaged. Run `recfound evaluate` again (it writes metrics.json and "
            f"{RECORDS_ARTIFACT} together)"
        ) from None


def run_records(client: MlflowClient, run_id: str) -> Records | None:
    """The per-record outputs logged with a version's run (None: logged before they existed)."""
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
        if RECORDS_ARTIFACT not in names:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, RECORDS_ARTIFACT, tmp)
            return read_records(local)
    except (MlflowException, RecordsError) as exc:  # judged on point scores instead
        log.warning("cannot read %s of run %s: %s", RECORDS_ARTIFACT, run_id, exc)
        return None
