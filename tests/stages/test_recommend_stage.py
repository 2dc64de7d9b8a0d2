"""The batch `recommend` stage on a tiny pipeline: every user's list is written, and its Recall@10
against the test items is the `evaluate` stage's figure for the same path (generative:
sequential_recommendation; embedding: user2item), user by user."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recfound.config import load_config
from recfound.stages.evaluate import run_evaluate
from recfound.stages.recommend import run_recommend

pytestmark = pytest.mark.slow


def test_batch_lists_agree_with_the_evaluate_stage(
    tiny_catalogue_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tiny_catalogue_project)
    cfg = load_config(tiny_catalogue_project / "params.yaml")
    # 100 items per user: the random tiny model's lists then hold some targets (about one user
    # in ten), so agreeing user by user at 10 and at 100 is not agreeing on zeros
    # evaluate ranks each path alone here (its default fuses next-item tasks with the user2item
    # embedding: that figure is the batch "fused" path's cousin, not the generative path's)
    cfg = cfg.model_copy(
        update={
            "recommend": cfg.recommend.model_copy(update={"k": 100}),
            "evaluate": cfg.evaluate.model_copy(update={"fusion": {}}),
        }
    )
    evaluation = run_evaluate(cfg)
    report = run_recommend(cfg)

    lists = pd.read_parquet(Path(cfg.paths.recommendations) / "recommendations.parquet")
    interactions = pd.read_parquet(Path(cfg.paths.tasks) / "interactions.parquet")
    users = set(interactions["user_id"].astype(str))
    assert set(lists["path"]) == {"generative", "embedding", "fused"}
    for _path, frame in lists.groupby("path"):
        assert set(frame["user_id"]) == users
        assert (frame.groupby("user_id")["rank"].max() == cfg.recommend.k).all()
    seen = interactions[interactions["split"] != "test"].groupby("user_id")["item_id"].agg(set)
    for user, item in zip(lists["user_id"], lists["item_id"], strict=True):
        assert item not in seen[user]

    records = json.loads((Path(cfg.paths.reports) / "eval_records.json").read_text())["tasks"]
    for path, task in (("generative", "sequential_recommendation"), ("embedding", "user2item")):
        figure = report["paths"][path]["test"]["recall@10"]
        assert figure == pytest.approx(evaluation["tasks"][task]["recall@10"], abs=1e-12)
        outputs = records[task]["outputs"]
        top = lists[lists["path"] == path].groupby("user_id")["item_id"].agg(list)
        targets = interactions[interactions["split"] == "test"].set_index("user_id")["item_id"]
        for cutoff in (10, 100):
            ranks = zip(outputs["user_id"], outputs["ranks"], strict=True)
            hits = {u: r <= cutoff for u, r in ranks}
            assert {u: targets[u] in top[u][:cutoff] for u in hits} == hits
        assert sum(hits.values()) >= 2  # at 100
    assert report["paths"]["generative"]["users_per_second"] > 0
    assert report["fusion"]["judged_on"] == "valid"
    assert json.loads((Path(cfg.paths.reports) / "recommend.json").read_text()) == report
