"""``mlflow models serve`` answers ``recommend`` from the catalogue the registered model carries:
three users get k valid, unseen items each, the same top-10 as the offline ranking of the same
path, and four concurrent clients get the sequential answers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from recfound.config import load_config
from recfound.model.bundle import load_bundle, read_spec
from recfound.serving.catalogue import build_catalogue
from recfound.serving.recommend import Recommender
from recfound.serving.snapshot import build_index, index_settings
from recfound.stages.register import run_register
from tests.tracking.conftest import mlflow_cli_on_localhost, post_json, write_metrics

pytestmark = pytest.mark.slow
K = 10


def test_served_recommend_equals_the_offline_ranking(
    tiny_catalogue_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tiny_catalogue_project / "params.yaml")
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": "art"}
    paths = cfg.paths.model_copy(update={"reports": str(tmp_path / "reports")})
    cfg = cfg.model_copy(
        update={"tracking": cfg.tracking.model_copy(update=tracking), "paths": paths}
    )
    write_metrics(
        Path(cfg.paths.reports) / "metrics.json",
        0.2,
        {"sequential_recommendation": 0.2, "user2item": 0.2},
    )
    report = run_register(cfg)
    assert report["catalogue"]["items"] > 900 and report["catalogue"]["index"] == "flat"

    spec, _ = read_spec(cfg.paths.merged)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged)
    catalogue = build_catalogue(cfg.paths.tasks, cfg.paths.interim, cfg.tasks.sequence_length)
    index = build_index(rec, spec.task_kinds, catalogue, index_settings(cfg.serving, cfg.seed))
    offline = Recommender(catalogue, index, lambda _t: rec, spec.task_kinds)
    users = sorted(catalogue.histories)[:3]
    rows = [
        {"task": "recommend", "user_id": u, "k": K, "path": p}
        for u in users
        for p in ("generative", "embedding", "fused")
    ]
    expected = offline.recommend([{k: v for k, v in r.items() if k != "task"} for r in rows])

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking["tracking_uri"]}
    env.pop("MLFLOW_REGISTRY_URI", None)
    args = ["models", "serve", "-m", "models:/recfound@champion", "--env-manager", "local"]
    with mlflow_cli_on_localhost([*args, "--workers", "1"], tmp_path, "/ping", env) as url:
        url = f"{url}/invocations"
        sequential = [post_json(url, {"dataframe_records": [row]}) for row in rows]
        assert all(status == 200 for status, _ in sequential), sequential[0]
        answers = [pd.DataFrame(body["predictions"]).iloc[0] for _, body in sequential]
        for row, answer, want in zip(rows, answers, expected, strict=True):
            items = list(answer["items"])
            assert len(items) == K and len(set(items)) == K
            assert set(items) <= set(catalogue.item_index)
            assert not set(items) & set(catalogue.histories[row["user_id"]])
            assert answer["path"] == row["path"] and len(answer["titles"]) == K
            assert items == want.item_ids, row
        status, body = post_json(url, {"dataframe_records": [{**rows[0], "k": 0}]})
        assert status == 400 and "row 0: 'k' is 0" in body["message"]

        order = [i % len(rows) for i in range(4 * len(rows))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(
                pool.map(lambda i: post_json(url, {"dataframe_records": [rows[i]]}), order)
            )
        for i, answer in zip(order, concurrent, strict=True):
            assert answer == sequential[i]
