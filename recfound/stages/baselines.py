"""Stage `baselines`: train the learned baselines once per data version.

Recipe: read the leave-one-out interactions and the catalogue written by `build_tasks` → fit
SASRec (sequential, early-stopped on valid NDCG) and biased MF (ratings, early-stopped on valid
RMSE) → write ``paths.baselines`` (``sasrec/``, ``mf/``: safetensors + JSON) and
``reports/baselines.json``, one unit (``reports/manifests/baselines.json``,
:func:`recfound.artifacts.publish_unit`). Each epoch's validation figures are MLflow step metrics.

The stage depends on the data and its own code only, so DVC does not retrain the baselines when
the model changes; `evaluate` loads them with
:func:`recfound.baselines.store.load_baselines`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import torch

from recfound import artifacts
from recfound.accelerator import stage_device
from recfound.baselines.mf import BiasedMF, BiasedMFParams
from recfound.baselines.sasrec import SASRecParams, SASRecRanker
from recfound.baselines.store import MF_DIR, SASREC_DIR, load_baselines
from recfound.config import Config
from recfound.layout import ITEMS_FILE, SPLIT_INTERACTIONS_FILE, unit_manifest
from recfound.tracking.runs import TRAINING, stage_run, task_inputs

log = logging.getLogger(__name__)

__all__ = ["load_baselines", "run_baselines", "torch_threads"]

REPORT_FILE = "baselines.json"


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _log_epoch(prefix: str, record: dict[str, float]) -> None:
    step = int(record["epoch"])
    mlflow.log_metrics({f"{prefix}/{k}": v for k, v in record.items() if k != "epoch"}, step=step)


def run_baselines(cfg: Config) -> dict:
    tasks = Path(cfg.paths.tasks)
    interactions = pd.read_parquet(tasks / SPLIT_INTERACTIONS_FILE)
    item_ids = pd.read_parquet(tasks / ITEMS_FILE)["item_id"].astype(str).tolist()
    split = interactions["split"].astype(str)
    sasrec_params = SASRecParams(**cfg.baselines.sasrec.model_dump(), seed=cfg.seed)
    mf_params = BiasedMFParams(**cfg.baselines.mf.model_dump(), seed=cfg.seed)
    settings = {"baselines": cfg.baselines.model_dump(), "seed": cfg.seed}

    reports = Path(cfg.paths.reports)
    published = artifacts.publish_unit(
        unit_manifest(reports, "baselines"), writer="recfound baselines"
    )
    with (
        published as unit,
        torch_threads(cfg.baselines.threads),
        stage_run(cfg.tracking, "baselines", settings, inputs=task_inputs(cfg, *TRAINING)) as run,
    ):
        started = time.perf_counter()
        device = stage_device()
        log.info("training SASRec on %s (biased MF on the CPU)", device)
        sasrec = SASRecRanker(item_ids, sasrec_params).fit(
            interactions, on_epoch=lambda record: _log_epoch("sasrec", record), device=device
        )
        sasrec_seconds = time.perf_counter() - started

        started = time.perf_counter()
        mf = BiasedMF(mf_params).fit(
            interactions[split == "train"],
            interactions[split == "valid"],
            on_epoch=lambda record: _log_epoch("mf", record),
        )
        mf_seconds = time.perf_counter() - started

        staging = unit.directory(cfg.paths.baselines)
        sasrec.save(staging / SASREC_DIR)
        mf.save(staging / MF_DIR)

        sasrec_best = sasrec.history[sasrec.best_epoch - 1]
        mf_best = mf.history[mf.best_epoch - 1]
        k = sasrec_params.valid_k
        report = {
            "sasrec": {
                "fit_seconds": round(sasrec_seconds, 2),
                "epochs": len(sasrec.history),
                "best_epoch": sasrec.best_epoch,
                "valid_k": k,
                "valid_ndcg": sasrec_best.get("valid_ndcg"),
                "valid_recall": sasrec_best.get("valid_recall"),
            },
            "mf": {
                "fit_seconds": round(mf_seconds, 2),
                "epochs": len(mf.history),
                "best_epoch": mf.best_epoch,
                "valid_rmse": mf_best.get("valid_rmse"),
            },
            "items": len(item_ids),
            "device": str(device),
            "train_interactions": int((split == "train").sum()),
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metrics(
            {
                f"{name}/best/{key}": float(value)
                for name in ("sasrec", "mf")
                for key, value in report[name].items()
                if isinstance(value, (int, float))
            }
        )
        mlflow.log_dict(report, REPORT_FILE)
        unit.write_json(reports / REPORT_FILE, report)
    log.info(
        "baselines written to %s: SASRec %d epochs in %.0fs (valid NDCG@%d %s), MF %d epochs in "
        "%.0fs (valid RMSE %s)",
        cfg.paths.baselines,
        report["sasrec"]["epochs"],
        sasrec_seconds,
        k,
        report["sasrec"]["valid_ndcg"],
        report["mf"]["epochs"],
        mf_seconds,
        report["mf"]["valid_rmse"],
    )
    return report
