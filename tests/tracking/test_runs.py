"""Which MLflow store a stage uses: params.yaml's, unless the user set MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from recfound.config import TrackingConfig
from recfound.tracking.runs import KILLED_NOTE_TAG, configure_tracking, stage_run


def store(tmp_path: Path, name: str) -> TrackingConfig:
    return TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / name}.db", artifact_location=str(tmp_path / name)
    )


def test_params_store_is_used_and_does_not_stick(tmp_path: Path) -> None:
    first, second = store(tmp_path, "a"), store(tmp_path, "b")
    assert configure_tracking(first) == first.tracking_uri
    assert configure_tracking(second) == second.tracking_uri  # not the URI exported before
    assert mlflow.get_tracking_uri() == second.tracking_uri


def test_the_users_environment_wins_on_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users)
    assert configure_tracking(store(tmp_path, "a")) == users
    assert configure_tracking(store(tmp_path, "b")) == users


# --- runs left RUNNING by a killed process (issue 15) -----------------------------------------

OPEN_A_RUN = """
import os, signal, sys
import mlflow
from recfound.config import TrackingConfig
from recfound.tracking.runs import stage_run

cfg = TrackingConfig(tracking_uri=sys.argv[1], artifact_location=sys.argv[2])
with stage_run(cfg, "merge", {"trials": 2}) as run:
    with mlflow.start_run(run_name="trial-0", nested=True) as child:
        print(run.info.run_id, child.info.run_id, flush=True)
        if sys.argv[3] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.readline()  # stay alive (and RUNNING) until the test lets go
"""


def _open_run(cfg: TrackingConfig, how: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", OPEN_A_RUN, cfg.tracking_uri, cfg.artifact_location, how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    ids = process.stdout.readline().split()
    assert len(ids) == 2
    return process, ids


def test_runs_of_a_killed_process_are_marked_killed_on_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = store(tmp_path, "runs")
    killed, (parent, child) = _open_run(cfg, "kill")
    assert killed.wait(timeout=120) == -signal.SIGKILL
    client = mlflow.MlflowClient(cfg.tracking_uri)
    assert client.get_run(parent).info.status == "RUNNING"  # nobody could close it
    alive, (alive_parent, _) = _open_run(cfg, "wait")  # the next start closes it
    try:
        with stage_run(cfg, "merge", {"trials": 2}) as run:  # and one more start
            assert run.info.status == "RUNNING"
        for run_id in (parent, child):
            closed = client.get_run(run_id)
            assert closed.info.status == "KILLED"
            assert closed.data.tags[KILLED_NOTE_TAG].startswith("its process ended")
        assert client.get_run(alive_parent).info.status == "RUNNING"  # its process still runs
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
    finally:
        alive.communicate("\n", timeout=120)
    assert client.get_run(alive_parent).info.status == "FINISHED"


# --- the store is checked before a stage starts work (issue 24) --------------------------------


def test_a_store_that_cannot_be_used_is_named_before_any_work(tmp_path: Path) -> None:
    from recfound.tracking.store import TrackingStoreError
    from tests.tracking.conftest import free_port

    missing = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/no-such-folder/mlflow.db")
    with pytest.raises(TrackingStoreError, match=r"folder that does not exist \(.*no-such-folder"):
        configure_tracking(missing)
    assert not (tmp_path / "no-such-folder").exists()  # no empty registry was started

    nobody = TrackingConfig(tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingStoreError, match=r"no MLflow server answers at http://127") as e:
        configure_tracking(nobody)
    assert "nothing listens there" in str(e.value) and "within" not in str(e.value)


def test_a_server_that_accepts_but_never_answers_is_named_with_the_wait() -> None:
    from recfound.tracking.store import TrackingStoreError, check_tracking_store

    with socket.socket() as silent:  # the kernel accepts the connection; nobody reads it
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(TrackingStoreError, match=r"no answer within 0\.5 s") as e:
            check_tracking_store(uri, timeout_s=0.5)
    assert "fix tracking.tracking_uri" in str(e.value)
