"""Component `validate`: Great Expectations on the normalized tables; a failure stops the run."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def validate(
    params: str, interim: Input[Dataset], metrics: Output[Metrics], report: Output[Artifact]
) -> None:
    """Validate the tables (recfound validate): expectation counts as metrics; ``report`` holds
    ``validation/tables.json`` and the GX data docs (``validation/data_docs/``)."""
    from recfound.stages.validate import run_validate

    result = run_validate(stage_config(params, locals()))
    log_scalars(metrics, result.statistics)
