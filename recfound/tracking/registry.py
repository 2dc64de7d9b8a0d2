"""MLflow model registry: log the merged model, register a version, promote it by alias.

A registered version of ``registry.model_name`` is readable in the UI: its source run is the
``register`` run that logged the model (which holds the full settings as params, the scores as
metrics and ``metrics.json``, and the datasets); the version itself keeps a few tags (data
version and revision, git commit, the primary metric, and the gate result ``promotion.*``) and a
description that summarises its scores against the champion. The champion's scores are read back
from its run's ``metrics.json`` (:func:`version_metrics`), so the registry alone decides a
promotion, on any machine.

Gates (``registry`` in params.yaml): a candidate passes when there is no champion yet, or when

- its primary metric is at least the champion's plus ``min_improvement`` (point estimates), and
- no task scored by both *regressed*: a task regressed when the paired 95% bootstrap interval of
  (candidate − champion) score, on the records both were evaluated on, lies entirely below
  ``-max_regression``. A drop inside the noise of the test set is not a regression. The per-record
  outputs come from ``eval_records.json``, logged with each version's register run (the
  champion's are read back from its run); a task without per-record outputs on either side falls
  back to the point rule (score dropped more than ``max_regression``), and the decision says so.

A version that passes gets alias ``champion``; otherwise alias ``challenger``, and the champion
stays. ``promote`` applies the same gates to an already registered version, or skips them when
forced.

Promotion is atomic with respect to other promotions: :func:`promote` re-reads the champion,
judges and moves the aliases while holding :func:`promotion_lock`, a registered model named
``<model_name>.promotion-lock`` that exists only while a promotion runs. Creating a registered
model is atomic in every MLflow store (a unique name in its database, behind a server or not), so
of two concurrent registrations the later is judged against whichever became champion first.

The registered model is defined from code (:mod:`recfound.tracking.model_code`, MLflow "models from
code"): no pickle in the model directory; weights are the backbone's and the bundle's safetensors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recfound.config import RegistryConfig, ServingConfig, TrackingConfig
from recfound.errors import UserInputError
from recfound.evaluation.outputs import (
    BootstrapSettings,
    RecordOutputs,
    mean_of_estimates,
    paired_difference,
)
from recfound.evaluation.runner import outputs_from_records
from recfound.model.bundle import read_spec
from recfound.tracking.lineage import DataVersion
from recfound.tracking.runs import RunInputs, configure_tracking, stage_run
from recfound.tracking.serving import (
    SIGNATURE,
    input_example,
    model_code_path,
    package_dir,
    pinned_requirements,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
DATA_VERSION_TAG = "data_version"
DATA_REVISION_TAG = "data_revision"
GIT_COMMIT_TAG = "git_commit"
PRIMARY_METRIC_TAG = "primary_metric"
METRICS_ARTIFACT = "metrics.json"
METRIC_PREFIX = "metric."
TEXT_FIELDS = ("kind", "score_metric")  # per-task tags that are not numbers
RECORDS_ARTIFACT = "eval_records.json"  # per-record outputs of the evaluation (pairing key)
# A score equal to its threshold passes even after float rounding (0.52 - 0.02 != 0.50 exactly).
TOLERANCE = 1e-9
LOCK_SUFFIX = ".promotion-lock"  # registered model that exists while a promotion runs
LOCK_OWNER_TAG = "recfound.lock_owner"
LOCK_WAIT_S = 600.0  # how long a promotion waits for another one to finish
LOCK_STALE_S = 900.0  # a lock older than this was left by a killed promotion: broken


class RegistryError(UserInputError):
    """The registry cannot do what was asked (unknown version, a version without scores, …)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version and the MLflow run that logged it."""

    name: str
    version: int
    run_id: str
    model_uri: str  # models:/<name>/<version>


@dataclass
class GateDecision:
    """Whether a candidate may become champion, and every gate it failed, in plain words."""

    passed: bool
    primary_metric: str
    candidate_value: float | None
    champion_value: float | None
    champion_version: int | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    forced: bool = False
    # task → the comparison behind its verdict: metric, scores, paired difference and interval
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    # candidate − champion of the mean score over the tasks compared on records, with interval
    paired_mean_difference: dict[str, Any] | None = None

    @property
    def promote(self) -> bool:
        """True when the candidate gets alias ``champion`` (gates passed, or forced)."""
        return self.passed or self.forced

    def summary(self) -> str:
        """One line per finding: the verdict, each failed gate, then notes."""
        against = "the champion" + (
            f" v{self.champion_version}" if self.champion_version is not None else ""
        )
        if self.champion_value is None and self.passed:
            head = "passes the gates: there is no champion yet"
        elif self.passed:
            head = (
                f"passes the gates against {against}: {self.primary_metric} "
                f"{_fmt(self.candidate_value)} vs {_fmt(self.champion_value)}"
            )
        else:
            head = f"fails {len(self.failures)} gate(s) against {against}" + (
                ", promoted by force" if self.forced else ""
            )
        lines = [head] + [f"  - {f}" for f in self.failures] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "promote": self.promote}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ---- tracking / registry URIs --------------------------------------------------------------


def configure_registry(cfg: TrackingConfig) -> MlflowClient:
    """Point MLflow at the configured store; a client for its tracking and its model registry.

    The registry is the tracking store itself (MLflow's default: with ``sqlite:///mlflow.db`` the
    registered models live in the same database, with a server URL on that server), unless
    ``MLFLOW_REGISTRY_URI`` names another. ``mlflow.set_registry_uri`` is not called on purpose:
    it would export ``MLFLOW_REGISTRY_URI`` and pin this process to the first store it saw.
    """
    tracking_uri = configure_tracking(cfg)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=mlflow.get_registry_uri())


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
    """A version's scores in metrics.json's shape: its run's ``metrics.json`` (versions
    registered before it was logged there: their tags)."""
    try:
        names = {a.path for a in client.list_artifacts(version.run_id)}
        if METRICS_ARTIFACT in names:
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(version.run_id, METRICS_ARTIFACT, tmp)
                return json.loads(Path(local).read_text())
    except MlflowException as exc:
        log.warning("cannot read %s of run %s: %s", METRICS_ARTIFACT, version.run_id, exc)
    return metrics_from_tags(version.tags)


def version_description(
    metrics: dict[str, Any], decision: GateDecision, data: DataVersion, alias: str
) -> str:
    """A few lines for the version page: the verdict, the primary metric and every task's score
    against the champion, and the data the model was trained on."""
    primary = decision.primary_metric
    lines = [f"**{alias}**: {decision.summary().splitlines()[0]}."]
    value = _overall(metrics, primary)
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


def metrics_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The ``{"overall": {...}, "tasks": {task: {"score": ...}}}`` of metrics.json, from tags."""
    overall: dict[str, float] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for key, value in tags.items():
        if not key.startswith(METRIC_PREFIX):
            continue
        name, _, field_name = key[len(METRIC_PREFIX) :].rpartition(".")
        if name == "overall":
            overall[field_name] = float(value)
        elif field_name == "score":
            tasks.setdefault(name, {})["score"] = float(value)
        elif field_name in TEXT_FIELDS:
            tasks.setdefault(name, {})[field_name] = value
    return {"overall": overall, "tasks": {t: v for t, v in tasks.items() if "score" in v}}


# ---- gates --------------------------------------------------------------------------------


def _overall(metrics: dict[str, Any] | None, name: str) -> float | None:
    try:
        return float(metrics["overall"][name])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None


Records = dict[str, RecordOutputs]


def _paired_task_comparison(
    task: str,
    candidate: RecordOutputs,
    champion: RecordOutputs,
    metric: str,
    max_regression: float,
    settings: BootstrapSettings,
) -> tuple[dict[str, Any], Any]:
    difference = paired_difference(candidate, champion, metric, settings)
    regressed = bool(difference.high < -max_regression - TOLERANCE)
    return {
        "basis": "paired",
        "metric": metric,
        "difference": difference.value,
        "ci": difference.interval,
        "n_records": difference.n_records,
        "regressed": regressed,
    }, difference


def check_gates(
    candidate_metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    registry_cfg: RegistryConfig,
    *,
    champion_version: int | None = None,
    force: bool = False,
    candidate_records: Records | None = None,
    champion_records: Records | None = None,
    settings: BootstrapSettings | None = None,
) -> GateDecision:
    """Compare a candidate's metrics with the champion's (both in metrics.json's shape).

    ``champion_metrics`` None means there is no champion: the candidate passes. ``force``
    promotes whatever the gates say; the failures are still listed. With both sides' per-record
    outputs (task → outputs, as in ``eval_records.json``) a task's regression is judged on the
    paired bootstrap interval of its score difference (see the module docstring); otherwise on
    the point estimates.
    """
    primary = registry_cfg.primary_metric
    settings = settings or BootstrapSettings()
    candidate = _overall(candidate_metrics, primary)
    if champion_metrics is None:
        return GateDecision(True, primary, candidate, None, forced=force)
    champion = _overall(champion_metrics, primary)
    failures: list[str] = []
    notes: list[str] = []
    comparisons: dict[str, dict[str, Any]] = {}
    if candidate is None or champion is None:
        whose = "candidate" if candidate is None else f"champion (v{champion_version})"
        failures.append(
            f"{primary}: the {whose} has no overall {primary} score to compare "
            "(scores come from reports/metrics.json, written by `recfound evaluate`)"
        )
    else:
        needed = champion + registry_cfg.min_improvement
        if not candidate >= needed - TOLERANCE:
            failures.append(
                f"{primary}: candidate {candidate:.4f} is below the champion's {champion:.4f}"
                + (
                    f" + min_improvement {registry_cfg.min_improvement:g} = {needed:.4f}"
                    if registry_cfg.min_improvement
                    else ""
                )
            )
    candidate_tasks = candidate_metrics.get("tasks", {})
    champion_tasks = champion_metrics.get("tasks", {})
    allowed = registry_cfg.max_regression
    paired = []
    for task in sorted(set(candidate_tasks) & set(champion_tasks)):
        old = float(champion_tasks[task]["score"])
        new = float(candidate_tasks[task]["score"])
        metric = candidate_tasks[task].get("score_metric")
        same_metric = metric == champion_tasks[task].get("score_metric", metric)
        if not math.isfinite(old):
            notes.append(f"{task}: the champion has no finite score ({old}); not compared")
            continue
        if (
            candidate_records is not None
            and champion_records is not None
            and task in candidate_records
            and task in champion_records
            and same_metric
            and metric is not None
        ):
            comparison, difference = _paired_task_comparison(
                task, candidate_records[task], champion_records[task], metric, allowed, settings
            )
            if comparison["n_records"] > 0:
                comparison.update({"candidate": new, "champion": old})
                comparisons[task] = comparison
                paired.append(difference)
                low, high = comparison["ci"]
                if comparison["regressed"]:
                    failures.append(
                        f"task {task}: candidate {metric} {new:.4f} vs the champion's {old:.4f} "
                        f"on {comparison['n_records']} shared records: the difference "
                        f"{difference.value:+.4f} has a 95% paired interval [{low:.4f}, "
                        f"{high:.4f}] entirely below -{allowed:g} (the allowed drop)"
                    )
                continue
            notes.append(f"{task}: no record shared with the champion; compared on point scores")
        elif candidate_records is not None or champion_records is not None:
            notes.append(
                f"{task}: per-record outputs missing on one side; compared on point scores"
            )
        regressed = not new >= old - allowed - TOLERANCE
        comparisons[task] = {
            "basis": "point",
            "metric": metric,
            "candidate": new,
            "champion": old,
            "difference": new - old,
            "ci": None,
            "regressed": regressed,
        }
        if regressed:
            failures.append(
                f"task {task}: candidate score {new:.4f} is {old - new:.4f} below the "
                f"champion's {old:.4f}; the allowed drop is {allowed:g}"
            )
    for task in sorted(set(champion_tasks) - set(candidate_tasks)):
        notes.append(f"{task}: scored for the champion but not for the candidate; not compared")
    for task in sorted(set(candidate_tasks) - set(champion_tasks)):
        notes.append(f"{task}: new task (the champion has no score for it); not compared")
    mean = None
    if paired:
        estimate = mean_of_estimates(paired, settings.confidence)
        mean = {
            "tasks": len(paired),
            "difference": estimate.value,
            "ci": estimate.interval,
        }
    return GateDecision(
        passed=not failures,
        primary_metric=primary,
        candidate_value=candidate,
        champion_value=champion,
        champion_version=champion_version,
        failures=failures,
        notes=notes,
        forced=force,
        comparisons=comparisons,
        paired_mean_difference=mean,
    )


def read_records(path: str | Path) -> Records | None:
    """Task → per-record outputs from an ``eval_records.json`` (None when there is none)."""
    path = Path(path)
    if not path.is_file():
        return None
    return outputs_from_records(json.loads(path.read_text()))


def run_records(client: MlflowClient, run_id: str) -> Records | None:
    """The per-record outputs logged with a version's run (None: logged before they existed)."""
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
        if RECORDS_ARTIFACT not in names:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, RECORDS_ARTIFACT, tmp)
            return read_records(local)
    except MlflowException as exc:
        log.warning("cannot read %s of run %s: %s", RECORDS_ARTIFACT, run_id, exc)
        return None


# ---- registry operations ------------------------------------------------------------------


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None (no such model, or no version has the alias)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


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
) -> RegisteredVersion:
    """Log the bundle as a pyfunc model in a ``register`` run and register it as a new version.

    The run holds the params, the scores (as metrics and as the ``metrics.json`` artifact), the
    datasets (``inputs``) and the model; it is the version's source run. The version gets
    ``tags`` (:func:`version_tags`). The model is logged from code (no pickle) with ``serving``
    (folded or not, request limits) as its model config. ``catalogue_dir`` (a serving
    catalogue: items, identifiers, histories snapshot, ANN index) travels as the ``catalogue``
    artifact, for ``recommend`` requests.
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
            },
            code_paths=[package_dir()],
            pip_requirements=pinned_requirements(),
            signature=SIGNATURE,
            input_example=input_example(spec.task_kinds),
            metadata={"task_kinds": dict(spec.task_kinds), **tags},
        )
        version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    log.info("registered %s version %s (run %s)", model_name, version.version, run.info.run_id)
    return RegisteredVersion(
        name=model_name,
        version=int(version.version),
        run_id=run.info.run_id,
        model_uri=f"models:/{model_name}/{version.version}",
    )


def apply_promotion(client: MlflowClient, name: str, version: int, decision: GateDecision) -> str:
    """Give ``version`` alias ``champion`` (decision says promote) or ``challenger``; the alias.

    The decision is kept on the version as tags (``promotion.*``).
    """
    alias = CHAMPION if decision.promote else CHALLENGER
    client.set_registered_model_alias(name, alias, str(version))
    if alias == CHAMPION:
        challenger = version_by_alias(client, name, CHALLENGER)
        if challenger is not None and int(challenger.version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    reasons = "; ".join(decision.failures) or "all gates passed"
    for key, value in {
        "promotion.alias": alias,
        "promotion.forced": str(decision.forced).lower(),
        "promotion.against": str(decision.champion_version or "none"),
        "promotion.reasons": reasons[:4000],
    }.items():
        client.set_model_version_tag(name, str(version), key, value)
    return alias


def _get_version(client: MlflowClient, name: str, version: int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    try:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        known = []
    raise RegistryError(
        f"model {name!r} has no version {version}; "
        + (f"registered versions: {known}" if known else "nothing is registered under that name")
    )


def _delete_lock(client: MlflowClient, lock_name: str) -> None:
    try:
        client.delete_registered_model(lock_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


@contextlib.contextmanager
def promotion_lock(
    client: MlflowClient,
    name: str,
    *,
    wait_s: float = LOCK_WAIT_S,
    stale_s: float = LOCK_STALE_S,
    poll_s: float = 0.2,
) -> Iterator[str]:
    """Hold the promotion lock of registered model ``name``; yields the lock's owner id.

    The lock is the registered model ``<name>.promotion-lock``: creating it succeeds for exactly
    one caller (MLflow stores keep registered model names unique), deleting it releases it. A
    lock older than ``stale_s`` was left by a killed promotion and is broken with a warning; one
    held longer than ``wait_s`` by a live promotion is a :class:`RegistryError`.
    """
    lock_name = f"{name}{LOCK_SUFFIX}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                lock_name,
                tags={LOCK_OWNER_TAG: owner},
                description=f"held while a promotion of {name!r} runs; deleted after it",
            )
            break
        except MlflowException as exc:
            # a sqlite store answers "does not exist" when the lock went between its two reads
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        try:
            held = client.get_registered_model(lock_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue  # released meanwhile: try again at once
            raise
        age_s = time.time() - (held.creation_timestamp or 0) / 1000
        holder = held.tags.get(LOCK_OWNER_TAG, "unknown")
        if age_s > stale_s:
            log.warning(
                "breaking the promotion lock %s of %s, %.0f s old", lock_name, holder, age_s
            )
            _delete_lock(client, lock_name)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"another promotion of {name!r} holds the lock {lock_name!r} ({holder}, for "
                f"{age_s:.0f} s); waited {wait_s:.0f} s. If no registration is running, delete "
                f"the registered model {lock_name!r} (it is broken by itself after {stale_s:.0f} s)"
            )
        time.sleep(poll_s)
    try:
        yield owner
    finally:
        _delete_lock(client, lock_name)


def promote(
    client: MlflowClient,
    registry_cfg: RegistryConfig,
    version: int,
    force: bool = False,
    *,
    challenger_on_refusal: bool = False,
    candidate_records: Records | None = None,
    settings: BootstrapSettings | None = None,
) -> GateDecision:
    """Make a registered version champion if it passes the gates against the champion (or forced).

    Runs under :func:`promotion_lock`: the champion is read, the gates judged and the alias moved
    with no other promotion in between. A refused version keeps its aliases and the champion
    stays (with ``challenger_on_refusal``, as the register stage does, it gets ``challenger``);
    the decision says why. ``candidate_records`` spares downloading the candidate's per-record
    outputs from its run.
    """
    with promotion_lock(client, registry_cfg.model_name):
        return _promote_locked(
            client,
            registry_cfg,
            version,
            force,
            challenger_on_refusal=challenger_on_refusal,
            candidate_records=candidate_records,
            settings=settings,
        )


def _promote_locked(
    client: MlflowClient,
    registry_cfg: RegistryConfig,
    version: int,
    force: bool,
    *,
    challenger_on_refusal: bool,
    candidate_records: Records | None,
    settings: BootstrapSettings | None,
) -> GateDecision:
    name = registry_cfg.model_name
    candidate = _get_version(client, name, version)
    champion = version_by_alias(client, name, CHAMPION)
    if champion is not None and int(champion.version) == version:
        value = _overall(version_metrics(client, candidate), registry_cfg.primary_metric)
        return GateDecision(
            passed=True,
            primary_metric=registry_cfg.primary_metric,
            candidate_value=value,
            champion_value=value,
            champion_version=version,
            notes=[f"v{version} already is {CHAMPION}; nothing to do"],
        )
    champion_metrics = version_metrics(client, champion) if champion is not None else None
    decision = check_gates(
        version_metrics(client, candidate),
        champion_metrics,
        registry_cfg,
        champion_version=None if champion is None else int(champion.version),
        force=force,
        candidate_records=(
            candidate_records
            if candidate_records is not None
            else run_records(client, candidate.run_id)
        ),
        champion_records=None if champion is None else run_records(client, champion.run_id),
        settings=settings,
    )
    if decision.promote or challenger_on_refusal:
        apply_promotion(client, name, version, decision)
    return decision
