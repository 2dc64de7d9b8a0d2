"""Stage `baselines` on tiny params: trains SASRec + MF, writes models and report, loads back."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recfound.baselines.store import load_baselines
from recfound.config import load_config
from recfound.stages.baselines import run_baselines
from tests.baselines.test_sasrec import ITEMS, ordered_interactions
from tests.conftest import write_tiny_params


@pytest.fixture()
def tasks_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding only what `build_tasks` writes for the baselines."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tasks = tmp_path / "data" / "tasks"
    tasks.mkdir(parents=True)
    ordered_interactions(n_users=40).to_parquet(tasks / "interactions.parquet", index=False)
    items = ITEMS + ["never-seen"]
    pd.DataFrame({"item_id": items, "text": items, "cold": [False] * 50 + [True]}).to_parquet(
        tasks / "items.parquet", index=False
    )
    write_tiny_params(
        tmp_path / "params.yaml",
        baselines={"threads": 1},
        tracking={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_baselines_stage_trains_saves_and_reports(tasks_project: Path) -> None:
    cfg = load_config(tasks_project / "params.yaml")
    report = run_baselines(cfg)

    written = json.loads((tasks_project / "reports" / "baselines.json").read_text())
    assert written == report
    assert 1 <= report["sasrec"]["epochs"] <= 4 and 0 <= report["sasrec"]["valid_ndcg"] <= 1
    assert report["mf"]["valid_rmse"] >= 0 and report["items"] == 51

    sasrec, mf = load_baselines(tasks_project / "models" / "baselines")
    scores = sasrec.scores([["i1", "i2"]])
    assert scores.shape == (1, 51)  # the never-seen item still has a column
    assert np.isfinite(mf.predict(["u1", "nobody"], ["i1", "i2"])).all()

    run = mlflow.get_run(report["mlflow_run_id"])
    assert run.data.tags["recfound.stage"] == "baselines"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "sasrec/valid_ndcg")
    assert [m.step for m in history] == list(range(1, report["sasrec"]["epochs"] + 1))
