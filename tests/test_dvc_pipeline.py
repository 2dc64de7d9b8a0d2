"""`dvc repro` on a copy of the repository (tiny params): stages run, a re-run does nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipelines.recfound_pipeline import MLFLOW_STEPS
from recfound import artifacts
from tests.conftest import (
    REPO_ROOT,
    TINY_SECTIONS,
    dvc_env,
    file_digests,
    write_ml100k_slice,
    write_tiny_params,
)

pytestmark = pytest.mark.slow


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`dvc ARGS` in ``cwd``, whose stages run the copy's own ``recfound`` (PYTHONPATH) and write
    bytecode caches into it as Python does by default, the way `dvc repro` runs in a user's
    checkout: a cache file in a code directory that a stage depends on must not count as a change
    (.dvcignore)."""
    env = {**dvc_env(), "PYTHONPATH": str(cwd)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
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
    write_tiny_params(work / "params.yaml", ablation={"extra_seeds": [1]})  # seeded rows once
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


def test_dvc_repro_runs_every_stage_then_is_a_no_op(repo_copy: Path) -> None:
    first = _dvc("repro", cwd=repo_copy)
    assert first.returncode == 0, first.stdout + first.stderr
    stages = ("ingest", "validate", "build_tasks", "baselines", "pretrain", "train", "merge")
    for stage in (*stages, "evaluate", "register", "recommend"):
        assert f"Running stage '{stage}'" in first.stdout
    assert "ablate" not in first.stdout  # the ablation is a pipeline of its own
    metrics = json.loads((repo_copy / "reports" / "task_counts.json").read_text())
    assert metrics["num_embedding_tasks"] == 3 and metrics["num_generative_tasks"] >= 10
    assert (repo_copy / "dvc.lock").is_file()
    assert (repo_copy / "models" / "backbone" / "config.json").is_file()
    for checkpoint in ("last", "best_generative", "best_embedding"):
        assert (repo_copy / "models" / "train" / checkpoint / "adapter_model.safetensors").is_file()
    train = json.loads((repo_copy / "reports" / "train.json").read_text())
    assert train["steps"] == 6
    assert (repo_copy / "reports" / "plots" / "train_task_share.png").is_file()
    merge = json.loads((repo_copy / "reports" / "merge.json").read_text())
    assert merge["trials"] == 2
    assert (repo_copy / "models" / "merged" / "adapter_config.json").is_file()
    evaluation = json.loads((repo_copy / "reports" / "metrics.json").read_text())
    assert len(evaluation["tasks"]) == metrics["num_tasks"]  # zero_shot answered as ctr
    assert {"popularity", "item_knn", "bm25", "majority"} <= set(evaluation["baselines"])
    assert "| user2item | embedding |" in (repo_copy / "reports" / "evaluation.md").read_text()
    manifest = artifacts.check_manifest(
        repo_copy / "reports" / "evaluation_manifest.json", rerun="`recfound evaluate`"
    )
    assert {"metrics.json", "eval_records.json", "evaluation.md"} <= set(manifest)
    registry = json.loads((repo_copy / "reports" / "registry.json").read_text())
    assert int(registry["version"]) == 1 and registry["alias"] == "champion"

    _check_tracking(repo_copy)

    second = _dvc("repro", cwd=repo_copy)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout

    ablate = _dvc("repro", "ablation/dvc.yaml", cwd=repo_copy)
    assert ablate.returncode == 0, ablate.stdout + ablate.stderr
    assert "Running stage 'ablation/dvc.yaml:ablate'" in ablate.stdout
    assert "Running stage 'train'" not in ablate.stdout  # reuses the main pipeline's outputs
    ablation = (repo_copy / "reports" / "ablation.md").read_text()
    rows = ("recfound", "without_merge", "without_merge_s2sched", "without_all", "option_tuning")
    rows += ("recfound_seed1", "without_all_seed1")  # ablation.extra_seeds: [1]
    for row in rows:
        assert f"| {row} |" in ablation
    status = _dvc("status", cwd=repo_copy)
    assert "up to date" in status.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{repo_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recfound")
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    rows = {"without_merge_s2sched", "without_merge_tmole", "without_all"}
    assert {f"ablation/{row}" for row in rows} <= names  # not three more runs named `train`

    shown = _dvc("metrics", "show", "--json", cwd=repo_copy)
    assert shown.returncode == 0
    assert "num_generative_tasks" in shown.stdout


def test_failed_repro_keeps_the_previous_outputs(repo_copy: Path, tmp_path: Path) -> None:
    """A stage that fails leaves its outputs (DVC `persist`) as they were, byte for byte; the next
    good run replaces them whole, so no stale file stays behind."""
    good = write_ml100k_slice(tmp_path / "raw", num_users=15)  # a catalogue of < 1000 items
    data = {"source": "recbole_atomic", "path": str(good), "dataset_name": "mini"}
    write_tiny_params(repo_copy / "params.yaml", data=data)
    first = _dvc("repro", "build_tasks", cwd=repo_copy)
    assert first.returncode == 0, first.stdout + first.stderr
    outputs = ("data/interim", "data/tasks", "reports/validation", "reports/task_counts.json")

    def snapshot() -> dict[str, dict[str, bytes]]:
        return {
            name: file_digests(repo_copy / name)
            if (repo_copy / name).is_dir()
            else {name: (repo_copy / name).read_bytes()}
            for name in outputs
        }

    before = snapshot()
    lock_before = (repo_copy / "dvc.lock").read_bytes()

    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    inter = corrupt / "mini.inter"
    inter.write_text(inter.read_text()[:-4])  # cut inside the last line's timestamp
    write_tiny_params(repo_copy / "params.yaml", data={**data, "path": str(corrupt)})
    failed = _dvc("repro", "build_tasks", cwd=repo_copy)
    assert failed.returncode != 0
    assert "Running stage 'ingest'" in failed.stdout
    assert "mini.inter: line" in failed.stderr and "looks truncated" in failed.stderr
    assert snapshot() == before
    assert (repo_copy / "dvc.lock").read_bytes() == lock_before

    # a later stage failing (a setting the data cannot satisfy) keeps its outputs too
    write_tiny_params(
        repo_copy / "params.yaml",
        data=data,
        tasks={**TINY_SECTIONS["tasks"], "num_candidates": 1000},
    )
    failed = _dvc("repro", "build_tasks", cwd=repo_copy)
    assert failed.returncode != 0
    assert "Running stage 'build_tasks'" in failed.stdout
    assert "tasks.num_candidates is 1000" in failed.stderr
    assert snapshot() == before

    # back to good settings: the stage runs again and replaces its outputs whole
    (repo_copy / "data" / "tasks" / "stale.parquet").write_bytes(b"left over")
    write_tiny_params(repo_copy / "params.yaml", data=data)
    again = _dvc("repro", "build_tasks", cwd=repo_copy)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (repo_copy / "data" / "tasks" / "stale.parquet").exists()
    after = snapshot()
    for name in ("data/interim", "data/tasks"):  # the same settings give the same bytes
        assert after[name] == before[name]
    status = _dvc("status", "build_tasks", cwd=repo_copy)
    assert "up to date" in status.stdout, status.stdout


def test_changing_paths_in_params_moves_the_tracked_output(repo_copy: Path) -> None:
    """dvc.yaml takes its paths from params.yaml: a new paths.tasks is written and tracked."""
    write_tiny_params(repo_copy / "params.yaml", paths={"tasks": "data/tasks_v2"})
    result = _dvc("repro", "build_tasks", cwd=repo_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (repo_copy / "data" / "tasks_v2" / "manifest.json").is_file()
    assert not (repo_copy / "data" / "tasks").exists()
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
    outs = [out["path"] for out in lock["stages"]["build_tasks"]["outs"]]
    assert "data/tasks_v2" in outs
    assert lock["stages"]["build_tasks"]["params"]["params.yaml"]["paths.tasks"] == "data/tasks_v2"
    status = _dvc("status", "build_tasks", cwd=repo_copy)
    assert "up to date" in status.stdout, status.stdout


def _check_tracking(repo: Path) -> None:
    """What a user sees in MLflow after one `dvc repro`: distinct names, one run group, datasets
    at the data version of dvc.lock, a registered version with a few tags and a description."""
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recfound")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    top = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(top) == sorted(MLFLOW_STEPS)  # one run per step, as the pipeline's
    assert len(top) == len([r for r in runs if "mlflow.parentRunId" not in r.data.tags])
    children = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert children == ["merge trial 0", "merge trial 1"]
    groups = {r.data.tags.get("recfound.run_group") for r in runs}
    assert len(groups) == 1 and None not in groups  # one `dvc repro`, one tag to filter on
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (interim,) = lock["stages"]["ingest"]["outs"]
    for name, contexts in {
        "train": {"training", "validation"},
        "evaluate": {"test"},
        "register": {"training", "validation", "test"},
    }.items():
        inputs = top[name].inputs.dataset_inputs
        assert {d.tags[0].value for d in inputs} == contexts, name
        assert {d.dataset.digest for d in inputs} == {interim["md5"]}, name
    version = client.get_model_version("recfound", "1")
    assert version.run_id == top["register"].info.run_id
    assert len(version.tags) <= 10 and version.tags["data_version"] == interim["md5"]
    assert version.description.startswith("**champion**")
