"""Component `ingest`: the configured source → the normalized tables (``paths.interim``)."""

from kfp.dsl import Dataset, Output

from components.runtime import stage_component, stage_config


@stage_component
def ingest(params: str, interim: Output[Dataset]) -> None:
    """Read data.source and write interactions, items and users as parquet (recfound ingest)."""
    from recfound.stages.ingest import run_ingest

    run_ingest(stage_config(params, interim=interim.path))
