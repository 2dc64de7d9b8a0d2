"""Leave-one-out split and cold-item choice on handcrafted frames."""

from __future__ import annotations

import pandas as pd

from recfound.data.splits import choose_cold_items, split_leave_one_out


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=4.0)


def test_leave_one_out_is_chronological_per_user() -> None:
    rows = [
        ("u1", "c", 30),
        ("u2", "x", 5),
        ("u1", "a", 10),
        ("u1", "d", 40),
        ("u2", "y", 1),
        ("u1", "b", 20),
        ("u2", "z", 9),
    ]
    split = split_leave_one_out(_frame(rows))
    by_user = {
        u: list(zip(g["item_id"], g["split"], strict=True)) for u, g in split.groupby("user_id")
    }
    assert by_user["u1"] == [("a", "train"), ("b", "train"), ("c", "valid"), ("d", "test")]
    assert by_user["u2"] == [("y", "train"), ("x", "valid"), ("z", "test")]


def test_timestamp_ties_keep_original_order() -> None:
    rows = [("u", "first", 7), ("u", "second", 7), ("u", "third", 7), ("u", "fourth", 7)]
    split = split_leave_one_out(_frame(rows))
    assert list(split["item_id"]) == ["first", "second", "third", "fourth"]
    assert list(split["split"]) == ["train", "train", "valid", "test"]


def test_users_with_fewer_than_three_interactions_are_all_train() -> None:
    rows = [("short", "a", 1), ("short", "b", 2), ("single", "c", 3)]
    split = split_leave_one_out(_frame(rows))
    assert set(split["split"]) == {"train"}
    assert len(split) == 3


def test_split_does_not_modify_input() -> None:
    frame = _frame([("u", "a", 2), ("u", "b", 1), ("u", "c", 3)])
    before = frame.copy()
    split_leave_one_out(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_cold_items_are_seeded_and_need_two_interactions() -> None:
    rows = [(f"u{u}", f"i{i}", u) for i in range(40) for u in range(2)]
    rows += [("u0", f"once{i}", 0) for i in range(40)]
    frame = _frame(rows)
    cold = choose_cold_items(frame, fraction=0.1, seed=3)
    assert len(cold) == 8  # round(0.1 × 80 items)
    assert all(item.startswith("i") for item in cold)
    assert cold == choose_cold_items(frame.sample(frac=1.0, random_state=0), 0.1, seed=3)
    assert choose_cold_items(frame, fraction=0.0, seed=3) == set()
