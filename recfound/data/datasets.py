"""Reading the task datasets that ``build-tasks`` wrote (``<tasks_dir>/<task>/<split>.parquet``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recfound.errors import UserInputError


class TaskDataError(UserInputError):
    """The task datasets are missing or unreadable."""


def read_task_frames(
    tasks_dir: str | Path, splits: tuple[str, ...] = ("train", "valid", "test")
) -> dict[str, dict[str, pd.DataFrame]]:
    """Task → split → records, for every task folder under ``tasks_dir``."""
    tasks_dir = Path(tasks_dir)
    folders = sorted(p for p in tasks_dir.glob("*") if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise TaskDataError(f"no task datasets under {tasks_dir}: run `recfound build-tasks` first")
    frames: dict[str, dict[str, pd.DataFrame]] = {}
    for folder in folders:
        frames[folder.name] = {}
        for split in splits:
            path = folder / f"{split}.parquet"
            try:
                frames[folder.name][split] = pd.read_parquet(path)
            except (OSError, ValueError) as exc:
                raise TaskDataError(f"cannot read {path}: {exc}") from None
    return frames


def task_kind(frames: dict[str, pd.DataFrame]) -> str:
    """The kind ('embedding' or 'generative') of a task, from its records."""
    for frame in frames.values():
        if len(frame):
            return str(frame["kind"].iloc[0])
    raise TaskDataError("a task has no records in any split")
