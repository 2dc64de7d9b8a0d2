"""The promotion lock: one promotion at a time per registered model, across processes and hosts.

The lock is the registered model ``<name>.promotion-lock``: creating a registered model is atomic
in every MLflow store (a unique name in its database, behind a server or not), so exactly one
caller holds it; deleting it releases it. Its owner (:func:`process_owner`: host, pid, process
start time) is recorded on it, so a lock left by a killed process of this host is broken at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recfound.errors import UserInputError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"  # registered model that exists while a promotion runs
LOCK_OWNER_TAG = "recfound.lock_owner"
LOCK_WAIT_S = 600.0  # how long a promotion waits for another one to finish
LOCK_STALE_S = 900.0  # a lock older than this was left by a killed promotion: broken


class RegistryError(UserInputError):
    """The registry cannot do what was asked (unknown version, a version without scores, a
    promotion lock held too long, …)."""


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc; None without /proc or
    without such a process). With the pid it names one process: a pid is reused, this is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command's ")"


def process_owner() -> str:
    """``host:pid:start:nonce``: this process, as recorded in a lock or on a version it
    registers, so that another process on the same host can tell whether it is still alive."""
    return (
        f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or '?'}:"
        f"{uuid.uuid4().hex[:8]}"
    )


def owner_is_gone(owner: str) -> bool:
    """True when ``owner`` (:func:`process_owner`) is a process of this host that no longer runs
    (no such pid, or the pid now belongs to a process started at another time). False when
    that cannot be told: another host, an owner of an older format, no /proc."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, start = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, run by another user
    if start == "?" or _process_start(os.getpid()) is None:
        return False  # no /proc here: a live pid is taken for the owner
    return _process_start(pid) != start


def _delete_lock(client: MlflowClient, lock_name: str) -> None:
    try:
        client.delete_registered_model(lock_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


@contextlib.contextmanager
def promotion_lock(
    client: MlflowClient,
    name: str,
    *,
    wait_s: float = LOCK_WAIT_S,
    stale_s: float = LOCK_STALE_S,
    poll_s: float = 0.2,
) -> Iterator[str]:
    """Hold the promotion lock of registered model ``name``; yields the lock's owner id.

    The lock is the registered model ``<name>.promotion-lock``: creating it succeeds for exactly
    one caller (MLflow stores keep registered model names unique), deleting it releases it. A
    lock whose owner is a process of this host that is gone (:func:`owner_is_gone`: pid and
    start time) is broken at once, with a warning; one older than ``stale_s`` (an owner on
    another host) was left by a killed promotion and is broken too; one held longer than
    ``wait_s`` by a live promotion is a :class:`RegistryError`.
    """
    lock_name = f"{name}{LOCK_SUFFIX}"
    owner = process_owner()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                lock_name,
                tags={LOCK_OWNER_TAG: owner},
                description=f"held while a promotion of {name!r} runs; deleted after it",
            )
            break
        except MlflowException as exc:
            # a sqlite store answers "does not exist" when the lock went between its two reads
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        try:
            held = client.get_registered_model(lock_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue  # released meanwhile: try again at once
            raise
        age_s = time.time() - (held.creation_timestamp or 0) / 1000
        holder = held.tags.get(LOCK_OWNER_TAG, "unknown")
        if owner_is_gone(holder):
            log.warning(
                "breaking the promotion lock %s at once: its owner %s is gone (killed during a "
                "promotion)",
                lock_name,
                holder,
            )
            _delete_lock(client, lock_name)
            continue
        if age_s > stale_s:
            log.warning(
                "breaking the promotion lock %s of %s, %.0f s old", lock_name, holder, age_s
            )
            _delete_lock(client, lock_name)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"another promotion of {name!r} holds the lock {lock_name!r} ({holder}, for "
                f"{age_s:.0f} s); waited {wait_s:.0f} s. If no registration is running, delete "
                f"the registered model {lock_name!r} (it is broken by itself after {stale_s:.0f} s)"
            )
        time.sleep(poll_s)
    try:
        yield owner
    finally:
        _delete_lock(client, lock_name)
