"""Component `pretrain`: pretrain the builtin backbone (or point at the given checkpoint)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def pretrain(
    params: str,
    tasks: Input[Dataset],
    backbone: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> None:
    """Pretrain the backbone (recfound pretrain); logs to MLflow. ``report`` holds
    ``pretrain.json`` and ``plots/pretrain_heldout_loss.json``."""
    from recfound.stages.pretrain import run_pretrain

    cfg = stage_config(params, locals())
    log_scalars(metrics, run_pretrain(cfg))
