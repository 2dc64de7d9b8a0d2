"""The ``recommend`` request on a tiny real catalogue (30 ml-100k users): prompts are the task
records', the generative path ranks as evaluation does, the embedding path is exact search below
the size threshold, fusion is reciprocal-rank fusion, exclusions and filters hold, bad requests
name their field, and the pyfunc answers recommend rows."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from recfound.config import Config, load_config
from recfound.evaluation.protocols import load_eval_set
from recfound.model.bundle import load_bundle, read_spec
from recfound.model.recmodel import top_k_items
from recfound.serving.ann import IndexSettings, ItemIndex
from recfound.serving.catalogue import Catalogue, build_catalogue
from recfound.serving.pyfunc import RecFoundModel
from recfound.serving.recommend import (
    Recommender,
    RecommendLimits,
    RecommendRequestError,
    reciprocal_rank_fusion,
)
from recfound.serving.snapshot import build_index, write_serving_catalogue


@pytest.fixture(scope="module")
def cfg(tiny_catalogue_project: Path) -> Config:
    return load_config(tiny_catalogue_project / "params.yaml")


@pytest.fixture(scope="module")
def setup(cfg: Config):
    spec, _ = read_spec(cfg.paths.merged)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged)
    catalogue = build_catalogue(cfg.paths.tasks, cfg.paths.interim, cfg.tasks.sequence_length)
    index = build_index(rec, spec.task_kinds, catalogue, IndexSettings())
    recommender = Recommender(catalogue, index, lambda _t: rec, spec.task_kinds)
    return rec, catalogue, index, recommender


def _test_frame(cfg: Config, task: str) -> pd.DataFrame:
    return pd.read_parquet(Path(cfg.paths.tasks) / task / "test.parquet")


def test_prompts_are_the_task_records_prompts(cfg, setup) -> None:
    _, catalogue, _, _ = setup
    seq = _test_frame(cfg, "sequential_recommendation")
    u2i = _test_frame(cfg, "user2item")
    assert len(seq) >= 25
    for user, prompt in zip(seq["user_id"], seq["prompt"], strict=True):
        assert catalogue.next_item_prompt(catalogue.histories[user]) == prompt
    for user, prompt in zip(u2i["user_id"], u2i["prompt"], strict=True):
        assert catalogue.user_query(catalogue.histories[user]) == prompt


def test_generative_path_is_the_evaluation_ranking(cfg, setup) -> None:
    rec, catalogue, _, recommender = setup
    data = load_eval_set(cfg.paths.tasks, "test", None, 0, tasks=["sequential_recommendation"])
    frame = data.frames["sequential_recommendation"]
    earlier = data.earlier_items()
    scores = rec.catalogue_scores(frame["prompt"].tolist(), catalogue.tokens, frame.iloc[0]["task"])
    index = data.item_index
    exclude = [[index[i] for i in earlier[u]] for u in frame["user_id"]]
    expected = top_k_items(scores, exclude, 10)
    got = recommender.recommend([{"user_id": u, "k": 10} for u in frame["user_id"]])
    for row, answer in zip(expected.tolist(), got, strict=True):
        assert answer.item_ids == [catalogue.item_ids[i] for i in row]
        assert answer.path == "generative" and len(answer.titles) == 10
    for user, answer in zip(frame["user_id"], got, strict=True):
        assert not set(answer.item_ids) & set(catalogue.histories[user])


def test_embedding_path_is_exact_search_below_the_threshold(setup) -> None:
    rec, catalogue, index, recommender = setup
    assert index.kind == "flat"
    users = sorted(catalogue.histories)[:8]
    documents = rec.embed(catalogue.texts, "user2item")
    queries = rec.embed([catalogue.user_query(catalogue.histories[u]) for u in users], "user2item")
    scores = queries @ documents.T
    exclude = [[catalogue.item_index[i] for i in catalogue.histories[u]] for u in users]
    expected = top_k_items(scores, exclude, 7)
    got = recommender.recommend([{"user_id": u, "k": 7, "path": "embedding"} for u in users])
    for row, answer, s in zip(expected.tolist(), got, scores, strict=True):
        assert answer.item_ids == [catalogue.item_ids[i] for i in row]
        np.testing.assert_allclose(answer.scores, s[row].numpy(), atol=1e-5)


def test_fused_is_reciprocal_rank_fusion_of_the_two_paths(cfg, setup) -> None:
    rec, catalogue, index, _ = setup
    recommender = Recommender(
        catalogue,
        index,
        lambda _t: rec,
        read_spec(cfg.paths.merged)[0].task_kinds,
        RecommendLimits(max_k=200, fuse_depth=200),
    )
    user = sorted(catalogue.histories)[0]
    depth = recommender.limits.fuse_depth
    gen, emb, fused = recommender.recommend(
        [{"user_id": user, "k": depth, "path": p} for p in ("generative", "embedding")]
        + [{"user_id": user, "k": 10, "path": "fused"}]
    )
    expected = reciprocal_rank_fusion([gen.item_ids, emb.item_ids])[:10]
    assert fused.item_ids == [item for item, _ in expected]
    np.testing.assert_allclose(fused.scores, [s for _, s in expected])


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], constant=1)
    assert [i for i, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 2 + 1 / 3)


def test_history_exclusions_and_filters(setup) -> None:
    _, catalogue, _, recommender = setup
    user = sorted(catalogue.histories)[1]
    history = list(catalogue.histories[user])
    by_user, by_history = recommender.recommend(
        [{"user_id": user, "k": 10}, {"history": history, "k": 10}]
    )
    assert by_user.item_ids == by_history.item_ids
    extra = by_user.item_ids[:3]
    (excluded,) = recommender.recommend([{"user_id": user, "k": 10, "exclude": extra}])
    assert not set(extra) & set(excluded.item_ids)
    assert excluded.item_ids[:7] == by_user.item_ids[3:]
    (seen,) = recommender.recommend([{"user_id": user, "k": 50, "exclude_seen": False}])
    assert set(seen.item_ids) & set(history)  # the user's own items are no longer held back
    for path in ("generative", "embedding", "fused"):
        (comedy,) = recommender.recommend(
            [{"user_id": user, "k": 5, "path": path, "filter": {"genre": "comedy"}}]
        )
        assert len(comedy.item_ids) == 5
        for item in comedy.item_ids:
            assert "comedy" in catalogue.genre_sets[catalogue.item_index[item]]
    (year,) = recommender.recommend([{"history": [], "k": 4, "filter": {"year": [1995]}}])
    assert all(catalogue.years[catalogue.item_index[i]] == 1995 for i in year.item_ids)


def test_items_without_identifier_are_recommendable_by_embedding(setup) -> None:
    _, catalogue, index, recommender = setup
    unnamed = np.flatnonzero(~catalogue.has_identifier)
    assert len(unnamed) > 0  # cold items and items met only in valid/test
    row = int(unnamed[0])
    found = recommender._top_embedding(index.embeddings[row], np.array([], np.int64), None, 3)
    assert found[0][0] == row
    everything = recommender.recommend([{"history": [], "k": 100, "path": "generative"}])[0]
    assert catalogue.item_ids[row] not in everything.item_ids


@pytest.mark.parametrize(
    ("row", "field", "text"),
    [
        ({"k": 10}, "user_id", "give either 'user_id'"),
        ({"user_id": "1", "history": ["1"]}, "user_id", "not both"),
        ({"user_id": "nobody"}, "user_id", "not in the model's catalogue snapshot"),
        ({"user_id": "1", "k": 0}, "k", "serving.max_k = 100"),
        ({"user_id": "1", "k": 101}, "k", "serving.max_k = 100"),
        ({"user_id": "1", "k": "3"}, "k", "an integer"),
        ({"history": ["no-such-item"]}, "history", "history[0] = 'no-such-item' is not an item"),
        ({"history": "1 2 3"}, "history", "must be a list of item ids"),
        ({"user_id": "1", "path": "magic"}, "path", "allowed: generative, embedding, fused"),
        ({"user_id": "1", "filter": {"colour": "red"}}, "filter", "unknown attribute 'colour'"),
        ({"user_id": "1", "filter": {"year": "new"}}, "filter", "a year (integer)"),
        ({"user_id": "1", "exclude": [None]}, "exclude", "exclude[0] must be an item id"),
        ({"user_id": "1", "exclude_seen": "no"}, "exclude_seen", "true or false"),
    ],
)
def test_bad_requests_name_the_field(setup, row: dict, field: str, text: str) -> None:
    _, _, _, recommender = setup
    with pytest.raises(RecommendRequestError) as error:
        recommender.parse(row)
    assert error.value.field == field and text in str(error.value)


def test_concurrent_calls_get_the_sequential_answers(setup) -> None:
    _, catalogue, _, recommender = setup
    users = sorted(catalogue.histories)[:12]
    rows = [
        {"user_id": u, "k": 5, "path": ("generative", "embedding", "fused")[n % 3]}
        for n, u in enumerate(users)
    ]
    sequential = [recommender.recommend([r])[0] for r in rows]
    got: dict[int, object] = {}

    def client(offset: int) -> None:
        for n in range(offset, len(rows), 4):
            got[n] = recommender.recommend([rows[n]])[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[n] for n in range(len(rows))] == sequential


def test_catalogue_and_index_round_trip(cfg, setup, tmp_path: Path) -> None:
    rec, catalogue, index, _ = setup
    spec, _ = read_spec(cfg.paths.merged)
    write_serving_catalogue(
        rec, spec.task_kinds, cfg.paths.tasks, cfg.paths.interim, 12, cfg.serving, tmp_path
    )
    loaded = Catalogue.load(tmp_path / "catalogue")
    assert loaded.item_ids == catalogue.item_ids and loaded.tokens == catalogue.tokens
    assert loaded.histories == catalogue.histories and loaded.titles == catalogue.titles
    assert loaded.genre_sets == catalogue.genre_sets
    reloaded = ItemIndex.load(tmp_path / "index")
    np.testing.assert_allclose(reloaded.embeddings, index.embeddings, atol=1e-6)


def test_ivf_index_finds_the_exact_neighbours_of_clustered_items() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, 32))
    vectors = centres[rng.integers(0, 64, 20_000)] + 0.3 * rng.standard_normal((20_000, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert ItemIndex.build(vectors[:500], IndexSettings(exact_below=1000)).kind == "flat"
    ivf = ItemIndex.build(vectors, IndexSettings(exact_below=1000, nprobe=16))
    assert ivf.kind == "ivf"
    queries = vectors[:200] + 0.1 * rng.standard_normal((200, 32))
    _, approximate = ivf.search(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact, strict=True)])
    assert recall >= 0.95


def test_pyfunc_answers_recommend_rows_beside_task_rows(cfg, setup, tmp_path: Path) -> None:
    _, catalogue, _, recommender = setup
    rec, _, _, _ = setup
    spec, _ = read_spec(cfg.paths.merged)
    write_serving_catalogue(
        rec, spec.task_kinds, cfg.paths.tasks, cfg.paths.interim, 12, cfg.serving, tmp_path
    )
    model = RecFoundModel.from_dirs(cfg.paths.backbone, cfg.paths.merged, tmp_path, folded=False)
    user = sorted(catalogue.histories)[2]
    rows = [
        {"task": "recommend", "user_id": user, "k": 4, "path": "fused"},
        {"task": "user2item", "input": "Find the movie this user chooses next.\n"},
        {"task": "recommend", "history": list(catalogue.histories[user]), "k": 3},
    ]
    out = model.predict(None, rows)
    assert out["output_type"].tolist() == ["recommendations", "embedding", "recommendations"]
    expected = recommender.recommend([r for r in rows if r["task"] == "recommend"])
    for got, want in zip(out.iloc[[0, 2]].to_dict("records"), expected, strict=True):
        assert got["items"] == want.item_ids and got["titles"] == want.titles
        assert got["path"] == want.path and got["kind"] == "recommend"
        np.testing.assert_allclose(got["scores"], want.scores, atol=1e-5)
    with pytest.raises(MlflowException, match=r"row 1: 'k' is 1000"):
        model.predict(None, [rows[0], {"task": "recommend", "user_id": user, "k": 1000}])
    bare = RecFoundModel.from_dirs(cfg.paths.backbone, cfg.paths.merged)
    with pytest.raises(MlflowException, match="carries no catalogue"):
        bare.predict(None, rows[:1])
    assert torch.is_tensor(
        rec.catalogue_scores(["x"], catalogue.tokens, "sequential_recommendation")
    )
