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
