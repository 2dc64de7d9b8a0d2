"""First use of an MLflow store by several processes at once.

MLflow creates a sqlite database's tables (alembic migrations) on first connection; two processes
doing that together crash with a raw alembic / SQLAlchemy error. :func:`store_init_lock` holds an
exclusive file lock next to a sqlite database (``<file>.lock``) while a process opens it, so
the second waits for the first's tables. A server creates its own tables once; there, and for
sqlite, two processes creating the same experiment together is settled by
:func:`create_experiment_once`.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import mlflow
from mlflow.exceptions import MlflowException

from recfound.errors import UserInputError


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI, as SQLAlchemy reads it (an absolute path
    after the third slash, else relative to the working directory); None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix) :].partition("?")[0])
    return None if path in ("", ":memory:") else Path(path)


class TrackingStoreError(UserInputError):
    """The tracking store cannot be used: a sqlite file in a folder that does not exist, or a
    server that does not answer."""


SERVER_TIMEOUT_S = 10.0  # how long a tracking server may take to answer the first request


def check_tracking_store(uri: str, timeout_s: float = SERVER_TIMEOUT_S) -> None:
    """Before a stage starts work: the store at ``uri`` is usable, or :class:`TrackingStoreError`.

    A sqlite database's folder must exist (a typo would otherwise start an empty registry whose
    first version becomes champion without gates); an ``http(s)`` server must answer within
    ``timeout_s`` (any HTTP status counts: the check is for a listener, not for credentials).
    """
    path = sqlite_path(uri)
    if path is not None and not path.resolve().parent.is_dir():
        raise TrackingStoreError(
            f"the tracking store {uri} is in a folder that does not exist "
            f"({path.resolve().parent}); create the folder, or fix tracking.tracking_uri / "
            "MLFLOW_TRACKING_URI (a new empty store would start a registry without a champion)"
        )
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # it answered
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                what = "nothing listens there"
            elif isinstance(reason, socket.gaierror):
                what = "its host name does not resolve"
            elif isinstance(reason, TimeoutError):
                what = f"no answer within {timeout_s:g} s"
            else:
                what = "it cannot be reached"
            raise TrackingStoreError(
                f"no MLflow server answers at {uri}: {what} ({reason}); start it (or "
                "port-forward it), or fix tracking.tracking_uri / MLFLOW_TRACKING_URI"
            ) from None


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Exclusive lock for opening the store at ``uri`` (a no-op unless it is a sqlite file)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_experiment_once(
    name: str, artifact_location: str | None, tags: dict[str, str] | None = None
) -> None:
    """Create experiment ``name`` unless it exists (another process may create it meanwhile)."""
    if mlflow.get_experiment_by_name(name) is not None:
        return
    try:
        mlflow.create_experiment(name, artifact_location=artifact_location, tags=tags)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
