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


def _publish(root: Path, version: str, *, fail: bool = False) -> None:
    """One run of a stage writing a folder, a report and a plot as one unit."""
    manifest = root / "reports" / "manifests" / "s.json"
    with artifacts.publish_unit(manifest, writer="stage s") as unit:
        folder = unit.directory(root / "models" / "s")
        (folder / "weights").write_text(f"weights {version}")
        unit.write_json(root / "reports" / "s.json", {"version": version})
        if fail:
            raise Boom("killed between two files of the unit")
        unit.write_text(root / "reports" / "plots" / "s.txt", f"curve {version}")


def _tree(root: Path) -> dict[str, bytes]:
    return file_digests(root)


def test_a_unit_is_published_whole_or_not_at_all(tmp_path: Path) -> None:
    """A stage's folder and reports are staged until the whole unit is written: a run that
    fails midway leaves the previous folder, reports and manifest byte for byte, and no
    staging leftovers; the manifest of a complete run vouches for all of them."""
    _publish(tmp_path, "1")
    manifest = tmp_path / "reports" / "manifests" / "s.json"
    assert set(artifacts.check_manifest(manifest, rerun="`s`")) == {
        "../../models/s",
        "../s.json",
        "../plots/s.txt",
    }
    before = _tree(tmp_path)
    with pytest.raises(Boom):
        _publish(tmp_path, "2", fail=True)
    assert _tree(tmp_path) == before
    assert not [p for p in tmp_path.rglob("*staging*")]  # nothing half-written left behind

    _publish(tmp_path, "2")
    assert (tmp_path / "models" / "s" / "weights").read_text() == "weights 2"
    assert (tmp_path / "reports" / "plots" / "s.txt").read_text() == "curve 2"
    artifacts.check_manifest(manifest, rerun="`s`")


def test_a_unit_killed_while_put_in_place_is_refused_by_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renames of a commit are the only window where old and new files mix: the manifest
    is gone then, so a reader refuses the mix; the next complete run repairs it."""
    _publish(tmp_path, "1")
    replace = artifacts.os.replace

    def dies_at_the_plot(source, target):
        if str(target).endswith("s.txt"):
            raise Boom("killed while moving the unit into place")
        replace(source, target)

    monkeypatch.setattr(artifacts.os, "replace", dies_at_the_plot)
    with pytest.raises(Boom):
        _publish(tmp_path, "2")
    monkeypatch.undo()
    manifest = tmp_path / "reports" / "manifests" / "s.json"
    with pytest.raises(artifacts.ManifestError, match=r"s.json is missing.*Run `s` again"):
        artifacts.check_manifest(manifest, rerun="`s`")
    _publish(tmp_path, "3")
    artifacts.check_manifest(manifest, rerun="`s`")
    assert not [p for p in tmp_path.rglob("*staging*")]


def test_a_folder_swapped_in_before_its_reports_disagrees_with_the_old_manifest(
    tmp_path: Path,
) -> None:
    """An output put in place by other code (``include``) and killed before the unit's commit:
    the old manifest still lists the old folder's digest, so the folder is named."""
    folder = tmp_path / "models" / "t"
    folder.mkdir(parents=True)
    (folder / "w").write_text("old")
    manifest = tmp_path / "reports" / "manifests" / "t.json"
    with artifacts.publish_unit(manifest, writer="stage t") as unit:
        unit.include(folder)
        unit.write_json(tmp_path / "reports" / "t.json", {"run": 1})
    (folder / "w").write_text("new")  # the next run swapped it in, then was killed
    with pytest.raises(artifacts.ManifestError, match=r"\.\./\.\./models/t differs"):
        artifacts.check_manifest(manifest, rerun="`t`")
