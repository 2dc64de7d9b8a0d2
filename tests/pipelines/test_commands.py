"""What `recfound pipeline run-local` prints when it finishes: how to look at the runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION as JOBS

from pipelines.commands import LocalRun


def _summary(tmp_path: Path, tracking_uri: str) -> str:
    run = LocalRun(tmp_path, tracking_uri, "recfound", "3", ("champion",))
    return run.summary()


def test_a_local_store_is_opened_with_mlflow_ui_without_the_job_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The printed command starts `mlflow ui` on the run's store the way `make ui` does: the
    variable is the one MLflow reads, and MLflow's own parser reads its value as off."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = _summary(tmp_path, store)
    (line,) = [line for line in summary.splitlines() if line.startswith("  MLflow: ")]
    command = line.split("(", 1)[1].split(", then open ")[0]
    assignment, *words = shlex.split(command)
    name, value = assignment.split("=")
    assert name == JOBS.name
    monkeypatch.setenv(name, value)
    assert JOBS.get() is False
    assert words == ["mlflow", "ui", "--backend-store-uri", store]
    assert "workflowType=machine_learning" in line
    assert "recfound version 3 (aliases: champion)" in summary


def test_a_tracking_server_is_opened_at_its_address_in_the_training_view(tmp_path: Path) -> None:
    summary = _summary(tmp_path, "https://mlflow.example.com/")
    view = "#/experiments?workflowType=machine_learning"
    assert f"  MLflow: https://mlflow.example.com/  (open https://mlflow.example.com/{view})" in (
        summary
    )
    assert "mlflow ui" not in summary
