from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recfound import artifacts
from tests.conftest import file_digests


class Boom(RuntimeError):
    pass


def test_write_json_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "m.json"
    artifacts.write_json(path, {"a": 1})
    artifacts.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp files left


def test_failed_parquet_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    artifacts.write_parquet(path, pd.DataFrame({"x": [1, 2]}))
    before = path.read_bytes()
    unserialisable = pd.DataFrame({"x": [object()]})
    with pytest.raises(Exception):  # noqa: B017 - pyarrow raises its own error types
        artifacts.write_parquet(path, unserialisable)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_staged_directory_swaps_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "tasks"
    with artifacts.staged_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    before = file_digests(target)
    with pytest.raises(Boom), artifacts.staged_directory(target) as staging:
        (staging / "a.txt").write_text("second, half done")
        raise Boom
    assert file_digests(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks"]
    with artifacts.staged_directory(target) as staging:
        (staging / "b.txt").write_text("third")
    assert file_digests(target) == {"b.txt": b"third"}


def test_partial_directory_keeps_the_target_until_it_is_swapped_in(tmp_path: Path) -> None:
    """How `train` writes paths.train: the previous outputs stay until the new run completes; a
    failed or killed run leaves its work for `--resume`; a fresh run starts empty."""
    target = tmp_path / "train"
    (target / "last").mkdir(parents=True)
    (target / "last" / "w").write_text("old")
    before = file_digests(target)

    work = artifacts.partial_directory(target, resume=False)
    assert work.parent == target.parent and list(work.iterdir()) == []
    (work / "last").mkdir()
    (work / "last" / "w").write_text("new, half done")
    assert file_digests(target) == before  # a run that dies here changes nothing

    again = artifacts.partial_directory(target, resume=True)  # resume continues the partial run
    assert again == work and (work / "last" / "w").read_text() == "new, half done"
    assert list(artifacts.partial_directory(target, resume=False).iterdir()) == []  # fresh: empty

    (work / "last").mkdir()
    (work / "last" / "w").write_text("new")
    artifacts.replace_directory(work, target)
    assert (target / "last" / "w").read_text() == "new" and not work.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # nothing else left behind

    resumed = artifacts.partial_directory(target, resume=True)  # no partial work: from target
    assert file_digests(resumed) == file_digests(target)
