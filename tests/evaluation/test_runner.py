"""The evaluation runner: protocols, metric blocks on hand-made records, model and baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recfound.data.schema import TaskRecord, records_to_frame
from recfound.evaluation.outputs import token_f1
from recfound.evaluation.runner import (
    EvalSet,
    choice_metrics,
    evaluate_baselines,
    evaluate_model,
    protocol_of,
    retrieval_ranks,
    summarize,
)
from recfound.model.bundle import load_bundle

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d"],
        "text": ["Alien (1979) action", "Babe (1995) comedy", "Casino (1995) drama", "Dune (1984)"],
    }
)
TRAIN = pd.DataFrame(  # c is the most popular item; a and b co-occur
    {"user_id": ["u1", "u1", "u2", "u2", "u3", "u3"], "item_id": ["a", "b", "a", "b", "c", "c"]}
)


def frame(task: str, kind: str, rows: list[dict]) -> pd.DataFrame:
    return records_to_frame([TaskRecord(task=task, kind=kind, split="test", **r) for r in rows])


def test_protocol_follows_the_records() -> None:
    assert protocol_of(frame("x", "embedding", [{"prompt": "q", "target": "t"}])) == "retrieval"
    assert protocol_of(frame("x", "generative", [{"prompt": "q", "target": "t"}])) == "text"
    yes_no = {"prompt": "q", "target": "no", "candidates": ["yes", "no"], "label": 0.0}
    assert protocol_of(frame("x", "generative", [yes_no])) == "classification"
    rating = {"prompt": "q", "target": "4", "candidates": ["1", "2", "3", "4", "5"], "label": 4.0}
    assert protocol_of(frame("x", "generative", [rating])) == "rating"
    ranked = {"prompt": "q", "target": "B", "candidates": ["A", "B"], "candidate_ids": ["a", "b"]}
    assert protocol_of(frame("x", "generative", [ranked])) == "ranking"


def test_choice_metrics_rank_rate_and_classify() -> None:
    ranked = frame(
        "r",
        "generative",
        [
            {
                "prompt": "q",
                "target": "B",
                "candidates": ["A", "B", "C"],
                "candidate_ids": ["a", "b", "c"],
            },
            {
                "prompt": "q",
                "target": "A",
                "candidates": ["A", "B", "C"],
                "candidate_ids": ["a", "b", "c"],
            },
        ],
    )
    values = choice_metrics(ranked, [[0.1, 0.9, 0.0], [0.1, 0.9, 0.0]], "ranking", ks=[1, 2])
    assert values["recall@1"] == pytest.approx(0.5) and values["hr@2"] == pytest.approx(1.0)
    assert values["mrr"] == pytest.approx((1 + 1 / 2) / 2)

    rows = [
        {"prompt": "q", "target": t, "candidates": ["1", "2", "3"], "label": float(t)}
        for t in ("1", "3")
    ]
    rating = choice_metrics(frame("x", "generative", rows), [[9, 0, 0], [0, 0, 9]], "rating", [1])
    assert rating["accuracy"] == 1.0 and rating["f1"] == pytest.approx(2 / 3)  # class 2 unseen
    assert rating["rmse"] < 0.01  # confident right answers: expected rating ~ the label

    rows = [
        {"prompt": "q", "target": t, "candidates": ["yes", "no"], "label": float(t == "yes")}
        for t in ("yes", "no", "no")
    ]
    binary = choice_metrics(
        frame("x", "generative", rows), [[2, 0], [0, 1], [1, 0]], "classification", [1]
    )
    assert binary["accuracy"] == pytest.approx(2 / 3) and binary["auc"] == pytest.approx(1.0)


def test_retrieval_excludes_history_and_text_overlap() -> None:
    records = frame(
        "u2i", "embedding", [{"prompt": "q", "target": "t", "item_id": "b", "history_ids": ["a"]}]
    )
    index = {i: n for n, i in enumerate(ITEMS["item_id"])}
    scores = np.array([[0.9, 0.8, 0.1, 0.0]])  # the history item a outranks b but is excluded
    assert retrieval_ranks(records, scores, index).tolist() == [1]
    assert token_f1("action movies from 1997", "movies from 1997") == pytest.approx(0.857, abs=1e-3)
    assert token_f1("x", "") == 0.0


def tiny_eval_set() -> EvalSet:
    frames = {
        "match": frame(
            "match",
            "embedding",
            [
                {"prompt": "Alien", "target": "Alien (1979) action", "item_id": "a"},
                {
                    "prompt": "Babe",
                    "target": "Babe (1995) comedy",
                    "item_id": "b",
                    "history_ids": ["a"],
                },
            ],
        ),
        "genre": frame(
            "genre",
            "generative",
            [
                {"prompt": "Alien (1979)", "target": "Action"},
                {"prompt": "Babe", "target": "Comedy"},
            ],
        ),
        "year": frame(
            "year",
            "generative",
            [
                {"prompt": "Alien", "target": "yes", "candidates": ["yes", "no"], "label": 1.0},
                {"prompt": "Babe", "target": "no", "candidates": ["yes", "no"], "label": 0.0},
            ],
        ),
    }
    return EvalSet(
        split="test",
        frames=frames,
        kinds={"match": "embedding", "genre": "generative", "year": "generative"},
        items=ITEMS,
        train_interactions=TRAIN,
        train_targets={"genre": ["Action", "Action", "Drama"], "year": ["no", "no", "yes"]},
    )


def test_model_and_baselines_score_every_task(tiny_bundle) -> None:
    data = tiny_eval_set()
    rec = load_bundle(*tiny_bundle)
    model = evaluate_model(rec, data, ks=[1, 2], max_new_tokens=3, batch_size=2)
    assert set(model) == {"match", "genre", "year"}
    assert model["match"]["score_metric"] == "mrr@20" and 0 <= model["match"]["score"] <= 1
    assert model["genre"]["score_metric"] == "token_f1"
    assert model["year"]["score_metric"] == "f1" and "auc" in model["year"]
    quick = evaluate_model(rec, data, ks=[1], quick=True)
    assert quick["genre"]["score_metric"] == "token_accuracy"

    baselines = evaluate_baselines(data, ks=[1, 2])
    # item b is found from history a by co-occurrence, ranked first among the unseen items
    assert baselines["item_knn"]["match"]["recall@1"] == pytest.approx(0.5)
    assert baselines["bm25"]["match"]["recall@1"] == pytest.approx(1.0)  # titles match queries
    assert baselines["majority"]["genre"]["exact_match"] == pytest.approx(0.5)
    assert baselines["majority"]["year"]["accuracy"] == pytest.approx(0.5)

    overall = summarize(model, data.kinds)
    expected = np.mean([model[t]["score"] for t in model])
    assert math.isclose(overall["mean_score"], expected)
    assert overall["embedding_score"] == model["match"]["score"]
