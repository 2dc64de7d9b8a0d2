"""The version of the data a run used: the DVC md5 of the normalized tables and its Git revision.

A :class:`DataVersion` names the normalized tables (``paths.interim``, the output of `ingest`)
that every later stage builds on: the md5 DVC recorded for them in ``dvc.lock``, the Git
revision of that ``dvc.lock``, and the repository. It is found, in this order,

1. in ``data_version.json`` inside the data folder: written by `fetch-data` (the first step of a
   Kubeflow run that reads a data repository at a revision) and carried along by `build-tasks`,
   so it travels with the KFP artifacts;
2. in ``dvc.lock`` of the working directory (``dvc repro``), with ``git rev-parse HEAD``;
3. as a content hash (no DVC at all): of the task datasets where the caller has them, since
   every stage that logs a run sees them and the stages after `build-tasks` in a Kubeflow run
   see no normalized tables; else of the normalized tables. One run then logs one digest.

Nothing here knows MLflow: :mod:`recfound.tracking.lineage` logs a version as an MLflow dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DATA_VERSION_FILE = "data_version.json"
DVC_LOCK = "dvc.lock"
DIGEST_LENGTH = 36  # MLflow stores at most 36 characters (a DVC directory md5 is exactly 36)


@dataclass(frozen=True)
class DataVersion:
    """The version of the data a run used.

    ``md5``: DVC's md5 of ``path`` (``<32 hex>.dir`` for a folder), or ``sha256:…`` for a content
    hash; ``revision``: the Git commit of the ``dvc.lock`` that records it (None outside Git);
    ``repo``: the data repository (a URL or a local path); ``origin``: ``dvc.lock``, ``content``
    or ``missing``.
    """

    md5: str
    path: str
    revision: str | None = None
    repo: str | None = None
    origin: str = "dvc.lock"

    @property
    def digest(self) -> str:
        """The md5 as an MLflow dataset digest (at most 36 characters)."""
        return self.md5[:DIGEST_LENGTH]

    def describe(self) -> str:
        """``md5 @ revision`` as one short line (tags, descriptions, logs)."""
        at = f" @ {self.revision[:12]}" if self.revision else ""
        return f"{self.path} {self.md5}{at}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataVersion:
        return cls(**{k: raw[k] for k in ("md5", "path", "revision", "repo", "origin") if k in raw})


# ---- dvc.lock -----------------------------------------------------------------------------


def locked_md5(lock: dict[str, Any], out_path: str) -> str | None:
    """The md5 a parsed ``dvc.lock`` records for the output ``out_path`` (relative, POSIX)."""
    wanted = Path(out_path).as_posix().rstrip("/")
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if Path(out.get("path", "")).as_posix().rstrip("/") == wanted and out.get("md5"):
                return str(out["md5"])
    return None


def read_lock(lock_path: str | Path) -> dict[str, Any] | None:
    """``dvc.lock`` parsed, or None when it is missing or not valid YAML (with a warning)."""
    lock_path = Path(lock_path)
    if not lock_path.is_file():
        return None
    try:
        return yaml.safe_load(lock_path.read_text()) or {}
    except yaml.YAMLError:
        log.warning("%s is not valid YAML; the data version is a content hash instead", lock_path)
        return None


def dvc_locked_md5(out_dir: str | Path, lock_path: str | Path = DVC_LOCK) -> str | None:
    """The md5 DVC recorded in ``dvc.lock`` for the output folder ``out_dir``, or None."""
    lock = read_lock(lock_path)
    if lock is None:
        return None
    root = Path(lock_path).resolve().parent
    try:
        relative = Path(out_dir).resolve().relative_to(root)
    except ValueError:
        return None
    return locked_md5(lock, relative.as_posix())


def content_hash(directory: str | Path) -> str:
    """A deterministic hash of a directory's files (relative paths and bytes): ``sha256:…``."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.name == DATA_VERSION_FILE:
            continue
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


def git_commit(directory: str | Path = ".") -> str | None:
    """The commit checked out in ``directory`` (None outside a Git repository)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def code_commit() -> str | None:
    """The commit of the running recfound code (its checkout; None for an installed wheel)."""
    return git_commit(Path(__file__).resolve().parent)


# ---- the data version of a run ------------------------------------------------------------


def write_data_version(folder: str | Path, version: DataVersion) -> Path:
    """Record ``version`` inside the data folder, so it travels with the folder (KFP artifacts)."""
    path = Path(folder) / DATA_VERSION_FILE
    path.write_text(json.dumps(version.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def recorded_data_version(folder: str | Path) -> DataVersion | None:
    """The version written into ``folder`` by `fetch-data` (carried by `build-tasks`), or None."""
    path = Path(folder) / DATA_VERSION_FILE
    if not path.is_file():
        return None
    return DataVersion.from_dict(json.loads(path.read_text()))


def data_version(
    interim_dir: str | Path, tasks_dir: str | Path | None = None, lock_path: str | Path = DVC_LOCK
) -> DataVersion:
    """The version of the normalized tables a run builds on (see the module docstring).

    ``tasks_dir`` is looked at first for a carried ``data_version.json`` (stages downstream of
    `build-tasks` see only the task datasets in a Kubeflow run).
    """
    for folder in (tasks_dir, interim_dir):
        if folder is not None and (recorded := recorded_data_version(folder)) is not None:
            return recorded
    path = Path(interim_dir).as_posix()
    md5 = dvc_locked_md5(interim_dir, lock_path)
    if md5:
        root = Path(lock_path).resolve().parent
        return DataVersion(md5, path, git_commit(root), str(root), "dvc.lock")
    for folder in (tasks_dir, interim_dir):  # every stage of a run sees the same tasks
        if folder is not None and Path(folder).is_dir():
            return DataVersion(content_hash(folder), Path(folder).as_posix(), origin="content")
    log.warning("no data at %s and no dvc.lock entry: data version unknown", interim_dir)
    return DataVersion("unknown", path, origin="missing")
