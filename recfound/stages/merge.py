"""Stage `merge`: the kept training checkpoints → one merged model (an Optuna-tuned merge).

The recipe (:func:`recfound.merge.from_config.merge_from_config`): rebuild the model from
``<paths.train>/adapter_config.json`` → split a validation sample of every task into a selection
and a report slice → score every kept checkpoint → Optuna study over method, coefficients and
density (one MLflow child run per trial) → the chosen merge, or the best checkpoint if no merge
beats it, as a bundle at ``paths.merged``; ``reports/merge.json`` and the study's figures.
"""

from __future__ import annotations

from recfound.config import Config
from recfound.merge.from_config import merge_from_config, split_validation, study_storage

__all__ = ["run_merge", "split_validation", "study_storage"]


def run_merge(cfg: Config) -> dict:
    return merge_from_config(cfg)
