"""`recfound export-split`: the pipeline's split as RecBole benchmark files, read back unchanged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from recfound.cli import main
from recfound.data.export import (
    ExportError,
    export_recbole_split,
    load_split_inputs,
    read_recbole_split,
)
from recfound.data.splits import split_leave_one_out
from recfound.errors import EXIT_USER_ERROR


@pytest.fixture()
def built_project(mini_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The mini project after `ingest`, `validate` and `build-tasks` (cwd is the project)."""
    monkeypatch.chdir(mini_project)
    assert main(["ingest"]) == 0
    assert main(["validate"]) == 0
    assert main(["build-tasks"]) == 0
    return mini_project


def per_user_sets(frame: pd.DataFrame) -> dict[tuple[str, str], set[str]]:
    return {
        (str(user), str(split)): set(group["item_id"].astype(str))
        for (user, split), group in frame.groupby(["user_id", "split"])
    }


def synthetic_split() -> pd.DataFrame:
    rows = [
        {"user_id": user, "item_id": f"i{(user_n * 3 + k) % 7}", "rating": 3.5 + k % 2}
        for user_n, user in enumerate(["u1", "u2", "u3"])
        for k in range(5)
    ]
    frame = pd.DataFrame(rows)
    frame["timestamp"] = range(1000, 1000 + len(frame))
    frame["review_title"] = None
    frame["review_text"] = None
    return split_leave_one_out(frame)


def synthetic_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(9)],
            "title": ["Tab\there", "Line\nbreak\r\nhere", *[f"Item {k}" for k in range(2, 9)]],
            "categories": ["Drama|Film Noir", "", *["Comedy"] * 7],
            "year": pd.array([1999, None, *[2000] * 7], dtype="Int64"),
        }
    )


def test_round_trip_gives_the_pipelines_split(built_project: Path) -> None:
    interactions, items, users = load_split_inputs("data/tasks", "data/interim")
    export = export_recbole_split(interactions, items, users, built_project / "out" / "recfound")

    back = read_recbole_split(export.folder, "recfound")
    assert per_user_sets(back) == per_user_sets(interactions)
    expected = interactions[["user_id", "item_id", "rating", "timestamp", "split"]]
    pd.testing.assert_frame_equal(
        back.sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True),
        expected.astype({"timestamp": "int64", "rating": "float64"})
        .sort_values(["user_id", "timestamp", "item_id"])
        .reset_index(drop=True),
    )
    assert export.rows == interactions["split"].value_counts().to_dict()
    # every catalogue item (cold ones too) is rankable in RecBole; every user has a .user row
    item_lines = (export.folder / "recfound.item").read_text().splitlines()
    assert len(item_lines) - 1 == len(pd.read_parquet("data/tasks/items.parquet"))
    user_lines = (export.folder / "recfound.user").read_text().splitlines()
    assert user_lines[0] == "user_id:token\tage:token\tgender:token\toccupation:token"
    assert len(user_lines) - 1 == interactions["user_id"].nunique()


def test_sequential_files_hold_each_targets_history(tmp_path: Path) -> None:
    split = synthetic_split()
    export = export_recbole_split(
        split, synthetic_items(), pd.DataFrame({"user_id": []}), tmp_path / "recfound"
    )
    rows = {}
    for part in ("train", "valid", "test"):
        frame = pd.read_csv(export.folder / f"recfound.seq_{part}.inter", sep="\t", dtype=str)
        rows[part] = frame
    for user, group in split.groupby("user_id"):
        items = group["item_id"].tolist()  # chronological, train then valid then test
        test = rows["test"][rows["test"]["user_id:token"] == user].iloc[0]
        assert test["item_id_list:token_seq"].split() == items[:-1]
        assert test["item_id:token"] == items[-1]
        valid = rows["valid"][rows["valid"]["user_id:token"] == user].iloc[0]
        assert valid["item_id_list:token_seq"].split() == items[:-2]
        train = rows["train"][rows["train"]["user_id:token"] == user]
        assert train["item_id:token"].tolist() == items[1:-2]  # every prefix predicts the next
    assert not (export.folder / "recfound.user").exists()  # no user attributes, no .user file
    config = yaml.safe_load((export.folder / "recbole.yaml").read_text())
    assert "user" not in config["load_col"]


def test_text_fields_are_one_cell_each(tmp_path: Path) -> None:
    export = export_recbole_split(
        synthetic_split(), synthetic_items(), pd.DataFrame({"user_id": []}), tmp_path / "recfound"
    )
    lines = (export.folder / "recfound.item").read_text(encoding="utf-8").split("\n")[:-1]
    assert lines[0] == "item_id:token\ttitle:token_seq\trelease_year:token\tclass:token_seq"
    assert all(line.count("\t") == 3 for line in lines)
    assert lines[1] == "i0\tTab here\t1999\tDrama Film_Noir"
    assert lines[2] == "i1\tLine break here\t\t"


def test_configs_reproduce_the_protocol(tmp_path: Path) -> None:
    export = export_recbole_split(
        synthetic_split(), synthetic_items(), pd.DataFrame({"user_id": []}), tmp_path / "recfound"
    )
    general = yaml.safe_load((export.folder / "recbole.yaml").read_text())
    assert general["benchmark_filename"] == ["train", "valid", "test"]
    assert general["eval_args"] == {"group_by": "user", "order": "TO", "mode": "full"}
    assert general["dataset"] == "recfound"
    assert Path(general["data_path"]) == tmp_path.resolve()
    assert general["valid_metric"] == "NDCG@10"
    sequential = yaml.safe_load((export.folder / "recbole_sequential.yaml").read_text())
    assert sequential["benchmark_filename"] == ["seq_train", "seq_valid", "seq_test"]
    assert sequential["alias_of_item_id"] == ["item_id_list"]
    assert sequential["train_neg_sample_args"] is None


def test_folder_name_and_foreign_files_are_checked(tmp_path: Path) -> None:
    split, items, users = synthetic_split(), synthetic_items(), pd.DataFrame({"user_id": []})
    with pytest.raises(ExportError, match="must be named 'recfound'"):
        export_recbole_split(split, items, users, tmp_path / "exports")
    target = tmp_path / "recfound"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        export_recbole_split(split, items, users, target)
    assert (target / "notes.txt").read_text() == "mine"
    (target / "notes.txt").unlink()
    export_recbole_split(split, items, users, target)
    export_recbole_split(split, items, users, target)  # a previous export is replaced
    with pytest.raises(ExportError, match="not in the catalogue"):
        export_recbole_split(split, items.iloc[2:], users, tmp_path / "other", name="other")


def test_cli_writes_the_files(built_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-split", "--format", "recbole", "exports/recfound"]) == 0
    folder = built_project / "exports" / "recfound"
    for suffix in ("train.inter", "valid.inter", "test.inter", "item", "user"):
        assert (folder / f"recfound.{suffix}").is_file()
    assert (folder / "recbole.yaml").is_file()
    header = (folder / "recfound.train.inter").read_text().splitlines()[0]
    assert header == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert "wrote" in capsys.readouterr().out


def test_cli_names_the_missing_split(
    mini_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(mini_project)
    (mini_project / "data" / "tasks").mkdir(parents=True)
    assert main(["export-split", "exports/recfound"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "data/tasks/interactions.parquet" in err
    assert "recfound build-tasks" in err
    assert not (mini_project / "exports").exists()
