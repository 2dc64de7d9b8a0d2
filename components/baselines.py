"""Component `baselines`: SASRec and biased MF, trained once per data version, for evaluate."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def baselines(
    params: str,
    tasks: Input[Dataset],
    baselines: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> None:
    """Train the learned baselines (recfound baselines); logs to MLflow. ``baselines`` is
    paths.baselines (``sasrec/``, ``mf/``); ``report`` holds ``baselines.json`` (fit time, epochs
    and best validation figures of each, also the metrics)."""
    from recfound.stages.baselines import run_baselines

    cfg = stage_config(params, locals())
    log_scalars(metrics, run_baselines(cfg))
