"""Data lineage: the data version a run used (:mod:`recfound.data.version`), logged as an MLflow
dataset.

Every stage run logs its input as an MLflow dataset (:func:`log_task_datasets`): digest = the
DVC md5, source = repository + revision + path, context = training / validation / test, profile
= record counts of that split. From a registered version a user follows version → run →
dataset → revision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recfound.data.version import (
    DATA_VERSION_FILE,
    DIGEST_LENGTH,
    DVC_LOCK,
    DataVersion,
    code_commit,
    content_hash,
    data_version,
    dvc_locked_md5,
    git_commit,
    locked_md5,
    read_lock,
    recorded_data_version,
    write_data_version,
)
from recfound.layout import MANIFEST_FILE

log = logging.getLogger(__name__)

__all__ = [
    "DATA_VERSION_FILE",
    "DIGEST_LENGTH",
    "DVC_LOCK",
    "SPLIT_CONTEXTS",
    "DataVersion",
    "code_commit",
    "content_hash",
    "data_version",
    "dvc_locked_md5",
    "git_commit",
    "locked_md5",
    "log_task_datasets",
    "read_lock",
    "recorded_data_version",
    "task_datasets",
    "write_data_version",
]

# The MLflow context of each split of the task datasets.
SPLIT_CONTEXTS: dict[str, str] = {"training": "train", "validation": "valid", "test": "test"}


# ---- MLflow datasets ----------------------------------------------------------------------


def _dataset_classes() -> tuple[type, type]:
    """The MLflow dataset and source classes (built lazily: mlflow.data is slow to import)."""
    from mlflow.data.dataset import Dataset
    from mlflow.data.dataset_source import DatasetSource

    class DvcDatasetSource(DatasetSource):
        """Data versioned by DVC: a repository, a Git revision and a path in it."""

        def __init__(self, repo: str | None, rev: str | None, path: str, md5: str) -> None:
            self.repo, self.rev, self.path, self.md5 = repo, rev, path, md5

        @staticmethod
        def _get_source_type() -> str:
            return "dvc"

        def load(self, dst_path: str | None = None) -> str:
            from dvc.repo import Repo

            out = dst_path or Path(self.path).name
            Repo.get(self.repo or ".", self.path, out=out, rev=self.rev)
            return out

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
            raise NotImplementedError("a DVC source is built from a DataVersion")

        def to_dict(self) -> dict[str, Any]:
            return {"repo": self.repo, "rev": self.rev, "path": self.path, "md5": self.md5}

        @classmethod
        def from_dict(cls, source_dict: dict[str, Any]) -> DvcDatasetSource:
            return cls(**source_dict)

    class TaskSplitDataset(Dataset):
        """One split of the task datasets: its digest is the DVC md5, its profile the counts."""

        def __init__(
            self, source: DvcDatasetSource, name: str, digest: str, counts: dict[str, int]
        ) -> None:
            self._counts = counts
            super().__init__(source=source, name=name, digest=digest)

        def _compute_digest(self) -> str:
            return self.source.md5[:DIGEST_LENGTH]

        @property
        def profile(self) -> dict[str, int]:
            return {"num_records": sum(self._counts.values()), **self._counts}

        @property
        def schema(self) -> None:
            return None

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return DvcDatasetSource, TaskSplitDataset


def split_counts(tasks_dir: str | Path, split: str) -> dict[str, int]:
    """Task → number of records of ``split`` (from build-tasks' manifest; empty if none)."""
    path = Path(tasks_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    built = json.loads(path.read_text()).get("built", {})
    return {task: int(splits.get(split, 0)) for task, splits in sorted(built.items())}


def task_datasets(
    version: DataVersion, tasks_dir: str | Path, contexts: Sequence[str]
) -> list[tuple[Any, str]]:
    """``(dataset, context)`` for each context (``training``, ``validation``, ``test``)."""
    source_cls, dataset_cls = _dataset_classes()
    source = source_cls(version.repo, version.revision, version.path, version.md5)
    out = []
    for context in contexts:
        split = SPLIT_CONTEXTS[context]
        counts = split_counts(tasks_dir, split)
        dataset = dataset_cls(source, f"recfound-tasks/{split}", version.digest, counts)
        out.append((dataset, context))
    return out


def log_task_datasets(version: DataVersion, tasks_dir: str | Path, contexts: Sequence[str]) -> None:
    """Log the task datasets the active run read, one per context, as MLflow inputs."""
    import mlflow

    for dataset, context in task_datasets(version, tasks_dir, contexts):
        mlflow.log_input(dataset, context=context)
