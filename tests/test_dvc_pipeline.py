"""`dvc repro` on a copy of the repository (tiny params): stages run, a re-run does nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, write_tiny_params

pytestmark = pytest.mark.slow


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop(
        "MLFLOW_TRACKING_URI", None
    )  # the copy's own store (mlflow.set_tracking_uri exports it)
    return subprocess.run(
        [str(Path(bin_dir) / "dvc"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", ".dvcignore", "ablation/dvc.yaml"):
        if (REPO_ROOT / name).exists():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / name, work / name)
    shutil.copytree(
        REPO_ROOT / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache")
    )
    shutil.copytree(
        REPO_ROOT / "recfound", work / "recfound", ignore=shutil.ignore_patterns("__pycache__")
    )
    write_tiny_params(work / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


def test_dvc_repro_runs_every_stage_then_is_a_no_op(repo_copy: Path) -> None:
    first = _dvc("repro", cwd=repo_copy)
    assert first.returncode == 0, first.stdout + first.stderr
    stages = ("ingest", "validate", "build_tasks", "baselines", "pretrain", "train", "merge")
    for stage in (*stages, "evaluate", "register"):
        assert f"Running stage '{stage}'" in first.stdout
    assert "ablate" not in first.stdout  # the ablation is a pipeline of its own
    metrics = json.loads((repo_copy / "reports" / "task_counts.json").read_text())
    assert metrics["num_embedding_tasks"] == 3 and metrics["num_generative_tasks"] >= 10
    assert (repo_copy / "dvc.lock").is_file()
    assert (repo_copy / "models" / "backbone" / "config.json").is_file()
    for checkpoint in ("last", "best_generative", "best_embedding"):
        assert (repo_copy / "models" / "train" / checkpoint / "checkpoint.safetensors").is_file()
    train = json.loads((repo_copy / "reports" / "train.json").read_text())
    assert train["steps"] == 6
    assert (repo_copy / "reports" / "plots" / "train_task_share.png").is_file()
    merge = json.loads((repo_copy / "reports" / "merge.json").read_text())
    assert merge["trials"] == 2 and (repo_copy / "models" / "merged" / "model_spec.json").is_file()
    evaluation = json.loads((repo_copy / "reports" / "metrics.json").read_text())
    assert len(evaluation["tasks"]) == metrics["num_tasks"]  # zero_shot answered as ctr
    assert {"popularity", "item_knn", "bm25", "majority"} <= set(evaluation["baselines"])
    assert "| user2item | embedding |" in (repo_copy / "reports" / "evaluation.md").read_text()
    registry = json.loads((repo_copy / "reports" / "registry.json").read_text())
    assert int(registry["version"]) == 1 and registry["alias"] == "champion"

    second = _dvc("repro", cwd=repo_copy)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout

    ablate = _dvc("repro", "ablation/dvc.yaml", cwd=repo_copy)
    assert ablate.returncode == 0, ablate.stdout + ablate.stderr
    assert "Running stage 'ablation/dvc.yaml:ablate'" in ablate.stdout
    assert "Running stage 'train'" not in ablate.stdout  # reuses the main pipeline's outputs
    ablation = (repo_copy / "reports" / "ablation.md").read_text()
    rows = ("recfound", "without_merge", "without_merge_s2sched", "without_all", "option_tuning")
    for row in rows:
        assert f"| {row} |" in ablation
    status = _dvc("status", cwd=repo_copy)
    assert "up to date" in status.stdout

    shown = _dvc("metrics", "show", "--json", cwd=repo_copy)
    assert shown.returncode == 0
    assert "num_generative_tasks" in shown.stdout
