"""Lineage in MLflow: every stage run names what ran, shares its pipeline run's group tag and
logs the task datasets it read (DVC md5 as digest, the revision as source)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recfound.config import TrackingConfig, load_config
from recfound.tracking.lineage import DataVersion, data_version, write_data_version
from recfound.tracking.runs import (
    RUN_GROUP_ENV,
    child_run,
    run_named,
    stage_run,
    task_inputs,
)
from tests.conftest import sqlite_tracking, write_params


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A params.yaml whose tasks folder holds a build-tasks manifest and a fetched data version."""
    monkeypatch.setenv(RUN_GROUP_ENV, "kfp-run-1")
    tasks = tmp_path / "data" / "tasks"
    tasks.mkdir(parents=True)
    manifest = {"built": {"user2item": {"train": 40, "valid": 5, "test": 5},
                          "rating_prediction": {"train": 60, "valid": 7, "test": 6}}}  # fmt: skip
    (tasks / "manifest.json").write_text(json.dumps(manifest))
    version = DataVersion("0123456789abcdef0123456789abcdef.dir", "data/interim", "c" * 40, "/repo")
    write_data_version(tasks, version)
    params = write_params(
        tmp_path / "params.yaml",
        paths={"tasks": str(tasks), "interim": str(tmp_path / "data" / "interim")},
        tracking=sqlite_tracking(tmp_path),
    )
    return load_config(params), version


def test_a_stage_run_logs_its_datasets_name_and_group(project) -> None:
    cfg, version = project
    inputs = task_inputs(cfg, "training", "validation")
    with (
        stage_run(cfg.tracking, "train", {"seed": 1}, inputs=inputs) as run,
        child_run("merge trial 3"),
    ):
        pass
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    logged = client.get_run(run.info.run_id)
    assert logged.info.run_name == "train"
    assert logged.data.tags["recfound.run_group"] == "kfp-run-1"
    assert logged.data.tags["recfound.data_version"] == version.md5
    assert logged.data.tags["recfound.data_revision"] == version.revision
    inputs = {d.tags[0].value: d.dataset for d in logged.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"}
    training = inputs["training"]
    assert training.digest == version.md5 and training.name == "recfound-tasks/train"
    assert training.source_type == "dvc"
    assert json.loads(training.source) == {
        "repo": "/repo", "rev": "c" * 40, "path": "data/interim", "md5": version.md5,
    }  # fmt: skip
    assert json.loads(training.profile) == {
        "num_records": 100, "rating_prediction": 60, "user2item": 40,
    }  # fmt: skip
    assert json.loads(inputs["validation"].profile)["num_records"] == 12

    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (child,) = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert child.info.run_name == "merge trial 3"
    assert child.data.tags["recfound.run_group"] == "kfp-run-1"


def test_run_named_names_the_ablation_trainings(project) -> None:
    cfg, _ = project
    with run_named("ablation/without_all"), stage_run(cfg.tracking, "train", {}) as run:
        pass
    with stage_run(cfg.tracking, "train", {}) as plain:
        pass
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    assert client.get_run(run.info.run_id).info.run_name == "ablation/without_all"
    assert client.get_run(run.info.run_id).data.tags["recfound.stage"] == "train"
    assert client.get_run(plain.info.run_id).info.run_name == "train"


def test_an_existing_genai_experiment_opens_on_its_runs(tmp_path: Path) -> None:
    cfg = TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'old.db'}", artifact_location=str(tmp_path / "a")
    )
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.create_experiment(cfg.experiment)  # created before the kind was set
    with stage_run(cfg, "evaluate", {}) as run:
        pass
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_data_version_of_a_dvc_repro_comes_from_dvc_lock(tmp_path: Path) -> None:
    interim = tmp_path / "data" / "interim"
    interim.mkdir(parents=True)
    lock = {"stages": {"ingest": {"outs": [{"path": "data/interim", "md5": "feed.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    version = data_version(interim, tmp_path / "data" / "tasks", tmp_path / "dvc.lock")
    assert (version.md5, version.origin, version.revision) == ("feed.dir", "dvc.lock", None)
