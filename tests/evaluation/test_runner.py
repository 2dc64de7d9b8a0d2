"""The evaluation runner: protocols, metric blocks on hand-made records, model and baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recfound.baselines.mf import BiasedMF, BiasedMFParams
from recfound.baselines.sasrec import SASRecParams, SASRecRanker
from recfound.data.schema import TaskRecord, records_to_frame
from recfound.evaluation.baseline_predictions import (
    TrainedBaselines,
    baseline_outputs,
)
from recfound.evaluation.model_predictions import evaluate_model, model_outputs
from recfound.evaluation.outputs import (
    BootstrapSettings,
    ChoiceOutputs,
    RankOutputs,
    TextOutputs,
    metric_estimates,
    paired_difference,
    task_metrics,
)
from recfound.evaluation.protocols import (
    EvalSet,
    assign_protocols,
    can_rank_catalogue,
    candidate_outputs,
    cap_records,
    full_ranking_outputs,
    protocol_of,
    record_histories,
)
from recfound.evaluation.report import evaluation_markdown
from recfound.evaluation.scores import (
    evaluation_document,
    outputs_from_records,
    records_document,
    scored_metrics,
    summarize,
)
from recfound.metrics import token_f1
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


def choice_metrics(
    frame: pd.DataFrame, scores: list[list[float]], protocol: str, ks: list[int]
) -> dict[str, float]:
    return task_metrics(candidate_outputs(frame, scores, protocol, ks))


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
    ranks = full_ranking_outputs(records, scores, index, [["a"]], (1,)).ranks
    assert ranks.tolist() == [1]
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

    protocols = assign_protocols(data)
    baselines = {
        name: scored_metrics(per_task, protocols)
        for name, per_task in baseline_outputs(data, protocols, ks=[1, 2]).items()
    }
    # item b is found from history a by co-occurrence, ranked first among the unseen items
    assert baselines["item_knn"]["match"]["recall@1"] == pytest.approx(0.5)
    assert baselines["bm25"]["match"]["recall@1"] == pytest.approx(1.0)  # titles match queries
    assert baselines["majority"]["genre"]["exact_match"] == pytest.approx(0.5)
    assert baselines["majority"]["year"]["accuracy"] == pytest.approx(0.5)

    overall = summarize(model, data.kinds)
    expected = np.mean([model[t]["score"] for t in model])
    assert math.isclose(overall["mean_score"], expected)
    assert overall["embedding_score"] == model["match"]["score"]


# --------------------------------------------------------------------------- the protocol

SPLIT_INTERACTIONS = pd.DataFrame(  # u1: train a, b; valid c; test d (u2 only pads the catalogue)
    {
        "user_id": ["u1", "u1", "u1", "u1", "u2", "u2", "u2"],
        "item_id": ["a", "b", "c", "d", "b", "a", "c"],
        "rating": [5.0] * 7,
        "timestamp": [1, 2, 3, 4, 1, 2, 3],
        "split": ["train", "train", "valid", "test", "train", "valid", "test"],
    }
)


def next_item_set(split: str, target: str, tokens: list[str] | None = None) -> EvalSet:
    shown = ["b"]  # the prompt shows only the last train item
    record = {"prompt": "u1 watched b", "target": target.upper(), "user_id": "u1"}
    record.update(item_id=target, history_ids=shown)
    items = ITEMS.assign(token=tokens) if tokens is not None else ITEMS
    return EvalSet(
        split=split,
        frames={"user2item": frame("user2item", "embedding", [record])},
        kinds={"user2item": "embedding"},
        items=items,
        train_interactions=SPLIT_INTERACTIONS[SPLIT_INTERACTIONS["split"] == "train"],
        interactions=SPLIT_INTERACTIONS,
    )


def test_full_ranking_excludes_earlier_interactions_never_the_target() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])  # a > b > c > d
    index = {i: n for n, i in enumerate(ITEMS["item_id"])}

    test = next_item_set("test", "d")
    histories = record_histories(test.frames["user2item"], test.earlier_items())
    assert histories == [["a", "b", "c"]]  # train and valid, in time order; not only shown b
    ranks = full_ranking_outputs(test.frames["user2item"], scores, index, histories, (1,))
    assert ranks.ranks.tolist() == [1] and ranks.unmasked_ranks.tolist() == [4]

    valid = next_item_set("valid", "c")
    histories = record_histories(valid.frames["user2item"], valid.earlier_items())
    assert histories == [["a", "b"]]  # the test item d is later: it stays in the ranking
    ranks = full_ranking_outputs(valid.frames["user2item"], scores, index, histories, (1,))
    assert ranks.ranks.tolist() == [1]

    # the target is never excluded, even when an earlier interaction repeats it
    ranks = full_ranking_outputs(test.frames["user2item"], scores, index, [["a", "d"]], (1,))
    assert ranks.ranks.tolist() == [3]  # a excluded; b, c still ahead of d


def test_every_full_ranking_record_is_kept_and_the_others_are_capped() -> None:
    data = tiny_eval_set()
    many = pd.concat([data.frames["year"]] * 10, ignore_index=True)
    matches = pd.concat([data.frames["match"]] * 10, ignore_index=True)
    data.frames.update(year=many.assign(record=range(20)), match=matches.assign(record=range(20)))
    protocols = assign_protocols(data)
    capped = cap_records(data, protocols, max_per_task=5, seed=0)
    assert len(capped.frames["match"]) == 20 and len(capped.frames["year"]) == 5
    assert capped.frames["year"]["record"].is_monotonic_increasing  # keys survive sampling


def test_paired_difference_of_identical_and_shifted_systems() -> None:
    rng = np.random.default_rng(0)
    hits = rng.random(300) < 0.4
    base = RankOutputs(record=np.arange(300), user_id=[""] * 300, ranks=np.where(hits, 1, 9))
    settings = BootstrapSettings(seed=1, n_resamples=400)
    same = paired_difference(base, base, "recall@1", settings)
    assert same.value == 0.0 and same.interval == [0.0, 0.0]
    better = RankOutputs(record=np.arange(300), user_id=[""] * 300, ranks=np.where(hits, 1, 1))
    better.ranks[:100] = np.where(hits[:100], 1, 9)  # 2/3 of the misses become hits
    gain = paired_difference(better, base, "recall@1", settings)
    assert gain.low > 0 and gain.excludes(0.0)
    # pairing removes the shared variation: narrower than the two separate intervals combined
    alone = metric_estimates(better, settings)["recall@1"], metric_estimates(base, settings)
    unpaired = (alone[0].high - alone[0].low) + (
        alone[1]["recall@1"].high - alone[1]["recall@1"].low
    )
    assert gain.high - gain.low < unpaired


def test_pairing_keeps_the_label_set_and_cut_offs_of_a_task() -> None:
    """Champion and candidate evaluated on different data versions share only some records; the
    labels and ks describe the task and are not subset with them."""
    champion = ChoiceOutputs(
        record=np.arange(5),
        user_id=list("abcde"),
        labels=["yes", "no"],
        target=np.array([0, 1, 0, 1, 0]),
        predicted=np.array([0, 1, 1, 1, 0]),
    )
    candidate = ChoiceOutputs(
        record=np.arange(3, 8),
        user_id=list("defgh"),
        labels=["yes", "no"],
        target=np.array([1, 0, 1, 0, 1]),
        predicted=np.array([1, 0, 1, 0, 0]),
    )
    difference = paired_difference(candidate, champion, "accuracy", BootstrapSettings(seed=0))
    assert difference.n_records == 2 and difference.value == 0.0
    ranks = RankOutputs(record=np.arange(4), user_id=list("abcd"), ranks=np.array([1, 3, 9, 2]))
    shifted = RankOutputs(record=np.arange(2, 6), user_id=list("cdef"), ranks=np.ones(4, int))
    gain = paired_difference(shifted, ranks, "recall@5", BootstrapSettings(seed=0))
    assert gain.n_records == 2 and gain.value == 0.5


def test_outputs_round_trip_through_the_records_document() -> None:
    choice = ChoiceOutputs(
        record=np.arange(4),
        user_id=list("abcd"),
        labels=["yes", "no"],
        target=np.array([0, 1, 0, 1]),
        predicted=np.array([0, 1, 1, 1]),
        margin=np.array([2.0, -1.0, 0.5, -3.0]),
    )
    text = TextOutputs(
        record=np.arange(2), user_id=["", ""], target=["a b", "c"], output=["a", "c"]
    )
    protocols = {"ctr": "classification", "gen": "text"}
    document = json.loads(
        json.dumps(records_document({"ctr": choice, "gen": text}, protocols, "x"))
    )
    back = outputs_from_records(document)
    assert task_metrics(back["ctr"]) == task_metrics(choice)
    assert task_metrics(back["ctr"])["auc"] == 1.0 and task_metrics(back["gen"]) == task_metrics(
        text
    )


# the tiny model's tasks (match, genre, year) answer the evaluation tasks of these records
TINY_ALIASES = {
    "user2item": "match",
    "sequential_recommendation": "genre",
    "rating_prediction": "year",
}


def test_runner_ranks_the_catalogue_with_item_tokens_and_uses_trained_baselines(
    tiny_bundle,
) -> None:
    rec = load_bundle(*tiny_bundle)
    vocabulary = sorted(rec.tokenizer.get_vocab())
    tokens = [vocabulary[10], vocabulary[11], vocabulary[12], ""]  # d has no identifier
    data = next_item_set("test", "d", tokens)
    data.frames["sequential_recommendation"] = frame(
        "sequential_recommendation",
        "generative",
        [
            {
                "prompt": "u1 watched b; next?",
                "target": "C",
                "user_id": "u1",
                "item_id": "c",
                "history_ids": ["b"],
                "candidates": ["A", "C"],
                "candidate_ids": ["a", "c"],
            }
        ],
    )
    rating = {"prompt": "rate", "candidates": ["1", "2", "3", "4", "5"], "user_id": "u2"}
    data.frames["rating_prediction"] = frame(
        "rating_prediction",
        "generative",
        [{**rating, "target": "4", "label": 4.0, "item_id": "c"}] * 3,
    )
    data.kinds.update(sequential_recommendation="generative", rating_prediction="generative")
    assert not can_rank_catalogue(rec, ITEMS)
    protocols = assign_protocols(data, rec)
    assert protocols["sequential_recommendation"] == "next_item"  # the whole catalogue

    model = model_outputs(rec, data, protocols, ks=[1], batch_size=2, answered_as=TINY_ALIASES)
    assert len(model["sequential_recommendation"].ranks) == 1
    sasrec = SASRecRanker(
        ITEMS["item_id"].tolist()[::-1],  # its own column order: realigned by the runner
        SASRecParams(hidden_size=8, num_heads=1, inner_size=8, max_epochs=2, batch_size=4),
    ).fit(SPLIT_INTERACTIONS, progress=False)
    mf = BiasedMF(BiasedMFParams(factors=2, max_epochs=3)).fit(SPLIT_INTERACTIONS)
    trained = TrainedBaselines(sasrec=sasrec, biased_mf=mf)
    baselines = baseline_outputs(data, protocols, ks=[1], trained=trained)
    assert {"user2item", "sequential_recommendation"} <= set(baselines["sasrec"])
    assert "rmse" in task_metrics(baselines["biased_mf"]["rating_prediction"])

    kinds = {t: "embedding" if p == "retrieval" else "generative" for t, p in protocols.items()}
    settings = BootstrapSettings(seed=0, n_resamples=50)
    document = evaluation_document(model, baselines, protocols, kinds, settings)
    seq = document["tasks"]["sequential_recommendation"]
    assert seq["score_metric"] == "recall@10" and seq["n_records"] == 1
    assert {"recall@5", "ndcg@20", "mrr@20", "unmasked_recall@10"} <= set(seq)
    assert set(document["baselines"]) >= {"sasrec", "biased_mf", "popularity"}
    assert document["versus_best_baseline"]["user2item"]["n_records"] == 1
    assert set(document["overall_ci"]) == {"mean_score", "embedding_score", "generative_score"}
    markdown = evaluation_markdown({**document, "answered_as": {}})
    assert "| sasrec |" in markdown and "biased_mf" in markdown


def test_ablation_table_gives_paired_differences_and_marks_the_clear_ones() -> None:
    from recfound.stages.ablate import ablation_differences, ablation_markdown

    n = 200
    hits = np.arange(n) < 100

    def row(task_hits: dict[str, np.ndarray]) -> dict:
        records = {
            t: RankOutputs(record=np.arange(n), user_id=[""] * n, ranks=np.where(h, 1, 50))
            for t, h in task_hits.items()
        }
        tasks = {
            t: {"kind": "generative", "score_metric": "recall@1", "score": float(h.mean())}
            for t, h in task_hits.items()
        }
        return {"overall": {}, "tasks": tasks, "records": records}

    slightly = hits.copy()
    slightly[:3] = False  # -0.015: noise
    results = {
        "recfound": row({"a": hits, "b": hits}),
        "without_merge": row({"a": slightly, "b": np.zeros(n, dtype=bool)}),  # b: -0.5
    }
    differences = ablation_differences(results, BootstrapSettings(seed=0, n_resamples=300))
    tasks = differences["without_merge"]["tasks"]
    assert tasks["a"]["difference"] == pytest.approx(-0.015) and not tasks["a"]["excludes_zero"]
    assert tasks["b"]["difference"] == pytest.approx(-0.5) and tasks["b"]["excludes_zero"]
    group = differences["without_merge"]["groups"]["generative"]
    assert group["difference"] == pytest.approx(-0.2575) and group["excludes_zero"]
    markdown = ablation_markdown(results, differences)
    assert "| without_merge | -0.0150 [" in markdown and "] *" in markdown


def test_ablation_seeds_give_the_spread_and_the_relative_gain() -> None:
    from recfound.stages.ablate import seed_spread, seeds_markdown

    def result(mean: float, embedding: float, generative: float) -> dict:
        overall = {"mean_score": mean, "embedding_score": embedding, "generative_score": generative}
        return {"overall": overall, "tasks": {"user2item": {"score": embedding}}}

    results = {
        "recfound": result(0.30, 0.20, 0.40),
        "recfound_seed1": result(0.32, 0.22, 0.42),
        "without_all": result(0.25, 0.20, 0.30),
        "without_all_seed1": result(0.27, 0.20, 0.34),
    }
    seeds = {
        "recfound": ("recfound", 42),
        "recfound_seed1": ("recfound", 1),
        "without_all": ("without_all", 42),
        "without_all_seed1": ("without_all", 1),
    }
    spread = seed_spread(results, seeds)
    full = spread["rows"]["recfound"]
    assert full["mean"]["mean_score"] == pytest.approx(0.31)
    assert full["sd"]["mean_score"] == pytest.approx(np.std([0.30, 0.32], ddof=1))
    gain = spread["relative_gain_full_vs_without_all"]
    # seeds in increasing order: 1, then 42
    assert gain["generative_score"]["per_seed"] == pytest.approx([0.42 / 0.34 - 1, 0.4 / 0.3 - 1])
    assert gain["user2item"]["per_seed"] == pytest.approx([0.1, 0.0])
    assert "| recfound | 42, 1 | " in seeds_markdown(spread)
