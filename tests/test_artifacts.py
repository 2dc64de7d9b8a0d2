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


def test_files_are_written_with_the_users_umask_not_0600(tmp_path: Path) -> None:
    artifacts.write_json(tmp_path / "report.json", {"a": 1})
    artifacts.write_text(tmp_path / "report.md", "# report\n")
    expected = 0o666 & ~artifacts._UMASK
    for name in ("report.json", "report.md"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected


def test_a_manifest_vouches_for_its_files_and_names_the_one_that_differs(tmp_path: Path) -> None:
    first, second = tmp_path / "metrics.json", tmp_path / "plots" / "scores.json"
    artifacts.write_json(first, {"score": 1})
    artifacts.write_json(second, {"score": 1})
    manifest = tmp_path / "manifest.json"
    artifacts.write_manifest(manifest, [first, second], writer="recfound evaluate")
    assert set(artifacts.check_manifest(manifest, rerun="`x`")) == {
        "metrics.json",
        "plots/scores.json",
    }
    artifacts.write_json(second, {"score": 2})  # a later run, killed after this file
    with pytest.raises(artifacts.ManifestError, match="plots/scores.json differs") as err:
        artifacts.check_manifest(manifest, rerun="`recfound evaluate`")
    assert "metrics.json differs" not in str(err.value)
    assert not artifacts.manifest_agrees(manifest)
    first.unlink()
    with pytest.raises(artifacts.ManifestError, match="metrics.json is missing"):
        artifacts.check_manifest(manifest, rerun="`recfound evaluate`")
