"""The RecFound pipeline: the stages of dvc.yaml as Kubeflow tasks, wired by their artifacts.

    check-params → ingest → validate → build-tasks → pretrain → train → merge → evaluate → register
                                            └──── baselines (SASRec, biased MF) ────┘    → recommend

``build_pipeline`` returns the pipeline with params.yaml's values as parameter defaults. The same
definition runs on a cluster (``target="cluster"``) and on this machine through kfp.local
(``target="local"``); the only difference is :func:`apply_cluster_settings`, which kfp.local
cannot honour (see its docstring).

This module does not use ``from __future__ import annotations``: KFP reads the pipeline function's
parameter types at definition time and cannot resolve them from strings.
"""

from typing import Any, Literal

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, PipelineTask

from components import (
    baselines,
    build_tasks,
    check_params,
    evaluate,
    ingest,
    merge,
    pretrain,
    project_image,
    recommend,
    register,
    train,
    validate,
)
from pipelines.arguments import DATA_DEFAULTS, RESOURCE_DEFAULTS
from recfound.tracking.runs import RUN_GROUP_ENV

PIPELINE_NAME = "recfound"
MLFLOW_SECRET = "recfound-mlflow"
MLFLOW_SECRET_KEYS: tuple[str, ...] = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",  # the tracking server requires basic-auth credentials
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
MLFLOW_STEPS: tuple[str, ...] = (
    "baselines",
    "pretrain",
    "train",
    "merge",
    "evaluate",
    "register",
    "recommend",
)
RUN_ID_LABEL = "metadata.labels['pipeline/runid']"  # the KFP run id, on every pod of the run
Target = Literal["cluster", "local"]


def apply_cluster_settings(
    steps: dict[str, PipelineTask],
    *,
    gpu_type: Any,
    train_gpus: Any,
    train_cpu: Any,
    train_memory: Any,
    step_cpu: Any,
    step_memory: Any,
) -> None:
    """Everything about the tasks that only a Kubernetes cluster understands, in one place.

    - CPU and memory limits of every step; the train step's GPUs (accelerator type and count),
      a toleration for tainted GPU nodes and a memory-backed ``/dev/shm`` for NCCL.
    - The MLflow server and object-store credentials of every step that uses MLflow, from the
      Kubernetes Secret ``recfound-mlflow`` (keys = variable names, see infra/README.md), and the
      KFP run id as ``RECFOUND_RUN_GROUP`` (the MLflow runs of one KFP run share that tag).
      The ``ingest`` step gets the same credentials: they reach the DVC remote (S3/MinIO).

    ``run-local`` leaves all of this out: kfp.local ignores resources and accelerators (with a
    warning) and silently drops Kubernetes platform settings, so a secret-backed environment would
    never reach the local subprocesses; there, MLflow settings come from the process environment.
    The arguments are pipeline parameters (resolved by the cluster when the task starts).
    """
    for name, task in steps.items():
        if name != "train":
            task.set_cpu_limit(step_cpu).set_memory_limit(step_memory)
    training = steps["train"]
    training.set_cpu_limit(train_cpu).set_memory_limit(train_memory)
    training.set_accelerator_type(gpu_type).set_accelerator_limit(train_gpus)
    kubernetes.add_toleration(
        training, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
    )
    kubernetes.empty_dir_mount(training, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    for name in (*MLFLOW_STEPS, "ingest"):
        kubernetes.use_secret_as_env(
            steps[name],
            secret_name=MLFLOW_SECRET,
            secret_key_to_env={key: key for key in MLFLOW_SECRET_KEYS},
        )
    for name in MLFLOW_STEPS:
        kubernetes.use_field_path_as_env(
            steps[name], env_name=RUN_GROUP_ENV, field_path=RUN_ID_LABEL
        )


def build_pipeline(
    defaults: dict[str, Any],
    image: str | None = None,
    target: Target = "cluster",
    resources: dict[str, Any] | None = None,
) -> Any:
    """The pipeline (a KFP graph component) with ``defaults`` (``config_arguments``) and
    ``resources`` (``resource_arguments``: the params file's ``cluster`` section; None: its
    defaults) as parameter defaults, every step in ``image`` (default:
    :func:`components.project_image`)."""
    image = image or project_image()
    d, r, w = defaults, {**RESOURCE_DEFAULTS, **(resources or {})}, DATA_DEFAULTS

    def recfound(
        seed: int = d["seed"],
        data: dict = d["data"],
        tasks: dict = d["tasks"],
        model: dict = d["model"],
        pretrain: dict = d["pretrain"],
        train: dict = d["train"],
        merge: dict = d["merge"],
        baselines: dict = d["baselines"],
        evaluate: dict = d["evaluate"],
        registry: dict = d["registry"],
        tracking: dict = d["tracking"],
        gpu_type: str = r["gpu_type"],
        train_gpus: int = r["train_gpus"],
        train_cpu: str = r["train_cpu"],
        train_memory: str = r["train_memory"],
        step_cpu: str = r["step_cpu"],
        step_memory: str = r["step_memory"],
        data_from: str = w["data_from"],
        data_repo: str = w["data_repo"],
        data_rev: str = w["data_rev"],
        data_remote: str = w["data_remote"],
    ) -> Artifact:
        steps = _wire_stages(
            (data_from, data_repo, data_rev, data_remote),
            seed,
            data,
            tasks,
            model,
            pretrain,
            train,
            merge,
            baselines,
            evaluate,
            registry,
            tracking,
        )
        for task in steps.values():
            task.set_caching_options(enable_caching=True).set_container_image(image)
        if target == "cluster":
            apply_cluster_settings(
                steps,
                gpu_type=gpu_type,
                train_gpus=train_gpus,
                train_cpu=train_cpu,
                train_memory=train_memory,
                step_cpu=step_cpu,
                step_memory=step_memory,
            )
        return steps["register"].outputs["report"]

    return dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "RecFound: ingest (the DVC-versioned tables of data_repo at data_rev, or the raw "
            "source with data_from=raw) → validate → build tasks → pretrain → train (TMoLE + "
            "S2Sched, GPUs) → merge (Optuna) → evaluate (against SASRec and biased MF, trained "
            "from the tasks) → register in MLflow → recommend (every user's top-k as parquet). "
            "Parameters mirror "
            "params.yaml (one per section) plus the train step's GPUs, CPU and memory and the "
            "data location."
        ),
    )(recfound)


def _wire_stages(
    location: tuple[Any, Any, Any, Any],
    seed: Any,
    data: Any,
    tasks: Any,
    model: Any,
    pretrain_settings: Any,
    train_settings: Any,
    merge_settings: Any,
    baselines_settings: Any,
    evaluate_settings: Any,
    registry: Any,
    tracking: Any,
) -> dict[str, PipelineTask]:
    """Create the tasks in stage order; each consumes the artifacts its stage reads."""
    params = check_params(
        seed=seed,
        data=data,
        tasks=tasks,
        model=model,
        pretrain=pretrain_settings,
        train=train_settings,
        merge=merge_settings,
        baselines=baselines_settings,
        evaluate=evaluate_settings,
        registry=registry,
        tracking=tracking,
    )
    settings = params.output
    data_from, data_repo, data_rev, data_remote = location
    ingested = ingest(
        params=settings,
        data_from=data_from,
        data_repo=data_repo,
        data_rev=data_rev,
        data_remote=data_remote,
    )
    interim = ingested.outputs["interim"]
    validated = validate(params=settings, interim=interim)
    built = build_tasks(params=settings, interim=interim, validation=validated.outputs["report"])
    task_data = built.outputs["tasks"]
    learned = baselines(params=settings, tasks=task_data)
    pretrained = pretrain(params=settings, tasks=task_data)
    backbone = pretrained.outputs["backbone"]
    trained = train(params=settings, tasks=task_data, backbone=backbone)
    checkpoints = trained.outputs["checkpoints"]
    merged = merge(params=settings, tasks=task_data, backbone=backbone, checkpoints=checkpoints)
    merged_model = merged.outputs["merged"]
    evaluated = evaluate(
        params=settings,
        tasks=task_data,
        backbone=backbone,
        merged=merged_model,
        baselines=learned.outputs["baselines"],
    )
    registered = register(
        params=settings,
        tasks=task_data,
        interim=interim,
        backbone=backbone,
        merged=merged_model,
        evaluation=evaluated.outputs["report"],
    )
    listed = recommend(
        params=settings, interim=interim, tasks=task_data, backbone=backbone, merged=merged_model
    ).after(registered)  # the published lists are the registered version's
    return {
        "check-params": params,
        "ingest": ingested,
        "validate": validated,
        "build-tasks": built,
        "baselines": learned,
        "pretrain": pretrained,
        "train": trained,
        "merge": merged,
        "evaluate": evaluated,
        "register": registered,
        "recommend": listed,
    }
