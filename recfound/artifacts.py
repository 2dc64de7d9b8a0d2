"""Atomic writes: an artifact is either the old complete file or the new complete file, never half.

Files are written to a temporary sibling and moved into place with :func:`os.replace` (atomic on one
filesystem). A directory of outputs is built in a temporary sibling and swapped in as a whole, so a
crash or a failed check midway leaves the previous outputs untouched.

Several files that share a folder with other stages' outputs (evaluate's reports) are published as
a unit by a *manifest* written last: :func:`write_manifest` records each file's SHA-256 and
:func:`check_manifest` refuses files that disagree with it (a run killed between two files leaves
the old manifest, or none, so its reader sees the mix instead of using it).

Files are created with the user's umask (as ``open`` does), not the 0600 of :mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    _write_via_temp(Path(path), lambda tmp: tmp.write_text(text))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _write_via_temp(Path(path), lambda tmp: tmp.write_text(text))


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


def write_manifest(manifest: str | Path, files: list[str | Path], *, writer: str) -> None:
    """Record the SHA-256 of ``files`` (paths relative to the manifest's folder in the record)
    in ``manifest``, atomically. Write it after every file it lists: then the files and the
    manifest agree only when the whole unit was written."""
    manifest = Path(manifest)
    digests = {
        Path(f).resolve().relative_to(manifest.parent.resolve()).as_posix(): file_digest(f)
        for f in files
    }
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
        if not path.is_file():
            wrong.append(f"{name} is missing")
        elif file_digest(path) != expected:
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
