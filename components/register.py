"""Component `register`: log and register the merged model in MLflow; promote it if it wins."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def register(
    params: str,
    tasks: Input[Dataset],
    interim: Input[Dataset],
    backbone: Input[Model],
    merged: Input[Model],
    evaluation: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> None:
    """Register the model (recfound register): alias ``champion`` if it passes the gates, else
    ``challenger``. ``tasks`` gives the data version recorded with the model and, with
    ``interim`` (titles, genres), the catalogue it carries for ``recommend``; ``evaluation`` is
    evaluate's report (with ``metrics.json``), copied into ``report``, which is paths.reports here
    and receives ``registry.json``."""
    import shutil

    from recfound.stages.register import run_register

    shutil.copytree(evaluation.path, report.path, dirs_exist_ok=True)
    cfg = stage_config(params, locals())
    log_scalars(metrics, run_register(cfg))
