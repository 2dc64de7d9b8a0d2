"""A tiny real model for the registry tests: a small Llama backbone directory and a bundle of
three tasks (``match`` embedding; ``genre`` and ``year`` generative) built from ml-100k titles."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from recfound.model.backbone import (
    build_builtin_backbone,
    load_backbone,
    save_backbone,
    train_bpe_tokenizer,
)
from recfound.model.bundle import ModelSpec, adapter_tensors, build_from_spec, save_bundle
from tests.conftest import write_params
from tests.train.tiny import ADAPTER, SPEC, tiny_tasks


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(backbone_dir, bundle_dir)`` of a tiny, randomly initialised RecFound model."""
    root = tmp_path_factory.mktemp("tiny_model")
    tasks = tiny_tasks(n_train=60, n_valid=8)
    texts = [str(t) for task in tasks for t in pd.concat([task.train.prompt, task.train.target])]
    tokenizer = train_bpe_tokenizer(texts, SPEC.vocab_size)
    base = build_builtin_backbone(SPEC, tokenizer, seed=0)
    save_backbone(base, tokenizer, root / "backbone")
    spec = ModelSpec(
        adapter=ADAPTER, task_kinds={t.name: t.kind for t in tasks}, seed=0, max_length=48
    )
    base, tokenizer = load_backbone(root / "backbone")
    rec = build_from_spec(base, tokenizer, spec)
    generator = torch.Generator().manual_seed(0)
    tensors = {  # move the adapter off its initial values so it does change the outputs
        name: value + 0.02 * torch.randn(value.shape, generator=generator)
        for name, value in adapter_tensors(rec).items()
    }
    save_bundle(root / "bundle", spec, tensors)
    return root / "backbone", root / "bundle"


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
