"""Stage `fetch-data`: the normalized tables of a data repository at a Git revision.

The first data step of a Kubeflow run (instead of `ingest`, which re-reads the raw source): it
fetches the DVC-tracked output of `ingest` (``paths.interim`` there) at the revision the run names
from the repository's DVC remote into ``paths.interim`` here, with ``data_version.json`` (the
revision and the md5 from that revision's dvc.lock), which `build-tasks` carries on and every
MLflow run logs as its dataset.
"""

from __future__ import annotations

import logging

from recfound import artifacts
from recfound.config import Config
from recfound.data.versioned import DataLocation, fetch_dvc_output
from recfound.tracking.lineage import DataVersion, write_data_version

log = logging.getLogger(__name__)


def run_fetch_data(cfg: Config, location: DataLocation) -> DataVersion:
    """Replace ``paths.interim`` with the fetched tables (only once the download succeeded)."""
    with artifacts.staged_directory(cfg.paths.interim) as staging:
        version = fetch_dvc_output(location, staging / "data")
        for item in (staging / "data").iterdir():
            item.rename(staging / item.name)
        (staging / "data").rmdir()
        write_data_version(staging, version)
    log.info("fetched %s into %s", version.describe(), cfg.paths.interim)
    return version
