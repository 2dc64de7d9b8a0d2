"""`recfound pipeline run-local` on tiny params: a failing step stops the run and is named; what a
successful run leaves (every step through kfp.local's subprocess runner, the model in the local
MLflow registry as `recfound@champion`) is checked by :func:`check_run_local_outputs`, called on
the full run in tests/pipelines/test_dvc_data.py.

The params are test_dvc_pipeline.py's tiny ones, cut further for time: 30 users, one embedding and
three generative tasks, two checkpoints to merge (merge and evaluate embed the whole catalogue for
every model they score).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.recfound_pipeline import MLFLOW_STEPS
from tests.conftest import write_tiny_params

pytestmark = pytest.mark.slow

# the data steps, then every step that logs an MLflow run
STEPS = ("check-params", "ingest", "validate", "build-tasks", *MLFLOW_STEPS)


def _tiny_params(path: Path) -> Path:
    return write_tiny_params(
        path,
        data={"max_users": 30},
        tasks={
            "enabled": [
                "user2item",
                "sequential_recommendation",
                "rating_prediction",
                "ctr_prediction",
            ],
            "max_train_per_task": 60,
            "max_eval_per_task": 15,
        },
        merge={
            "trials": 2,
            "max_per_task": 8,
            "checkpoints": ["best_generative", "best_embedding"],
        },
        evaluate={"max_per_task": 8, "max_new_tokens": 4},
    )


def run_local(
    work: Path, *params: str, timeout: int, output_dir: str = "kfp"
) -> subprocess.CompletedProcess[str]:
    """`recfound pipeline run-local --output-dir <output_dir>` in ``work`` with ``--param`` each of
    ``params``, tracking to ``work``'s own sqlite store."""
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    flags = [flag for param in params for flag in ("--param", param)]
    return subprocess.run(
        [sys.executable, "-m", "recfound.cli", "pipeline", "run-local", "--output-dir", output_dir]
        + flags,
        cwd=work,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_run_local_outputs(run_dir: Path, stdout: str, tracking_uri: str) -> None:
    """What a first successful local run leaves: every step's outputs, the trained baselines
    found by evaluate, the plots, and the model registered as ``recfound@champion``. (The run
    itself is in tests/pipelines/test_dvc_data.py, which runs the pipeline from raw data and then
    from a data revision into one store.)"""
    assert run_dir.name.startswith("recfound-")
    for step in STEPS:
        assert (run_dir / step / "executor_output.json").is_file(), step
    assert (run_dir / "train" / "checkpoints" / "last").is_dir()
    assert (run_dir / "baselines" / "baselines" / "sasrec").is_dir()
    assert (run_dir / "baselines" / "baselines" / "mf").is_dir()
    evaluation = (run_dir / "evaluate" / "report" / "metrics.json").read_text()
    assert '"sasrec"' in evaluation  # evaluate found the trained baselines
    assert "<img" in (run_dir / "train" / "plots").read_text()

    client = MlflowClient(tracking_uri=tracking_uri)
    (version,) = client.search_model_versions("name='recfound'")
    assert client.get_model_version_by_alias("recfound", "champion").version == version.version
    registry = json.loads((run_dir / "register" / "report" / "registry.json").read_text())
    assert registry["version"] == int(version.version)
    assert registry["alias"] == "champion"
    assert f"recfound version {version.version} (aliases: champion)" in stdout
    assert str(run_dir) in stdout

    experiment = client.get_experiment_by_name("recfound")
    runs = client.search_runs([experiment.experiment_id])
    stages = {run.data.tags.get("recfound.stage") for run in runs}
    assert {"baselines", "pretrain", "train", "merge", "evaluate"} <= stages


def test_a_failing_step_stops_the_local_run_and_names_it(tmp_path: Path) -> None:
    _tiny_params(tmp_path / "params.yaml")
    result = run_local(
        tmp_path,
        "data_from=raw",
        "data.source=recbole_atomic",
        f"data.path={tmp_path / 'missing'}",
        "data.dataset_name=mini",
        timeout=600,
    )
    assert result.returncode == 1
    assert "local pipeline run failed" in result.stderr and "'ingest'" in result.stderr
    assert "missing source file" in result.stdout  # the step's own error, in its log
    (run_dir,) = (tmp_path / "kfp").iterdir()
    assert not (run_dir / "validate").exists()  # nothing ran after the failed step
