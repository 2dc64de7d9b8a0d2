"""Component `merge`: merge the kept training checkpoints; Optuna picks method and coefficients."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def merge(
    params: str,
    tasks: Input[Dataset],
    backbone: Input[Model],
    checkpoints: Input[Model],
    merged: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> None:
    """Merge the checkpoints (recfound merge); every trial is an MLflow child run. ``merged`` is
    paths.merged; ``report`` holds ``merge.json``."""
    from recfound.stages.merge import run_merge

    cfg = stage_config(params, locals())
    log_scalars(metrics, run_merge(cfg))
