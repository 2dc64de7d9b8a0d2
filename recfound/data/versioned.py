"""DVC-versioned data from a data repository at a Git revision (what a cluster run reads).

A Kubeflow run does not re-read the raw source: it fetches the normalized tables that
``dvc repro`` produced and ``dvc push`` stored, at the revision the user names, from the
repository's DVC remote (S3/MinIO on a cluster with ``dvc-s3``; any remote DVC supports), and
records their md5 from that revision's ``dvc.lock``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from recfound.data.version import DataVersion, locked_md5
from recfound.errors import UserInputError

log = logging.getLogger(__name__)


class DataFetchError(UserInputError):
    """The data repository, revision, remote or path cannot give the data asked for."""


@dataclass(frozen=True)
class DataLocation:
    """Where the versioned data lives.

    ``repo``: a Git URL or a local path of the data repository (a DVC project); ``rev``: a
    branch, tag or commit (None: the default branch); ``remote``: a DVC remote of that
    repository (None: its default remote); ``path``: the DVC output inside it (None: the
    repository's ``paths.interim`` from its params.yaml at that revision, else data/interim).
    """

    repo: str
    rev: str | None = None
    remote: str | None = None
    path: str | None = None


def _read_yaml(fs, path: str) -> dict | None:
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return yaml.safe_load(handle) or {}


def fetch_dvc_output(location: DataLocation, dest: str | Path) -> DataVersion:
    """Download the DVC output ``location.path`` at ``location.rev`` into ``dest``.

    Returns its :class:`DataVersion` (md5 from that revision's dvc.lock, the resolved commit).
    Raises :class:`DataFetchError` naming what is wrong (unknown revision, no dvc.lock, a path
    that is not an output, data missing from the remote).
    """
    from dvc.exceptions import DvcException
    from dvc.fs import download
    from dvc.repo import Repo
    from dvc.repo.open_repo import clean_repos
    from scmrepo.exceptions import SCMError

    where = f"{location.repo}@{location.rev or 'default branch'}"
    try:
        with Repo.open(
            url=location.repo,
            rev=location.rev or None,
            subrepos=True,
            uninitialized=True,
            remote=location.remote or None,
        ) as repo:
            commit = repo.get_rev()  # the commit of rev (the clone's HEAD may differ)
            root = repo.root_dir
            lock = _read_yaml(repo.fs, repo.fs.join(root, "dvc.lock"))
            if lock is None:
                raise DataFetchError(
                    f"{where} has no dvc.lock: run `dvc repro` there and commit dvc.lock"
                )
            params = _read_yaml(repo.fs, repo.fs.join(root, "params.yaml")) or {}
            path = location.path or (params.get("paths") or {}).get("interim") or "data/interim"
            md5 = locked_md5(lock, path)
            if md5 is None:
                raise DataFetchError(
                    f"{path} is not an output in dvc.lock of {where}; name a DVC-tracked "
                    "output (e.g. data/interim)"
                )
            log.info("fetching %s (md5 %s) from %s (commit %s)", path, md5, where, commit[:12])
            download(repo.dvcfs, repo.dvcfs.from_os_path(path), str(Path(dest).resolve()))
    except (DvcException, SCMError) as exc:
        raise DataFetchError(
            f"cannot fetch the data of {where}"
            + (f" from DVC remote {location.remote!r}" if location.remote else "")
            + f": {exc}. Check the repository URL, the revision, and that `dvc push` stored "
            "the data in the remote (credentials: the remote's settings, e.g. "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3)"
        ) from None
    finally:
        clean_repos()  # the temporary clone and its cache (`dvc get` does the same on exit)
    return DataVersion(md5=md5, path=path, revision=commit, repo=location.repo)
