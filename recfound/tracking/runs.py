"""MLflow runs for the pipeline's stages.

The embedded default is ``sqlite:///mlflow.db`` with artifacts under ``mlartifacts/``;
``MLFLOW_TRACKING_URI`` (e.g. the cluster's MLflow server) wins over params.yaml.

Runs are readable in the MLflow UI: a run is named after what ran (``train``, ``merge trial 7``,
``ablation/without_merge_tmole``), a run started inside another is its child, and the runs of one
``dvc repro`` or one Kubeflow run share the tag ``recfound.run_group`` (filter with
``tags.recfound.run_group = '…'``). Each stage run logs the task datasets it read
(:mod:`recfound.tracking.lineage`). The experiment is created as a model-training experiment, so
the UI opens on its runs (not the GenAI view).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import psutil
from mlflow.exceptions import MlflowException

from recfound.config import Config, TrackingConfig, dotted
from recfound.tracking.lineage import DataVersion, data_version, log_task_datasets
from recfound.tracking.store import check_tracking_store, create_experiment_once, store_init_lock

log = logging.getLogger(__name__)


# The UI opens an experiment of this kind on its runs (a GenAI experiment opens on traces).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
STAGE_TAG = "recfound.stage"
RUN_GROUP_TAG = "recfound.run_group"
RUN_GROUP_ENV = "RECFOUND_RUN_GROUP"
DATA_VERSION_TAG = "recfound.data_version"
DATA_REVISION_TAG = "recfound.data_revision"
TRAINING = ("training", "validation")  # the contexts of a stage that learns with early stopping

# The name of the next stage run, when a caller knows better than the stage (see run_named).
_run_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_name", default=None)

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
    check_tracking_store(uri)
    mlflow.set_tracking_uri(uri)
    _exported = (os.environ.get("MLFLOW_TRACKING_URI"), from_user)
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = Path(cfg.artifact_location).resolve().as_uri()
    with store_init_lock(uri):  # several processes may open a fresh store at once
        create_experiment_once(cfg.experiment, location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    experiment = mlflow.set_experiment(cfg.experiment)
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # created before this tag was set
        mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return uri


def flatten_params(params: dict[str, Any]) -> dict[str, Any]:
    """Nested settings → ``{"model.tmole.rank": "8", ...}`` (MLflow params are flat strings)."""
    return {k: (str(v)[:500] if v is not None else "null") for k, v in dotted(params).items()}


@contextlib.contextmanager
def run_named(name: str) -> Iterator[None]:
    """Name the stage runs started inside this block ``name`` (e.g. ``ablation/without_all``)."""
    token = _run_name.set(name)
    try:
        yield
    finally:
        _run_name.reset(token)


def _dvc_repro_group() -> str | None:
    """``dvc-<pid>-<start>`` of the ``dvc`` process this one runs under (Linux), else None."""
    pid = os.getppid()
    for _ in range(8):
        if pid <= 1:
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        # stat: "pid (comm) state ppid ... starttime(22nd)"; comm may hold spaces
        fields = stat.rpartition(")")[2].split()
        if any(Path(a.decode(errors="replace")).name == "dvc" for a in argv[:2]):
            return f"dvc-{pid}-{fields[19]}"
        pid = int(fields[1])
    return None


def run_group() -> str | None:
    """What the runs of one pipeline run share: ``$RECFOUND_RUN_GROUP`` (a Kubeflow run sets it
    to its job name), else the ``dvc repro`` this process runs under, else None."""
    return os.environ.get(RUN_GROUP_ENV) or _dvc_repro_group()


@dataclass(frozen=True)
class RunInputs:
    """The task datasets a stage run reads, and in which contexts (training, validation, test)."""

    version: DataVersion
    tasks_dir: str
    contexts: tuple[str, ...]


def task_inputs(cfg: Config, *contexts: str) -> RunInputs:
    """The run's input: the task datasets of ``cfg.paths``, at their data version."""
    version = data_version(cfg.paths.interim, cfg.paths.tasks)
    return RunInputs(version, str(cfg.paths.tasks), tuple(contexts))


def _run_tags(stage: str, inputs: RunInputs | None) -> dict[str, str]:
    tags = {STAGE_TAG: stage}
    if (group := run_group()) is not None:
        tags[RUN_GROUP_TAG] = group
    if inputs is not None:
        tags[DATA_VERSION_TAG] = inputs.version.md5
        if inputs.version.revision:
            tags[DATA_REVISION_TAG] = inputs.version.revision
    return tags


@contextlib.contextmanager
def stage_run(
    cfg: TrackingConfig,
    stage: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    log_system_metrics: bool = False,
    inputs: RunInputs | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for a stage, with the stage's settings logged as params.

    Named after the stage (or what :func:`run_named` set); a child run when another run is
    active; ``inputs`` are logged as the run's datasets.
    """
    uri = configure_tracking(cfg)
    mark_killed_runs(mlflow.get_experiment_by_name(cfg.experiment).experiment_id)
    name = _run_name.get() or stage
    with mlflow.start_run(
        run_name=name,
        nested=mlflow.active_run() is not None,
        tags={**_run_tags(stage, inputs), **process_tags(), **(tags or {})},
        log_system_metrics=log_system_metrics,
    ) as run:
        mlflow.log_params(flatten_params(params))
        if inputs is not None:
            _retry_store_race(
                lambda: log_task_datasets(inputs.version, inputs.tasks_dir, inputs.contexts)
            )
        log.info("MLflow run %s (%s) at %s", run.info.run_id, name, uri)
        yield run


def _retry_store_race(write: Callable[[], None], attempts: int = 3) -> None:
    """Run ``write``, again if it lost a race in the store: two runs that log the same dataset at
    once (two registrations) both try to insert it, and the loser gets a UNIQUE-constraint error;
    its second try finds the dataset the other run created and links it."""
    for attempt in range(attempts):
        try:
            write()
            return
        except MlflowException as exc:
            if attempt == attempts - 1 or "unique constraint" not in str(exc).lower():
                raise
            log.info("the store was written by another run at the same time; trying again")
            time.sleep(0.2 * (attempt + 1))


def child_run(name: str) -> contextlib.AbstractContextManager[mlflow.ActiveRun]:
    """A child run of the active run (``merge trial 7``), in the same run group."""
    tags = {RUN_GROUP_TAG: group} if (group := run_group()) is not None else None
    return mlflow.start_run(run_name=name, nested=True, tags=tags)


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
