from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recfound.config import parse_config
from recfound.data import schema as S
from recfound.data.ingest import filter_tables, load_source, read_tables, write_tables
from recfound.data.sources import IngestError, k_core, load_amazon_jsonl, load_ml100k
from tests.conftest import REPO_ROOT, file_digests

AMAZON = REPO_ROOT / "tests" / "fixtures" / "amazon"


def test_ml100k_comes_from_the_recbole_wheel() -> None:
    tables = load_ml100k()
    assert len(tables.interactions) == 100_000
    assert tables.interactions["user_id"].nunique() == 943
    assert len(tables.items) == 1682
    assert tables.items.loc[tables.items["item_id"] == "1", "title"].item() == "Toy Story"
    assert tables.items.loc[tables.items["item_id"] == "1", "year"].item() == 1995
    assert set(tables.users.columns) >= {"user_id", "age", "gender", "occupation"}
    assert S.SIGNAL_USER_ATTRIBUTES in tables.info.signals
    assert S.SIGNAL_REVIEW_TEXT not in tables.info.signals
    assert tables.interactions["rating"].between(1, 5).all()


def test_recbole_atomic_folder(mini_atomic: Path) -> None:
    cfg = parse_config(
        {"data": {"source": "recbole_atomic", "path": str(mini_atomic), "dataset_name": "mini"}}
    )
    tables = load_source(cfg.data)
    assert tables.interactions["user_id"].nunique() == 40
    assert tables.info.name == "recbole_atomic"
    assert list(tables.items.columns) == list(S.ITEM_COLUMNS)


def test_amazon_jsonl_fixture() -> None:
    tables = load_amazon_jsonl(AMAZON)
    assert len(tables.interactions) == 56
    assert tables.interactions["review_text"].str.len().gt(0).all()
    assert tables.interactions["timestamp"].between(1.5e9, 1.8e9).all()  # ms → s
    assert S.SIGNAL_REVIEW_TEXT in tables.info.signals
    assert tables.items.loc[tables.items["item_id"] == "B0003", "title"].item() == (
        "Burr Coffee Grinder"
    )


def test_k_core_repeats_until_stable() -> None:
    inter = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "z", "x", "y", "x"],
        }
    )
    # with min 2 per user and 2 per item: c goes (1), then z goes (1), then a/b keep x,y
    kept = k_core(inter, min_user=2, min_item=2)
    assert sorted(zip(kept["user_id"], kept["item_id"], strict=True)) == [
        ("a", "x"),
        ("a", "y"),
        ("b", "x"),
        ("b", "y"),
    ]


def test_filter_keeps_first_users_and_sorts_by_time() -> None:
    cfg = parse_config({"data": {"max_users": 10}})
    tables = filter_tables(load_ml100k(), cfg.data)
    assert sorted(tables.interactions["user_id"].unique(), key=int) == [
        str(i) for i in range(1, 11)
    ]
    for _, group in tables.interactions.groupby("user_id"):
        assert group["timestamp"].is_monotonic_increasing


def test_write_and_read_roundtrip(tmp_path: Path) -> None:
    cfg = parse_config({"data": {"max_users": 10}})
    tables = filter_tables(load_ml100k(), cfg.data)
    write_tables(tables, tmp_path)
    again = read_tables(tmp_path)
    assert again.info == tables.info
    assert again.interactions.equals(tables.interactions)


def test_truncated_atomic_file_is_named(mini_atomic: Path) -> None:
    inter = mini_atomic / "mini.inter"
    text = inter.read_text()
    inter.write_text(text[: len(text) // 2 + 3])  # cut in the middle of a line
    cfg = parse_config(
        {"data": {"source": "recbole_atomic", "path": str(mini_atomic), "dataset_name": "mini"}}
    )
    with pytest.raises(IngestError, match=r"mini\.inter: line \d+ has no line end.*truncated"):
        load_source(cfg.data)


def test_unreadable_binary_file_is_named(mini_atomic: Path) -> None:
    (mini_atomic / "mini.item").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage")
    cfg = parse_config(
        {"data": {"source": "recbole_atomic", "path": str(mini_atomic), "dataset_name": "mini"}}
    )
    with pytest.raises(IngestError, match=r"mini\.item is not readable UTF-8"):
        load_source(cfg.data)


def test_truncated_jsonl_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "amazon"
    folder.mkdir()
    (folder / "meta.jsonl").write_text((AMAZON / "meta.jsonl").read_text())
    reviews = (AMAZON / "reviews.jsonl").read_text()
    (folder / "reviews.jsonl").write_text(reviews[: len(reviews) - 40])
    with pytest.raises(IngestError, match=r"reviews\.jsonl: line 56 is not valid JSON"):
        load_amazon_jsonl(folder)


def test_truncated_parquet_is_named_and_not_overwritten(tmp_path: Path) -> None:
    cfg = parse_config({"data": {"max_users": 10}})
    write_tables(filter_tables(load_ml100k(), cfg.data), tmp_path)
    path = tmp_path / "items.parquet"
    path.write_bytes(path.read_bytes()[:100])
    before = file_digests(tmp_path)
    with pytest.raises(IngestError, match=r"items\.parquet is unreadable"):
        read_tables(tmp_path)
    assert file_digests(tmp_path) == before


# --- silent acceptance (issue 15): each bad input is a named error -------------------------------


def _atomic_cfg(folder: Path, **data: object):
    return parse_config(
        {"data": {"source": "recbole_atomic", "path": str(folder), "dataset_name": "mini", **data}}
    ).data


def _rewrite(path: Path, transform) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(transform(lines)) + "\n")


def test_atomic_file_cut_inside_the_last_timestamp_is_named_truncated(mini_atomic: Path) -> None:
    inter = mini_atomic / "mini.inter"
    text = inter.read_text()
    inter.write_text(text[:-4])  # same number of fields, a shorter timestamp, no line end
    lines = text.count("\n")
    with pytest.raises(IngestError, match=rf"mini\.inter: line {lines} has no line end.*truncated"):
        load_source(_atomic_cfg(mini_atomic))


def test_dropped_timestamp_column_is_named_when_the_source_declares_times(
    mini_atomic: Path,
) -> None:
    inter = mini_atomic / "mini.inter"
    _rewrite(inter, lambda lines: [ln.rsplit("\t", 1)[0] for ln in lines])  # last field: time
    with pytest.raises(IngestError) as err:
        load_source(_atomic_cfg(mini_atomic))
    message = str(err.value)
    assert "mini.inter" in message and "no 'timestamp' field" in message
    assert "data.timestamps: false" in message
    # declared absent, file order is the order of events (and the signal is not claimed)
    tables = load_source(_atomic_cfg(mini_atomic, timestamps=False))
    assert S.SIGNAL_TIMESTAMPS not in tables.info.signals


@pytest.mark.parametrize("column", [0, 1])
def test_empty_id_in_atomic_file_is_named_with_its_line(mini_atomic: Path, column: int) -> None:
    def blank(lines: list[str]) -> list[str]:
        fields = lines[7].split("\t")
        fields[column] = ""
        return [*lines[:7], "\t".join(fields), *lines[8:]]

    _rewrite(mini_atomic / "mini.inter", blank)
    name = ("user_id", "item_id")[column]
    with pytest.raises(IngestError, match=rf"mini\.inter: empty {name} at line 8"):
        load_source(_atomic_cfg(mini_atomic))


def _amazon_copy(tmp_path: Path, line: int, **changes: object) -> Path:
    import json

    folder = tmp_path / "amazon"
    folder.mkdir()
    (folder / "meta.jsonl").write_text((AMAZON / "meta.jsonl").read_text())
    lines = (AMAZON / "reviews.jsonl").read_text().splitlines()
    lines[line - 1] = json.dumps({**json.loads(lines[line - 1]), **changes})
    (folder / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"rating": "five"}, "rating is 'five'; expected a number"),
        ({"timestamp": None}, "timestamp is None; expected a number"),
        ({"user_id": None}, "user_id is None; expected a non-empty string id"),
        ({"user_id": ""}, "user_id is ''; expected a non-empty string id"),
    ],
)
def test_bad_amazon_values_name_file_and_line(
    tmp_path: Path, changes: dict[str, object], words: str
) -> None:
    folder = _amazon_copy(tmp_path, 12, **changes)
    with pytest.raises(IngestError) as err:
        load_amazon_jsonl(folder)
    assert str(err.value) == f"{folder / 'reviews.jsonl'}: line 12: {words}"


# --- reliability (issue 24, items 6 and 9): unsafe text, duplicates, non-finite times ---------


@pytest.mark.parametrize(
    ("timestamp", "shown"),
    [("inf", "inf"), ("-inf", "-inf"), ("1e300", "1e+300")],
)
def test_non_finite_timestamp_in_atomic_file_names_file_and_line(
    mini_atomic: Path, timestamp: str, shown: str
) -> None:
    def bad_time(lines: list[str]) -> list[str]:
        fields = lines[5].split("\t")
        fields[-1] = timestamp
        return [*lines[:5], "\t".join(fields), *lines[6:]]

    _rewrite(mini_atomic / "mini.inter", bad_time)
    with pytest.raises(IngestError) as err:
        load_source(_atomic_cfg(mini_atomic))
    message = str(err.value)
    assert f"mini.inter: line 6: timestamp is {shown}, not a time" in message
    assert "fix or remove them in the source file" in message


@pytest.mark.parametrize("timestamp", ["inf", float("inf"), 1e300])
def test_non_finite_timestamp_in_amazon_jsonl_names_file_and_line(
    tmp_path: Path, timestamp: object
) -> None:
    folder = _amazon_copy(tmp_path, 12, timestamp=timestamp)
    with pytest.raises(IngestError, match=r"reviews\.jsonl: line 12: timestamp is .*, not a time"):
        load_amazon_jsonl(folder)


def _ingest(tmp_path: Path, raw: Path, **data: object) -> S.Tables:
    """run_ingest on the atomic files in ``raw``; the tables it wrote, read back."""
    from recfound.stages.ingest import run_ingest

    interim = tmp_path / "interim"
    cfg = parse_config(
        {
            "data": {"source": "recbole_atomic", "path": str(raw), "dataset_name": "mini", **data},
            "paths": {"interim": str(interim)},
        }
    )
    run_ingest(cfg)
    return read_tables(interim)


def _set_title(folder: Path, row: int, title: str) -> str:
    """Give the item on line ``row + 1`` of mini.item ``title``; its item_id."""
    lines = (folder / "mini.item").read_text().splitlines()
    fields = lines[row].split("\t")
    fields[1] = title
    lines[row] = "\t".join(fields)
    (folder / "mini.item").write_text("\n".join(lines) + "\n")
    return fields[0]


@pytest.mark.parametrize(
    ("title", "written"),
    [
        ("Heat <item_50> </s> <pad>", "Heat ‹item_50› ‹/s› ‹pad›"),
        ("<|endoftext|>Toy Story", "‹|endoftext|›Toy Story"),
        ("a < b and c > d", "a ‹ b and c › d"),
        ("3 < 4", "3 < 4"),  # a lone bracket cannot form a token: kept
    ],
)
def test_control_tokens_in_titles_are_escaped_and_counted(
    tmp_path: Path, mini_atomic: Path, title: str, written: str
) -> None:
    clean = _ingest(tmp_path / "clean", mini_atomic)
    item = _set_title(mini_atomic, 3, title)
    tables = _ingest(tmp_path / "dirty", mini_atomic)
    titles = tables.items.set_index("item_id")["title"]
    assert titles[item] == written
    changed = int(title != written)
    assert tables.info.changes.get("escaped_fields.items.title", 0) == changed
    others = tables.items[tables.items["item_id"] != item].reset_index(drop=True)
    expected = clean.items[clean.items["item_id"] != item].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, expected)  # every other item as it was
    pd.testing.assert_frame_equal(tables.interactions, clean.interactions)


def test_oversized_title_is_cut_to_the_setting_and_counted(
    tmp_path: Path, mini_atomic: Path
) -> None:
    item = _set_title(mini_atomic, 2, "x" * 100_000)
    tables = _ingest(tmp_path, mini_atomic, max_field_chars=200)
    title = tables.items.set_index("item_id")["title"][item]
    assert len(title) == 200 and title.endswith("…")
    assert tables.info.changes == {"cut_fields.items.title": 1}
    assert tables.items["title"].str.len().max() == 200


def test_duplicated_rows_are_dropped_before_k_core(tmp_path: Path, mini_atomic: Path) -> None:
    inter = mini_atomic / "mini.inter"
    lines = inter.read_text().splitlines()
    # a new user with 3 distinct events, each read twice: 6 rows, but only 3 interactions
    extra = [f"9999\t{ln.split(chr(9), 2)[1]}\t4\t88125000{i}" for i, ln in enumerate(lines[1:4])]
    inter.write_text("\n".join([*lines, *extra, *extra, lines[1]]) + "\n")
    tables = _ingest(tmp_path, mini_atomic)  # min_user_interactions: 5
    assert "9999" not in set(tables.interactions["user_id"])  # 3 < 5: filtered out
    assert tables.info.changes == {"duplicate_rows": 4}
    assert not tables.interactions.duplicated(["user_id", "item_id", "timestamp"]).any()
