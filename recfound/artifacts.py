"""Atomic writes: an artifact is either the old complete file or the new complete file, never half.

Files are written to a temporary sibling and moved into place with :func:`os.replace` (atomic on one
filesystem). A directory of outputs is built in a temporary sibling and swapped in as a whole, so a
crash or a failed check midway leaves the previous outputs untouched.

Several outputs of one stage (its output folder, its reports and plots, which share
``paths.reports`` with other stages' files) are published as a *unit* (:func:`publish_unit`):
every file and folder is written to a staging place beside its target first, so a failure while
writing leaves every previous output and its manifest as they were; then the old manifest is
removed, everything is moved into place (renames only), and the new manifest, with the SHA-256 of
each file and folder, is written last. A run killed during those renames leaves no manifest, and
one killed between a folder swapped in earlier and the manifest leaves an old manifest that
disagrees: :func:`check_manifest` refuses both, naming the file (``register`` does so for
evaluate's reports).

Files are created with the user's umask (as ``open`` does), not the 0600 of :mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from recfound.errors import UserInputError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask can only be read by setting it


def _write_via_temp(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a report is as readable as any
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    text = _json_text(payload)
    _write_via_temp(Path(path), lambda tmp: tmp.write_text(text))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _write_via_temp(Path(path), lambda tmp: tmp.write_text(text))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a binary file atomically."""
    _write_via_temp(Path(path), lambda tmp: tmp.write_bytes(data))


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as parquet, atomically."""
    _write_via_temp(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{suffix}")


def recover_staged(target: str | Path) -> Path:
    """Finish or undo a directory replacement that a crash interrupted; returns ``target``.

    A replacement (:func:`replace_directory`) moves the complete new folder to ``.NAME.next``,
    the current ``NAME`` to ``.NAME.previous``, ``.NAME.next`` to ``NAME``, and deletes
    ``.NAME.previous``. After a crash at any point the newest complete folder becomes ``NAME``
    again: ``.NAME.next`` if it exists (it is complete), else ``.NAME.previous`` when ``NAME`` is
    missing. Staging folders left by a crash while writing (incomplete by construction) are
    deleted.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return target
    for stale in target.parent.glob(f".{target.name}.*.staging"):
        shutil.rmtree(stale, ignore_errors=True)
    _finish_replacement(target)
    return target


def _finish_replacement(target: Path) -> None:
    ready, backup = _sibling(target, "next"), _sibling(target, "previous")
    if ready.is_dir():
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
        os.replace(ready, target)
    elif not target.exists() and backup.is_dir():
        os.replace(backup, target)
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``target`` only if the block succeeds.

    On an exception the staging directory is removed and ``target`` keeps its previous contents.
    The previous ``target`` is deleted only once the new one is in place; a crash between the
    renames is repaired by :func:`recover_staged` (called here first, and by readers that must
    find the newest complete folder, such as ``train --resume``).
    """
    target = recover_staged(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent)
    )
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, target)


def replace_directory(source: str | Path, target: str | Path) -> None:
    """Move the complete directory ``source`` into the place of ``target`` (replacing it whole).

    The previous ``target`` is deleted only after the new one is in place; a crash between the
    renames leaves what :func:`recover_staged` needs to put the newest complete folder back.
    """
    source, target = Path(source), Path(target)
    _finish_replacement(target)
    ready, backup = _sibling(target, "next"), _sibling(target, "previous")
    os.replace(source, ready)  # complete: from here on a crash keeps the new folder
    if target.exists():
        os.replace(target, backup)
    os.replace(ready, target)
    shutil.rmtree(backup, ignore_errors=True)


def partial_path(target: str | Path) -> Path:
    """The fixed place :func:`partial_directory` builds ``target`` in."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


def partial_directory(target: str | Path, *, resume: bool) -> Path:
    """Where a long stage builds ``target`` before :func:`replace_directory` swaps it in.

    Unlike :func:`staged_directory` the place is fixed (``.<name>.partial`` beside ``target``) and
    survives a crash, so a resumed run continues from it; ``target`` keeps the previous complete
    outputs until then. A fresh run (``resume=False``) starts from an empty directory; a resumed
    run with no partial work starts from a copy of ``target``.
    """
    target = Path(target)
    work = partial_path(target)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    elif not work.exists() and target.is_dir():
        shutil.copytree(target, work)
    work.mkdir(parents=True, exist_ok=True)
    return work


# ---- manifests: several files published as one unit -------------------------------------------


class ManifestError(UserInputError):
    """Files published as a unit disagree with their manifest (a writer was killed midway, or a
    file was changed or replaced by hand)."""


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_digest(path: str | Path) -> str:
    """:func:`file_digest` of a file; of a folder, the SHA-256 of its files' relative paths and
    digests (in sorted order), so any changed, added or removed file changes it."""
    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return "tree:" + digest.hexdigest()


def _manifest_name(manifest: Path, path: str | Path) -> str:
    """``path`` as the manifest records it: relative to the manifest's folder (``../`` allowed)."""
    return Path(os.path.relpath(Path(path).resolve(), manifest.parent.resolve())).as_posix()


def write_manifest(manifest: str | Path, files: list[str | Path], *, writer: str) -> None:
    """Record the SHA-256 of ``files`` (files or folders; paths relative to the manifest's folder
    in the record) in ``manifest``, atomically. Write it after every file it lists: then the
    files and the manifest agree only when the whole unit was written."""
    manifest = Path(manifest)
    digests = {_manifest_name(manifest, f): path_digest(f) for f in files}
    write_json(manifest, {"writer": writer, "files": digests})


def check_manifest(manifest: str | Path, *, rerun: str) -> dict[str, str]:
    """The digests of ``manifest`` after checking that every file it lists exists with that
    digest; :class:`ManifestError` naming each file that does not (``rerun``: the command that
    writes the unit again)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(
            f"{manifest} is missing: the files it vouches for were not all written by one "
            f"complete run (it is written last). Run {rerun} again"
        )
    try:
        record = json.loads(manifest.read_text())
        digests = dict(record["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{manifest} is unreadable ({exc}); run {rerun} again") from None
    wrong = []
    for name, expected in sorted(digests.items()):
        path = manifest.parent / name
        if not path.exists():
            wrong.append(f"{name} is missing")
        elif path_digest(path) != expected:
            wrong.append(f"{name} differs from the one {record.get('writer', 'its writer')} wrote")
    if wrong:
        raise ManifestError(
            f"the files of {manifest} do not come from one complete run: "
            + "; ".join(wrong)
            + f". Using them would mix runs; run {rerun} again"
        )
    return digests


def manifest_agrees(manifest: str | Path) -> bool:
    """True when :func:`check_manifest` finds nothing wrong (the reader falls back otherwise)."""
    try:
        check_manifest(manifest, rerun="")
    except ManifestError:
        return False
    return True


# ---- units: a stage's outputs staged, then put in place together -------------------------------


class PublishedUnit:
    """What one run of a stage publishes together (see :func:`publish_unit`).

    Write each file to :meth:`path` (or :meth:`write_json` / :meth:`write_text` /
    :meth:`write_parquet`), each folder that is replaced whole into :meth:`directory`; nothing
    reaches its target before the unit is committed. The staged file keeps its target's name,
    so a figure's format follows its extension and MLflow logs it under its own name.
    """

    def __init__(self, manifest: Path, writer: str) -> None:
        self.manifest = manifest
        self.writer = writer
        self._folders: dict[Path, Path] = {}  # target folder → staging folder (files merged in)
        self._directories: dict[Path, Path] = {}  # target folder → its complete replacement
        self._created: list[Path] = []  # staging places this unit made (removed if it fails)
        self._removed: list[Path] = []  # targets the new run no longer writes
        self._included: list[Path] = []  # outputs put in place by other code, listed as they are

    def folder(self, target: str | Path) -> Path:
        """A staging folder whose files go into the folder ``target`` (others there stay).

        It is a hidden folder inside ``target`` named after the writer; one left there by a
        killed run of the same writer is deleted first."""
        target = Path(target).absolute()
        if target in self._directories:
            raise ValueError(f"{target} is already replaced whole by this unit")
        if target not in self._folders:
            target.mkdir(parents=True, exist_ok=True)
            prefix = "." + re.sub(r"[^A-Za-z0-9_-]+", "-", self.writer).strip("-") + "."
            for stale in target.glob(f"{prefix}*.staging"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=".staging", dir=target))
            self._created.append(staging)
            self._folders[target] = staging
        return self._folders[target]

    def path(self, target: str | Path) -> Path:
        """Where to write the file ``target`` (same name, in the staging folder of its folder)."""
        target = Path(target)
        return self.folder(target.parent) / target.name

    def write_json(self, target: str | Path, payload: Any) -> Path:
        staged = self.path(target)
        staged.write_text(_json_text(payload))
        return staged

    def write_text(self, target: str | Path, text: str) -> Path:
        staged = self.path(target)
        staged.write_text(text)
        return staged

    def write_parquet(self, target: str | Path, frame: pd.DataFrame) -> Path:
        staged = self.path(target)
        frame.to_parquet(staged, index=False)
        return staged

    def directory(self, target: str | Path) -> Path:
        """An empty staging folder that replaces the folder ``target`` whole."""
        target = Path(target).absolute()
        if target in self._folders or target in self._directories:
            raise ValueError(f"{target} is already staged by this unit")
        target = recover_staged(target)  # a crashed run's leftovers beside the target go
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent)
        )
        self._created.append(staging)
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the output is as any folder
        self._directories[target] = staging
        return staging

    def replace_directory(self, source: str | Path, target: str | Path) -> None:
        """Replace the folder ``target`` by the complete folder ``source`` (built elsewhere,
        e.g. a resumable :func:`partial_directory`) when the unit is committed; a failed unit
        leaves ``source`` where it is."""
        target = Path(target).absolute()
        if target in self._folders or target in self._directories:
            raise ValueError(f"{target} is already staged by this unit")
        self._directories[target] = Path(source)

    def remove(self, target: str | Path) -> None:
        """Delete the file ``target`` on commit (an output this run does not write)."""
        self._removed.append(Path(target))

    def include(self, path: str | Path) -> None:
        """List ``path``, already in place, in the manifest as it is at commit."""
        self._included.append(Path(path))

    def discard(self) -> None:
        for staging in self._created:
            shutil.rmtree(staging, ignore_errors=True)

    def commit(self) -> list[Path]:
        """Put every staged output in place, then write the manifest; the outputs it lists."""
        self.manifest.unlink(missing_ok=True)  # from here until the new one: incomplete
        published: list[Path] = []
        for target, source in self._directories.items():
            replace_directory(source, target)
            published.append(target)
        for target, staging in self._folders.items():
            for staged in sorted(p for p in staging.rglob("*") if p.is_file()):
                destination = target / staged.relative_to(staging)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, destination)
                published.append(destination)
            shutil.rmtree(staging, ignore_errors=True)
        for target in self._removed:
            target.unlink(missing_ok=True)
        published += [p for p in self._included if p.exists()]
        write_manifest(self.manifest, published, writer=self.writer)
        return published


@contextlib.contextmanager
def publish_unit(manifest: str | Path, *, writer: str) -> Iterator[PublishedUnit]:
    """Publish a stage's outputs as one unit, vouched for by ``manifest`` (written last).

    Everything written through the yielded :class:`PublishedUnit` stays staged until the block
    ends; on an exception it is deleted and every previous output, the manifest included, is
    left as it was. ``writer`` (the command) is recorded in the manifest and named by
    :func:`check_manifest` when files disagree with it.
    """
    unit = PublishedUnit(Path(manifest), writer)
    try:
        yield unit
    except BaseException:
        unit.discard()
        raise
    try:
        unit.commit()
    finally:
        unit.discard()  # staging folders emptied by the commit, or left by a failed one
