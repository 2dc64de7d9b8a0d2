"""Which MLflow store a stage uses: params.yaml's, unless the user set MLFLOW_TRACKING_URI."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from recfound.config import TrackingConfig
from recfound.tracking.runs import configure_tracking


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
