"""Task datasets on real MovieLens-100K: coverage, leakage, cold items, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recfound.config import ALL_TASKS, EMBEDDING_TASKS, GENERATIVE_TASKS, TasksConfig
from recfound.data import schema as S
from recfound.data.build import TaskDatasets, build_task_datasets
from recfound.data.sources import load_ml100k
from recfound.data.splits import split_leave_one_out
from recfound.data.tasks import TASK_BUILDERS

SEED = 7
SMALL = TasksConfig(
    max_train_per_task=200, max_train_next_item=300, max_eval_per_task=50, history_length=5
)
FULL_RANKING_TASKS = ("user2item", "sequential_recommendation")


@pytest.fixture(scope="module")
def ml100k() -> S.Tables:
    return load_ml100k()


@pytest.fixture(scope="module")
def built(ml100k: S.Tables) -> TaskDatasets:
    return build_task_datasets(ml100k, SMALL, seed=SEED)


def _titles(tables: S.Tables) -> dict[str, str]:
    items = tables.items
    return {
        i: f"{t} ({y})" if not pd.isna(y) else t
        for i, t, y in zip(items["item_id"], items["title"], items["year"], strict=True)
    }


def _held_out_by_user(tables: S.Tables, built: TaskDatasets) -> dict[str, set[str]]:
    """Each user's valid and test items: from leave-one-out on the warm interactions, plus every
    item that is the target of a valid/test record about that user in any task."""
    warm = tables.interactions[~tables.interactions["item_id"].isin(built.cold_items)]
    split = split_leave_one_out(warm)
    held = split[split["split"] != "train"]
    by_user: dict[str, set[str]] = held.groupby("user_id")["item_id"].agg(set).to_dict()
    for splits in built.frames.values():
        for name in ("valid", "test"):
            frame = splits[name]
            for user, item in zip(frame["user_id"], frame["item_id"], strict=True):
                if user and item and item not in built.cold_items:
                    by_user.setdefault(user, set()).add(item)
    return by_user


def test_registry_covers_every_configured_task() -> None:
    assert set(TASK_BUILDERS) == set(ALL_TASKS)
    for name, builder in TASK_BUILDERS.items():
        assert builder.name == name
        assert builder.kind == ("embedding" if name in EMBEDDING_TASKS else "generative")
        assert builder.needs <= {
            S.SIGNAL_INTERACTIONS,
            S.SIGNAL_TIMESTAMPS,
            S.SIGNAL_RATINGS,
            S.SIGNAL_ITEM_TEXT,
            S.SIGNAL_ITEM_CATEGORIES,
            S.SIGNAL_USER_ATTRIBUTES,
            S.SIGNAL_REVIEW_TEXT,
        }


def test_ml100k_builds_most_tasks_and_skips_review_tasks(built: TaskDatasets) -> None:
    embedding = [t for t in built.frames if t in EMBEDDING_TASKS]
    generative = [t for t in built.frames if t in GENERATIVE_TASKS]
    assert len(embedding) >= 3
    assert len(generative) >= 10
    for task in ("sentiment_analysis", "explanation_generation"):
        assert task not in built.frames
        assert "review_text" in built.skipped[task]
    assert set(built.frames) | set(built.skipped) == set(ALL_TASKS)
    assert "query2item" in built.derived and "queries" in built.derived["query2item"]


def test_split_sizes_respect_caps(built: TaskDatasets) -> None:
    for task, splits in built.frames.items():
        assert set(splits) == set(S.SPLITS)
        if task in FULL_RANKING_TASKS:  # every user is evaluated; one train record per interaction
            assert len(splits["train"]) == SMALL.max_train_next_item
            users = built.split_interactions.query("split == 'test'")["user_id"].nunique()
            assert len(splits["test"]) == len(splits["valid"]) == users
            continue
        assert len(splits["train"]) <= SMALL.max_train_per_task
        assert len(splits["valid"]) <= SMALL.max_eval_per_task
        assert len(splits["test"]) <= SMALL.max_eval_per_task
        assert len(splits["test"]) > 0, task
        if task == "zero_shot":
            assert splits["train"].empty
        else:
            assert len(splits["train"]) > 0, task


def test_no_held_out_item_reaches_a_users_training_sequences(built: TaskDatasets) -> None:
    """What behaviour pretraining reads (the train interactions) and every train record of the
    next-item tasks hold none of the user's validation or test items."""
    split = built.split_interactions
    held_out = split[split["split"] != "train"].groupby("user_id")["item_id"].agg(set)
    train = built.train_interactions
    assert len(train) == (split["split"] == "train").sum()
    leaked = [
        u for u, i in zip(train["user_id"], train["item_id"], strict=True) if i in held_out[u]
    ]
    assert not leaked
    for task in FULL_RANKING_TASKS:
        frame = built.frames[task]["train"]
        for user, target, history in zip(
            frame["user_id"], frame["item_id"], frame["history_ids"], strict=True
        ):
            assert target not in held_out[user]
            assert not set(history) & held_out[user]
    tokens = set(built.item_texts.loc[built.item_texts["token"] != "", "item_id"])
    assert tokens <= set(train["item_id"])  # identifiers come from training interactions only


def test_records_are_well_formed(built: TaskDatasets) -> None:
    for task, splits in built.frames.items():
        for split, frame in splits.items():
            assert list(frame.columns) == list(S.TASK_RECORD_COLUMNS)
            if frame.empty:
                continue
            assert (frame["task"] == task).all()
            assert (frame["split"] == split).all()
            assert (frame["kind"] == TASK_BUILDERS[task].kind).all()
            assert frame["prompt"].str.strip().ne("").all(), (task, split)
            assert frame["target"].str.strip().ne("").all(), (task, split)
            with_candidates = frame[frame["candidate_ids"].map(len) > 0]
            for target_id, ids in zip(
                with_candidates["item_id"], with_candidates["candidate_ids"], strict=True
            ):
                assert target_id in ids and len(set(ids)) == len(ids)


def test_user_tasks_fill_ids_and_labels(built: TaskDatasets) -> None:
    test = built.frames["sequential_recommendation"]["test"]
    assert test["user_id"].ne("").all() and test["item_id"].ne("").all()
    assert (test["candidate_ids"].map(len) == SMALL.num_candidates).all()
    # next-item prompts show the last sequence_length items as identifier tokens
    assert test["history_ids"].map(len).between(1, SMALL.sequence_length).all()
    rating = built.frames["rating_prediction"]["train"]
    assert rating["label"].between(1, 5).all()
    assert (rating["target"] == rating["label"].astype(int).astype(str)).all()
    ctr = built.frames["ctr_prediction"]["valid"]
    assert set(ctr["label"]) <= {0.0, 1.0}
    assert ((ctr["label"] == 1.0) == (ctr["target"] == "yes")).all()


def test_no_held_out_item_reaches_a_users_training_records(
    ml100k: S.Tables, built: TaskDatasets
) -> None:
    held_out = _held_out_by_user(ml100k, built)
    titles = _titles(ml100k)
    shared_titles = {t for t, n in pd.Series(titles).value_counts().items() if n > 1}
    checked = 0
    for task, splits in built.frames.items():
        train = splits["train"]
        for record in train.itertuples(index=False):
            hidden = held_out.get(record.user_id, set()) if record.user_id else set()
            if not hidden:
                continue
            checked += 1
            assert record.item_id not in hidden, (task, record.user_id, record.item_id)
            assert not hidden & set(record.history_ids), (task, record.user_id)
            assert not hidden & set(record.candidate_ids), (task, record.user_id)
            for item in hidden:
                if titles[item] not in shared_titles:
                    assert titles[item] not in record.prompt, (task, record.user_id, item)
    assert checked > 1000


def test_cold_items_are_absent_from_all_training_records(
    ml100k: S.Tables, built: TaskDatasets
) -> None:
    cold = set(built.cold_items)
    assert cold
    titles = _titles(ml100k)
    shared_titles = {t for t, n in pd.Series(titles).value_counts().items() if n > 1}
    cold_titles = [titles[i] for i in cold if titles[i] not in shared_titles]
    for task, splits in built.frames.items():
        train = splits["train"]
        for record in train.itertuples(index=False):
            assert record.item_id not in cold, task
            assert not cold & set(record.history_ids), task
            assert not cold & set(record.candidate_ids), task
            text = record.prompt + "\n" + record.target
            assert not any(title in text for title in cold_titles), task
    zero_shot = built.frames["zero_shot"]
    for split in ("valid", "test"):
        assert zero_shot[split]["item_id"].isin(cold).all()
    # a cold item is evaluated in valid or in test, never both
    assert not set(zero_shot["valid"]["item_id"]) & set(zero_shot["test"]["item_id"])


def test_same_seed_gives_identical_frames(ml100k: S.Tables, built: TaskDatasets) -> None:
    again = build_task_datasets(ml100k, SMALL, seed=SEED)
    assert again.cold_items == built.cold_items
    assert again.skipped == built.skipped
    assert set(again.frames) == set(built.frames)
    for task, splits in built.frames.items():
        for split, frame in splits.items():
            pd.testing.assert_frame_equal(again.frames[task][split], frame)


def test_another_seed_gives_other_samples(ml100k: S.Tables, built: TaskDatasets) -> None:
    cfg = SMALL.model_copy(update={"enabled": ["user2item"]})
    other = build_task_datasets(ml100k, cfg, seed=SEED + 1)
    assert not other.frames["user2item"]["train"]["prompt"].equals(
        built.frames["user2item"]["train"]["prompt"]
    )


def _amazon_style_tables() -> S.Tables:
    """Six users with six text reviews each over eight items (ratings cycle through 1–5)."""
    rng = np.random.default_rng(0)
    texts = {1: "Broke after a day.", 2: "Not great.", 3: "It is fine.", 4: "Works well.",
             5: "Love it, great value!"}  # fmt: skip
    rows = []
    for u in range(6):
        for n, item in enumerate(rng.permutation(8)[:6]):
            rating = float((u + n) % 5 + 1)
            rows.append((f"U{u}", f"B{item:03d}", rating, 1_600_000_000 + 86_400 * n,
                         f"Title {n}", texts[int(rating)]))  # fmt: skip
    interactions = pd.DataFrame(rows, columns=list(S.INTERACTION_COLUMNS))
    items = pd.DataFrame(
        {
            "item_id": [f"B{i:03d}" for i in range(8)],
            "title": [f"Kitchen gadget {i}" for i in range(8)],
            "description": ["A handy tool for the kitchen."] * 8,
            "categories": ["Home|Kitchen", "Home|Tools"] * 4,
            "year": pd.Series([pd.NA] * 8, dtype="Int64"),
        }
    )
    users = pd.DataFrame({"user_id": sorted(interactions["user_id"].unique())})
    info = S.SourceInfo(
        name="amazon_jsonl",
        rating_min=1.0,
        rating_max=5.0,
        rating_threshold=4.0,
        signals=(
            S.SIGNAL_INTERACTIONS,
            S.SIGNAL_TIMESTAMPS,
            S.SIGNAL_RATINGS,
            S.SIGNAL_ITEM_TEXT,
            S.SIGNAL_ITEM_CATEGORIES,
            S.SIGNAL_REVIEW_TEXT,
        ),
    )
    return S.Tables(interactions=interactions, items=items, users=users, info=info)


def test_review_tasks_are_built_on_a_source_with_review_text() -> None:
    cfg = TasksConfig(num_candidates=3, cold_item_fraction=0.0)
    built = build_task_datasets(_amazon_style_tables(), cfg, seed=1)
    for task in ("sentiment_analysis", "explanation_generation"):
        assert task in built.frames, built.skipped.get(task)
        assert len(built.frames[task]["train"]) > 0
        assert len(built.frames[task]["test"]) == 6
    sentiment = pd.concat(built.frames["sentiment_analysis"].values())
    expected = {"Broke": "negative", "Not great": "negative", "It is fine": "neutral",
                "Works well": "positive", "Love it": "positive"}  # fmt: skip
    for prompt, target in zip(sentiment["prompt"], sentiment["target"], strict=True):
        assert target == next(v for k, v in expected.items() if k in prompt)
    explanation = built.frames["explanation_generation"]["test"]
    assert explanation["target"].str.contains("Title").all()
    assert "user_profile" in built.skipped and "user_attributes" in built.skipped["user_profile"]
    assert "zero_shot" in built.skipped  # no cold items when cold_item_fraction is 0


def test_more_candidates_than_the_catalogue_is_a_named_error() -> None:
    from recfound.config import ConfigError, parse_config
    from recfound.data.ingest import filter_tables

    tables = filter_tables(load_ml100k(), parse_config({"data": {"max_users": 10}}).data)
    tables = S.Tables(
        interactions=tables.interactions,
        items=tables.items[tables.items["item_id"].isin(tables.interactions["item_id"])],
        users=tables.users,
        info=tables.info,
    )
    too_many = SMALL.model_copy(update={"num_candidates": 1000})
    with pytest.raises(ConfigError) as err:
        build_task_datasets(tables, too_many, seed=SEED)
    message = str(err.value)
    assert message.startswith("tasks.num_candidates is 1000, but the catalogue has only ")
    assert "set tasks.num_candidates to at most" in message


def test_some_ctr_training_records_ask_as_zero_shot_asks(built: TaskDatasets) -> None:
    """One training record in five hides the item's reception and identifier, as a cold item
    has neither; validation and test records are never rewritten."""
    frames = built.frames["ctr_prediction"]
    train = frames["train"]["prompt"].astype(str)
    cold = train[train.str.contains("(no ratings yet)", regex=False)]
    assert 0.1 < len(cold) / len(train) < 0.3
    questions = cold.str.split(". Will they like ").str[-1]
    assert questions.str.startswith("this new movie: ").all()
    assert not questions.str.contains("<item_", regex=False).any()
    zero_shot = built.frames["zero_shot"]["valid"]["prompt"].astype(str)
    assert zero_shot.str.split(". Will they like ").str[-1].str.startswith("this new movie: ").all()
    for split in ("valid", "test"):
        shown = frames[split]["prompt"].astype(str)
        assert not shown.str.contains("Will they like this new", regex=False).any()


def test_candidate_ranking_lists_candidates_before_the_next_item_question(
    built: TaskDatasets,
) -> None:
    records = built.frames["candidate_ranking"]["test"]
    for prompt, ids, history in zip(
        records["prompt"], records["candidate_ids"], records["history_ids"], strict=True
    ):
        listed, question = prompt.split(". Which movie will this user choose next? ")
        assert listed.startswith("Candidates: ") and len(ids) > 1
        assert question.startswith("History, oldest first: <item_")
        assert question.endswith(f"<item_{history[-1]}>")  # the answer follows the history
        assert all(f"<item_{i}>" in listed for i in ids)


def test_training_items_are_asked_for_in_several_distinct_queries(
    ml100k: S.Tables, built: TaskDatasets
) -> None:
    """queries_per_train_item adds distinct queries of the same training items; the first query of
    every item, and so every validation and test record, stays as it was."""
    more = build_task_datasets(
        ml100k,
        SMALL.model_copy(update={"enabled": ["query2item"], "queries_per_train_item": 3}),
        seed=SEED,
    ).frames["query2item"]
    one = built.frames["query2item"]
    for split in ("valid", "test"):
        pd.testing.assert_frame_equal(more[split], one[split])
    first = more["train"].iloc[: len(one["train"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one["train"].reset_index(drop=True))
    per_item = more["train"].groupby("item_id")["prompt"]
    assert per_item.nunique().eq(per_item.size()).all()  # no query twice for one item
    assert per_item.size().max() == 3 and per_item.size().mean() > 2
    assert set(more["train"]["item_id"]) == set(one["train"]["item_id"])
    for prompt, target in zip(more["train"]["prompt"], more["train"]["target"], strict=True):
        genres = target.split("genres: ")[1].split(", ")
        asked = prompt.split("\n")[1].split(" movies")[0].split(" and ")
        assert set(asked) <= set(genres)  # every query is about its item's real categories
