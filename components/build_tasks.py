"""Component `build-tasks`: tables → validated train/valid/test datasets of every task."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def build_tasks(
    params: str,
    interim: Input[Dataset],
    validation: Input[Artifact],
    tasks: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> None:
    """Build and validate the task datasets (recfound build-tasks): record counts per task and
    split as metrics; ``report`` holds ``task_counts.json`` and ``validation/tasks.json``. The
    tables must have passed ``validation`` (validate's report, read by the library)."""
    import json
    import pathlib

    from recfound.stages.build_tasks import run_build_tasks

    cfg = stage_config(params, locals())
    run_build_tasks(cfg, pathlib.Path(validation.path) / "validation" / "tables.json")
    log_scalars(metrics, json.loads((pathlib.Path(report.path) / "task_counts.json").read_text()))
