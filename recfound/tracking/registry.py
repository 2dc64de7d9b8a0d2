"""MLflow model registry: log the merged model, register a version, promote it by alias.

A registered version of ``registry.model_name`` is readable in the UI: its source run is the
``register`` run that logged the model (which holds the full settings as params, the scores as
metrics and ``metrics.json``, and the datasets); the version itself keeps a few tags (data
version and revision, git commit, the primary metric, and the gate result ``promotion.*``) and a
description that summarises its scores against the champion. The champion's scores are read back
from its run's ``metrics.json`` (:func:`version_metrics`), so the registry alone decides a
promotion, on any machine.

Gates (:mod:`recfound.tracking.gates`, pure): the per-record outputs come from
``eval_records.json``, logged with each version's register run (the champion's are read back
from its run). A version that passes gets alias ``champion``; otherwise alias ``challenger``, and
the champion stays. ``promote`` applies the same gates to an already registered version, or skips
them when forced.

Promotion is atomic with respect to other promotions: :func:`promote` re-reads the champion,
judges and moves the aliases while holding the promotion lock (:mod:`recfound.tracking.lock`), so
of two concurrent registrations the later is judged against whichever became champion first.

The registered model is defined from code (:mod:`recfound.serving.model_code`, MLflow "models from
code"): no pickle in the model directory; weights are the backbone's and the bundle's safetensors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recfound.config import RegistryConfig, TrackingConfig
from recfound.evaluation.outputs import (
    BootstrapSettings,
)
from recfound.tracking.gates import (
    GateDecision,
    Records,
    check_gates,
    overall_value,
)
from recfound.tracking.lock import (
    LOCK_STALE_S,
    RegistryError,
    owner_is_gone,
    promotion_lock,
)
from recfound.tracking.runs import configure_tracking
from recfound.tracking.version_card import (
    run_records,
    version_metrics,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# A score equal to its threshold passes even after float rounding (0.52 - 0.02 != 0.50 exactly).
REGISTERED_BY_TAG = "recfound.registered_by"  # the registering process (as a lock owner)
UNJUDGED = "unjudged"  # promotion.alias of a version whose registration died before the gates


class NonFiniteScoreError(RegistryError):
    """An evaluation report holds a NaN or infinite score: such a model is never registered."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version and the MLflow run that logged it."""

    name: str
    version: int
    run_id: str
    model_uri: str  # models:/<name>/<version>


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


# ---- registry operations ------------------------------------------------------------------


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None (no such model, or no version has the alias)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


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


def name_unjudged_versions(client: MlflowClient, name: str, candidate: int) -> list[int]:
    """Tag the versions whose registration died between registering and judging them.

    Such a version has no alias and no ``promotion.alias`` tag, and its registering process
    (tag ``recfound.registered_by``) is gone or registered it more than ``LOCK_STALE_S`` ago. It
    gets ``promotion.alias = unjudged`` and a reason naming the command that judges it; called
    under the promotion lock by the next promotion. Returns the versions named.
    """
    try:
        aliased = {int(v) for v in client.get_registered_model(name).aliases.values()}
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        log.warning("cannot list the versions of %s: %s", name, exc)
        return []
    named = []
    for version in versions:
        number, tags = int(version.version), version.tags or {}
        owner = tags.get(REGISTERED_BY_TAG)
        if number == candidate or number in aliased or "promotion.alias" in tags or not owner:
            continue
        age_s = time.time() - (version.creation_timestamp or 0) / 1000
        if not (owner_is_gone(owner) or age_s > LOCK_STALE_S):
            continue  # its registration may still be on its way to the lock
        reason = (
            f"its registration ({owner}) ended before the gates were judged; "
            f"`recfound promote {number}` judges it"
        )
        client.set_model_version_tag(name, str(number), "promotion.alias", UNJUDGED)
        client.set_model_version_tag(name, str(number), "promotion.reasons", reason)
        log.warning("%s version %d has no alias: %s", name, number, reason)
        named.append(number)
    return named


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
    name_unjudged_versions(client, name, version)
    champion = version_by_alias(client, name, CHAMPION)
    if champion is not None and int(champion.version) == version:
        value = overall_value(version_metrics(client, candidate), registry_cfg.primary_metric)
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
