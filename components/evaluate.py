"""Component `evaluate`: every task on the test split, the merged model against the baselines."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config, write_images_page


@stage_component
def evaluate(
    params: str,
    tasks: Input[Dataset],
    backbone: Input[Model],
    merged: Input[Model],
    baselines: Input[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
    summary: Output[Markdown],
    plots: Output[HTML],
) -> None:
    """Evaluate the merged model (recfound evaluate) against the baselines, with SASRec and
    biased MF from ``baselines`` (paths.baselines); logs to MLflow. ``metrics`` has the overall
    scores and each task's score; ``report`` holds ``metrics.json`` (what register reads, with
    every metric and the baselines), ``evaluation.md`` and ``plots/``; ``summary`` is evaluation.md
    for the KFP UI."""
    import pathlib
    import shutil

    from recfound.stages.evaluate import run_evaluate

    cfg = stage_config(params, locals())
    document = run_evaluate(cfg)
    scores = {task: values["score"] for task, values in document["tasks"].items()}
    log_scalars(metrics, {"overall": document["overall"], "score": scores})
    reports = pathlib.Path(report.path)
    pathlib.Path(summary.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reports / "evaluation.md", summary.path)
    write_images_page(str(reports / "plots"), plots, "Evaluation")
