"""MLflow runs for the pipeline's stages.

The embedded default is ``sqlite:///mlflow.db`` with artifacts under ``mlartifacts/``;
``MLFLOW_TRACKING_URI`` (e.g. the cluster's MLflow server) wins over params.yaml.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import psutil

from recfound.config import TrackingConfig
from recfound.tracking.store import create_experiment_once, store_init_lock

log = logging.getLogger(__name__)


# What this module last exported as MLFLOW_TRACKING_URI, and whether that was the user's choice.
_exported: tuple[str | None, bool] = (None, False)


def configure_tracking(cfg: TrackingConfig) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns the URI.

    ``mlflow.set_tracking_uri`` exports ``MLFLOW_TRACKING_URI`` (so subprocesses inherit it); a
    value this function exported from params.yaml is therefore not mistaken for the user's choice
    on the next call, which may name another store, while a user's value keeps winning.
    """
    global _exported
    env = os.environ.get("MLFLOW_TRACKING_URI")
    from_user = bool(env) and (env != _exported[0] or _exported[1])
    uri = env if from_user else cfg.tracking_uri
    mlflow.set_tracking_uri(uri)
    _exported = (os.environ.get("MLFLOW_TRACKING_URI"), from_user)
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = Path(cfg.artifact_location).resolve().as_uri()
    with store_init_lock(uri):  # several processes may open a fresh store at once
        create_experiment_once(cfg.experiment, location)
    mlflow.set_experiment(cfg.experiment)
    return uri


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def flatten_params(params: dict[str, Any]) -> dict[str, Any]:
    """Nested settings → ``{"model.tmole.rank": 8, ...}`` (MLflow params are flat strings)."""
    out: dict[str, Any] = {}
    _flatten("", params, out)
    return {k: (str(v)[:500] if v is not None else "null") for k, v in out.items()}


@contextlib.contextmanager
def stage_run(
    cfg: TrackingConfig,
    stage: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    log_system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run named after the stage, with the stage's settings logged as params."""
    uri = configure_tracking(cfg)
    mark_killed_runs(mlflow.get_experiment_by_name(cfg.experiment).experiment_id)
    with mlflow.start_run(
        run_name=stage,
        tags={"recfound.stage": stage, **process_tags(), **(tags or {})},
        log_system_metrics=log_system_metrics,
    ) as run:
        mlflow.log_params(flatten_params(params))
        log.info("MLflow run %s (%s) at %s", run.info.run_id, stage, uri)
        yield run


# --- runs left RUNNING by a killed process -----------------------------------------------------

HOST_TAG, PID_TAG, PROCESS_STARTED_TAG = "recfound.host", "recfound.pid", "recfound.process_started"
KILLED_NOTE_TAG = "recfound.killed"


def process_tags() -> dict[str, str]:
    """Which process owns a run: host, pid and the process's start time (pids are reused)."""
    me = psutil.Process()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(me.pid),
        PROCESS_STARTED_TAG: f"{me.create_time():.3f}",
    }


def _process_alive(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def mark_killed_runs(experiment_id: str) -> list[str]:
    """Mark runs ``KILLED`` that are ``RUNNING`` but whose process on this host is gone.

    A process killed with SIGKILL (or a lost machine) cannot close its MLflow run; the next stage
    started on the same host closes it instead, with its nested runs (e.g. merge trials). Runs of
    other hosts are left alone: their processes cannot be checked from here. Returns the ids.
    """
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    dead = set()
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or PID_TAG not in tags:
            continue
        if not _process_alive(int(tags[PID_TAG]), float(tags.get(PROCESS_STARTED_TAG, 0))):
            dead.add(run.info.run_id)
    dead |= {r.info.run_id for r in running if r.data.tags.get("mlflow.parentRunId") in dead}
    for run_id in sorted(dead):
        client.set_tag(run_id, KILLED_NOTE_TAG, "its process ended without closing the run")
        client.set_terminated(run_id, status="KILLED")
        log.warning("MLflow run %s was left RUNNING by a process now gone: marked KILLED", run_id)
    return sorted(dead)
