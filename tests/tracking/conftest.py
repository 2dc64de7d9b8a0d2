"""Registry test helpers: an isolated MLflow environment, metrics documents and params files
(the tiny model bundle is the shared ``tiny_bundle`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from tests.conftest import write_params


@pytest.fixture(autouse=True)
def isolated_mlflow(monkeypatch: pytest.MonkeyPatch):
    """No MLflow URI from the environment or an earlier test reaches these tests, and none leaks
    out of them (``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def write_metrics(path: Path, mean: float, task_scores: dict[str, float]) -> Path:
    """A reports/metrics.json in the evaluate stage's shape (every score higher-is-better)."""
    kinds = {"match": "embedding"}
    tasks = {
        task: {
            "kind": kinds.get(task, "generative"),
            "score_metric": "mrr@20",
            "score": score,
        }
        for task, score in task_scores.items()
    }
    payload = {
        "overall": {"mean_score": mean, "embedding_score": mean, "generative_score": mean},
        "tasks": tasks,
        "baselines": {},
        "n_records": {task: 10 for task in task_scores},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def project_params(root: Path, backbone: Path, bundle: Path, **sections: dict) -> Path:
    """A params.yaml whose paths point at the tiny model and a reports folder under ``root``."""
    tasks = root / "data" / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "manifest.json").write_text('{"tasks": ["genre", "year", "match"]}')
    paths = {
        "backbone": str(backbone),
        "merged": str(bundle),
        "tasks": str(tasks),
        "reports": str(root / "reports"),
    }
    return write_params(root / "params.yaml", paths=paths, **sections)
