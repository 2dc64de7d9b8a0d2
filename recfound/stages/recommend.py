"""Stage `recommend`: every user's top-k from the merged model, the way teams publish daily lists.

Recipe: load the bundle at ``paths.merged`` on ``paths.backbone`` → the serving catalogue of
``paths.tasks`` (every item; each user's train + valid history, as the registered model carries
it) and its ANN index over the ``user2item`` item embeddings → for each path of
``recommend.paths`` (generative, embedding, fused) every user's top ``recommend.k``, seen items
excluded (:class:`recfound.serving.recommend.Recommender`, the code the served ``recommend``
request runs) → ``<paths.recommendations>/recommendations.parquet`` (``user_id``, ``path``,
``rank``, ``item_id``, ``title``, ``score``) and ``<paths.reports>/recommend.json``: users per
second per path, and each path's Recall@10 / NDCG@10 against the users' test items; the two are
one unit (``reports/manifests/recommend.json``, :func:`recfound.artifacts.publish_unit`).

The generative lists are ranked exactly as ``evaluate`` ranks ``sequential_recommendation``
(same prompt, identifier logits, every item the user met before the target excluded), so their
Recall@10 is the evaluate stage's figure (tests/stages/test_recommend_stage.py checks it).

Fusion is judged on **validation**: the same lists built from train histories only, scored
against the validation items, with the paired bootstrap interval of fused − the better single
path (``fusion`` in the report). The test figures are reported beside it, not used to choose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from recfound import artifacts
from recfound.accelerator import stage_device
from recfound.config import Config
from recfound.layout import unit_manifest
from recfound.model.bundle import load_bundle, read_spec
from recfound.serving.catalogue import Catalogue, build_catalogue, user_targets
from recfound.serving.recommend import Recommendation, Recommender, RecommendLimits
from recfound.serving.snapshot import build_index, index_settings
from recfound.tracking.runs import stage_run, task_inputs

log = logging.getLogger(__name__)

RECOMMENDATIONS_FILE = "recommendations.parquet"
REPORT_FILE = "recommend.json"
CUTOFF = 10
BOOTSTRAP_RESAMPLES = 1000


def list_metrics(
    lists: Mapping[str, Sequence[str]], targets: Mapping[str, str], cutoff: int = CUTOFF
) -> dict[str, Any]:
    """Recall@cutoff (= HR with one target) and NDCG@cutoff of each user's list against their
    target, over the users that have a target; per-user hits for paired comparisons."""
    users = [u for u in lists if u in targets]
    gains = []
    for user in users:
        top = list(lists[user])[:cutoff]
        target = targets[user]
        gains.append(1.0 / np.log2(top.index(target) + 2) if target in top else 0.0)
    gains_arr = np.array(gains, dtype=np.float64)
    hits = (gains_arr > 0).astype(np.float64)
    return {
        "users": len(users),
        f"recall@{cutoff}": float(hits.mean()) if len(users) else 0.0,
        f"ndcg@{cutoff}": float(gains_arr.mean()) if len(users) else 0.0,
        "_hits": dict(zip(users, hits, strict=True)),
    }


def paired_interval(
    a: Mapping[str, float], b: Mapping[str, float], seed: int
) -> dict[str, float | int]:
    """Mean of ``a − b`` over shared users and its 95% percentile bootstrap interval."""
    users = sorted(set(a) & set(b))
    diff = np.array([a[u] - b[u] for u in users], dtype=np.float64)
    if not len(diff):
        return {"difference": 0.0, "low": 0.0, "high": 0.0, "users": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP_RESAMPLES, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "difference": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "users": len(users),
    }


def recommend_all(
    recommender: Recommender, users: Sequence[str], k: int, path: str, batch_size: int
) -> list[Recommendation]:
    """Every user's top ``k`` on ``path`` (their snapshot history, seen items excluded)."""
    out: list[Recommendation] = []
    for start in range(0, len(users), batch_size):
        rows = [{"user_id": u, "k": k, "path": path} for u in users[start : start + batch_size]]
        out += recommender.recommend(rows)
    return out


def _recommender(rec, task_kinds, catalogue: Catalogue, index, cfg: Config) -> Recommender:
    limits = RecommendLimits(
        max_k=max(cfg.recommend.k, cfg.serving.max_k),
        default_k=min(cfg.serving.default_k, cfg.recommend.k),
        max_history=cfg.serving.max_history,
        default_path=cfg.serving.recommend_path,
        fuse_depth=cfg.serving.fuse_depth,
    )
    return Recommender(
        catalogue, index, lambda _task: rec, task_kinds, limits, cfg.recommend.batch_size
    )


def run_recommend(cfg: Config) -> dict[str, Any]:
    """Run the stage; returns the report written to ``reports/recommend.json``."""
    spec, _ = read_spec(cfg.paths.merged)
    task_kinds = dict(spec.task_kinds)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged, device=stage_device())
    tasks = Path(cfg.paths.tasks)
    k = cfg.recommend.k
    catalogue = build_catalogue(tasks, cfg.paths.interim, cfg.tasks.sequence_length)
    start = time.perf_counter()
    index = build_index(rec, task_kinds, catalogue, index_settings(cfg.serving, cfg.seed))
    index_seconds = time.perf_counter() - start
    recommender = _recommender(rec, task_kinds, catalogue, index, cfg)
    paths = [p for p in cfg.recommend.paths if p in recommender.paths]
    skipped = sorted(set(cfg.recommend.paths) - set(paths))
    if skipped:
        log.warning("paths %s need tasks this model lacks: skipped", skipped)
    # validation: histories of the training split only, judged by the validation items
    valid_catalogue = build_catalogue(
        tasks, cfg.paths.interim, cfg.tasks.sequence_length, snapshot_splits=("train",)
    )
    valid_recommender = _recommender(rec, task_kinds, valid_catalogue, index, cfg)
    targets = {"test": user_targets(tasks, "test"), "valid": user_targets(tasks, "valid")}
    users = sorted(catalogue.histories, key=_user_key)
    valid_users = sorted(t for t in targets["valid"] if t in valid_catalogue.histories)

    frames, report_paths, hits = [], {}, {}
    for path in paths:
        start = time.perf_counter()
        results = recommend_all(recommender, users, k, path, cfg.recommend.batch_size)
        seconds = time.perf_counter() - start
        lists = {u: r.item_ids for u, r in zip(users, results, strict=True)}
        test = list_metrics(lists, targets["test"])
        valid_results = recommend_all(
            valid_recommender, valid_users, k, path, cfg.recommend.batch_size
        )
        valid = list_metrics(
            {u: r.item_ids for u, r in zip(valid_users, valid_results, strict=True)},
            targets["valid"],
        )
        hits[path] = valid.pop("_hits")
        test.pop("_hits")
        report_paths[path] = {
            "seconds": round(seconds, 3),
            "users_per_second": round(len(users) / seconds, 1) if seconds > 0 else None,
            "test": test,
            "valid": valid,
        }
        frames.append(_list_frame(users, results, path))
        log.info(
            "%s: %d users in %.1f s (%.0f users/s); test recall@%d %.4f, valid %.4f",
            path,
            len(users),
            seconds,
            len(users) / max(seconds, 1e-9),
            CUTOFF,
            test[f"recall@{CUTOFF}"],
            valid[f"recall@{CUTOFF}"],
        )

    fusion = None
    if {"generative", "embedding", "fused"} <= set(hits):
        recall = {p: report_paths[p]["valid"][f"recall@{CUTOFF}"] for p in hits}
        best = max(("generative", "embedding"), key=recall.__getitem__)
        fusion = {
            "method": "reciprocal-rank fusion, 1/(60 + rank) summed over the two paths' top "
            f"{cfg.serving.fuse_depth}",
            "judged_on": "valid",
            "metric": f"recall@{CUTOFF}",
            "best_single_path": best,
            "fused_minus_best_single": paired_interval(hits["fused"], hits[best], cfg.seed),
        }
        diff = fusion["fused_minus_best_single"]
        fusion["helps"] = bool(diff["low"] > 0)
        fusion["hurts"] = bool(diff["high"] < 0)

    table = pd.concat(frames, ignore_index=True) if frames else _list_frame([], [], "")
    out_dir = Path(cfg.paths.recommendations)
    reports = Path(cfg.paths.reports)
    report = {
        "k": k,
        "users": len(users),
        "items": len(catalogue),
        "items_with_identifier": int(catalogue.has_identifier.sum()),
        "index": {"kind": index.kind if index else None, "seconds": round(index_seconds, 3)},
        "paths": report_paths,
        "fusion": fusion,
        "output": str(out_dir / RECOMMENDATIONS_FILE),
    }
    settings = {"recommend": cfg.recommend.model_dump(), "serving": cfg.serving.model_dump()}
    published = artifacts.publish_unit(
        unit_manifest(reports, "recommend"), writer="recfound recommend"
    )
    with (
        published as unit,
        stage_run(cfg.tracking, "recommend", settings, inputs=task_inputs(cfg, "test")),
    ):
        lists = unit.write_parquet(out_dir / RECOMMENDATIONS_FILE, table)
        speed = {
            f"{p}/users_per_second": v["users_per_second"] or 0.0 for p, v in report_paths.items()
        }
        mlflow.log_metrics(
            {
                f"{path}/{split}_{name}".replace("@", "_at_"): float(value)
                for path, values in report_paths.items()
                for split in ("test", "valid")
                for name, value in values[split].items()
            }
            | speed
        )
        mlflow.log_artifact(str(lists), "recommendations")
        mlflow.log_dict(report, REPORT_FILE)
        unit.write_json(reports / REPORT_FILE, report)
    return report


def _user_key(user: str) -> tuple[int, str]:
    return (0, f"{int(user):012d}") if user.isdigit() else (1, user)


def _list_frame(users: Sequence[str], results: Sequence[Recommendation], path: str) -> pd.DataFrame:
    columns = ("user_id", "path", "rank", "item_id", "title", "score")
    rows: dict[str, list] = {k: [] for k in columns}
    for user, result in zip(users, results, strict=True):
        for rank, (item, title, score) in enumerate(
            zip(result.item_ids, result.titles, result.scores, strict=True), start=1
        ):
            rows["user_id"].append(user)
            rows["path"].append(path)
            rows["rank"].append(rank)
            rows["item_id"].append(item)
            rows["title"].append(title)
            rows["score"].append(score)
    frame = pd.DataFrame(rows)
    return frame.astype({"rank": "int32", "score": "float64"})
