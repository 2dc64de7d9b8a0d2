"""`recfound export --task T` writes the int8 artifact and logs it next to the registered version
(an artifact of the version's run, and a version tag pointing at it); the logged copy runs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recfound.cli import main
from recfound.config import load_config
from recfound.device.runtime import DeviceModel
from recfound.errors import EXIT_USER_ERROR
from recfound.stages.register import run_register
from tests.tracking.conftest import project_params, write_metrics


@pytest.fixture()
def registered(tmp_path: Path, tiny_bundle: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    backbone, bundle = tiny_bundle
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = project_params(
        tmp_path,
        backbone,
        bundle,
        tracking={"tracking_uri": uri, "artifact_location": str(tmp_path / "mlartifacts")},
    )
    cfg = load_config(params)
    write_metrics(Path(cfg.paths.reports) / "metrics.json", 0.4, {"genre": 0.3, "match": 0.5})
    monkeypatch.chdir(tmp_path)
    report = run_register(cfg)
    return params, uri, report


def test_export_logs_next_to_the_registered_version(registered, tmp_path: Path) -> None:
    params, uri, report = registered
    assert main(["export", "--task", "genre", "--params", str(params)]) == 0
    local = tmp_path / "models" / "device" / "genre"
    assert (local / "model.onnx").is_file()
    client = MlflowClient(tracking_uri=uri)
    version = client.get_model_version("recfound", str(report["version"]))
    tag = version.tags["device.genre"]
    assert tag == f"runs:/{report['mlflow_run_id']}/device/genre"
    copy = mlflow.artifacts.download_artifacts(
        tag, dst_path=str(tmp_path / "download"), tracking_uri=uri
    )
    device = DeviceModel(copy)
    assert device.manifest["provenance"]["version"] == report["version"]
    scores = device.score(["Which one?"], [["Heat (1995)", "Sabrina"]])
    assert len(scores[0]) == 2


def test_export_of_an_unknown_task_exits_with_a_message(registered, capsys, tmp_path: Path) -> None:
    params, _, _ = registered
    assert main(["export", "--task", "nope", "--params", str(params)]) == EXIT_USER_ERROR
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "models" / "device" / "nope").exists()
