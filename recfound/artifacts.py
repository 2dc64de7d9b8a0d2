"""Atomic writes: an artifact is either the old complete file or the new complete file, never half.

Files are written to a temporary sibling and moved into place with :func:`os.replace` (atomic on one
filesystem). A directory of outputs is built in a temporary sibling and swapped in as a whole, so a
crash or a failed check midway leaves the previous outputs untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd


def _write_via_temp(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
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
