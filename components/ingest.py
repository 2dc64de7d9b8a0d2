"""Component `ingest`: the run's first data step → the normalized tables (``paths.interim``).

With ``data_from="dvc"`` (the default) it fetches the DVC-tracked tables of the data repository
``data_repo`` at ``data_rev`` from its DVC remote (recfound fetch-data): the run trains on the
data a user reproduced and reviewed, and its version (commit and md5 from dvc.lock) travels in
the artifact as ``data_version.json``. With ``data_from="raw"`` it re-reads data.source
(recfound ingest), for a first run before any data is versioned.
"""

from kfp.dsl import Dataset, Output

from components.runtime import stage_component, stage_config


@stage_component
def ingest(
    params: str,
    data_from: str,
    data_repo: str,
    data_rev: str,
    data_remote: str,
    interim: Output[Dataset],
) -> None:
    """Fetch the versioned tables (``dvc``) or read data.source (``raw``) into ``interim``."""
    cfg = stage_config(params, locals())
    if data_from == "raw":
        from recfound.stages.ingest import run_ingest

        run_ingest(cfg)
    elif data_from == "dvc":
        from recfound.data.versioned import DataLocation
        from recfound.stages.fetch_data import run_fetch_data

        location = DataLocation(data_repo, rev=data_rev or None, remote=data_remote or None)
        version = run_fetch_data(cfg, location)
        interim.metadata.update(version.to_dict())
    else:
        raise ValueError(f"data_from must be 'dvc' or 'raw', got {data_from!r}")
