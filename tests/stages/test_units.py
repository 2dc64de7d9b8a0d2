"""Every stage that writes several outputs publishes them as one unit (issue 24, scope item 1):
a run that fails while its outputs are being written leaves the previous ones byte for byte,
manifest included; a complete run leaves a manifest that vouches for every output.

One tiny pipeline (four tasks, 25 users, the built-in backbone) runs once; then each stage runs
again with its unit failing after its first report is staged (the moment a kill used to leave
a folder of the new run beside reports of the old one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from recfound import artifacts
from recfound.config import Config, load_config
from recfound.layout import EVALUATION_MANIFEST, unit_manifest
from recfound.stages.baselines import run_baselines
from recfound.stages.build_tasks import run_build_tasks
from recfound.stages.evaluate import run_evaluate
from recfound.stages.ingest import run_ingest
from recfound.stages.merge import run_merge
from recfound.stages.pretrain import run_pretrain
from recfound.stages.recommend import run_recommend
from recfound.stages.train import run_train
from recfound.stages.validate import run_validate
from tests.conftest import write_ml100k_slice, write_tiny_params

pytestmark = pytest.mark.slow

STAGES: dict[str, Callable[[Config], object]] = {
    "build_tasks": run_build_tasks,
    "baselines": run_baselines,
    "pretrain": run_pretrain,
    "train": run_train,
    "merge": run_merge,
    "evaluate": run_evaluate,
    "recommend": run_recommend,
}
# what each stage's unit holds besides its manifest (paths relative to the project)
OUTPUTS = {
    "build_tasks": {"data/tasks", "reports/task_counts.json"},
    "baselines": {"models/baselines", "reports/baselines.json"},
    "pretrain": {
        "models/backbone",
        "reports/pretrain.json",
        "reports/plots/pretrain_heldout_loss.json",
        "reports/plots/pretrain_curves.png",
    },
    "train": {
        "models/train",
        "reports/train.json",
        "reports/plots/train_task_share.json",
        "reports/plots/train_task_share.png",
        "reports/plots/train_val_loss.json",
        "reports/plots/train_val_loss.png",
    },
    "merge": {
        "models/merged",
        "reports/merge.json",
        "reports/plots/merge_trials.json",
        "reports/plots/merge_optimization_history.png",
        "reports/plots/merge_param_importances.png",
    },
    "evaluate": {
        "reports/metrics.json",
        "reports/eval_records.json",
        "reports/evaluation.md",
        "reports/plots/evaluation_scores.json",
        "reports/plots/evaluation_scores.png",
    },
    "recommend": {"data/recommendations/recommendations.parquet", "reports/recommend.json"},
}
# written by the stores of MLflow and Optuna, not by the stages' units; and the validation's own
# results, which build-tasks writes before its unit whether or not the datasets pass (they say
# why a build stopped)
NOT_OUTPUTS = ("mlflow.db", "mlartifacts", ".optuna.db", ".train.partial", "raw/", "validation/")


class Killed(RuntimeError):
    pass


def manifest_of(cfg: Config, stage: str) -> Path:
    reports = Path(cfg.paths.reports)
    return reports / EVALUATION_MANIFEST if stage == "evaluate" else unit_manifest(reports, stage)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part in p.relative_to(root).as_posix() for part in NOT_OUTPUTS)
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("units")
    raw = write_ml100k_slice(root / "raw", num_users=25)
    names = ("interim", "tasks", "recommendations")
    paths = {name: str(root / "data" / name) for name in names}
    for name in ("backbone", "train", "merged", "baselines"):
        paths[name] = str(root / "models" / name)
    params = write_tiny_params(
        root / "params.yaml",
        data={"source": "recbole_atomic", "path": str(raw), "dataset_name": "mini"},
        tasks={
            "enabled": [
                "user2item",
                "sequential_recommendation",
                "product_matching",
                "user_profile",
            ],
            "max_train_per_task": 24,
            "max_eval_per_task": 6,
        },
        paths={**paths, "reports": str(root / "reports")},
        pretrain={"steps": 4, "eval_every": 2},
        train={"steps": 4, "eval_every": 2, "checkpoint_every": 2},
        merge={"trials": 1, "max_per_task": 8},
        evaluate={"max_per_task": 4, "max_new_tokens": 2, "ks": [1, 5]},
        recommend={"k": 5},
        tracking={
            "tracking_uri": f"sqlite:///{root}/mlflow.db",
            "artifact_location": str(root / "mlartifacts"),
        },
    )
    cfg = load_config(params)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        run_ingest(cfg)
        run_validate(cfg)
        for run in STAGES.values():
            run(cfg)
    yield cfg
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_complete_run_leaves_a_manifest_vouching_for_every_output(
    project: Config, stage: str
) -> None:
    root = Path(project.paths.reports).parent
    manifest = manifest_of(project, stage)
    listed = artifacts.check_manifest(manifest, rerun=f"`recfound {stage}`")
    assert {(manifest.parent / name).resolve() for name in listed} == {
        (root / name).resolve() for name in OUTPUTS[stage]
    }


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_failing_midway_through_its_outputs_keeps_the_previous_ones(
    project: Config, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(project.paths.reports).parent
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(root)
    before = snapshot(root)
    write_json = artifacts.PublishedUnit.write_json

    def killed_after_the_first_report(unit, target, payload):
        write_json(unit, target, payload)
        raise Killed(f"killed after staging {Path(target).name}")

    monkeypatch.setattr(artifacts.PublishedUnit, "write_json", killed_after_the_first_report)
    with pytest.raises(Killed):
        STAGES[stage](project)
    monkeypatch.undo()
    assert snapshot(root) == before
    assert not [p for p in root.rglob("*.staging")]
    artifacts.check_manifest(manifest_of(project, stage), rerun=f"`recfound {stage}`")
    if stage == "train":  # the run's checkpoints wait where `train --resume` continues
        assert (artifacts.partial_path(project.paths.train) / "last").is_dir()
