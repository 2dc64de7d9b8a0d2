"""The learned baselines as the `baselines` stage saves them under ``paths.baselines``."""

from __future__ import annotations

from pathlib import Path

from recfound.baselines.mf import BiasedMF
from recfound.baselines.sasrec import SASRecRanker

# Sub-directories of ``paths.baselines`` (written by the `baselines` stage).
SASREC_DIR = "sasrec"
MF_DIR = "mf"


def load_baselines(directory: str | Path) -> tuple[SASRecRanker, BiasedMF]:
    """The SASRec ranker and the biased MF that `recfound baselines` saved in ``directory``."""
    directory = Path(directory)
    return SASRecRanker.load(directory / SASREC_DIR), BiasedMF.load(directory / MF_DIR)
