"""DVC-versioned data into the pipeline: a data repository (Git + DVC, a local directory remote)
with data pushed at two revisions; `fetch-data` reads each revision's data, and a pipeline run
(kfp.local) from a revision registers a version whose dataset digest is that revision's md5 from
dvc.lock — after a run from the raw data into the same store, which registers its own.

The data repository runs only `ingest` (the output a Kubeflow run fetches); its DVC cache and
workspace copy are deleted after the pushes, so every read comes from the remote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pipelines.recfound_pipeline import MLFLOW_STEPS
from recfound.config import load_config
from recfound.tracking.lineage import DATA_VERSION_FILE
from tests.conftest import dvc_env, write_tiny_params
from tests.pipelines.test_run_local import _tiny_params as run_local_params
from tests.pipelines.test_run_local import check_run_local_outputs, run_local

DATA_DVC_YAML = """\
stages:
  ingest:
    cmd: recfound ingest
    params:
      - data
    outs:
      - ${paths.interim}
"""
USERS = {"v1": 30, "v2": 40}


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=dvc_env(), capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


def _git(*args: str, cwd: Path) -> str:
    return _run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args, cwd=cwd)


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A DVC project whose tag v1 holds 30 users' tables and v2 40 users'; both pushed."""
    root = tmp_path_factory.mktemp("dvc_data")
    repo, remote = root / "data-repo", root / "remote"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    _run("dvc", "init", "-q", cwd=repo)
    _run("dvc", "remote", "add", "-d", "storage", str(remote), cwd=repo)
    (repo / "dvc.yaml").write_text(DATA_DVC_YAML)
    md5 = {}
    for tag, users in USERS.items():
        write_tiny_params(repo / "params.yaml", data={"max_users": users})
        _run("dvc", "repro", "-q", cwd=repo)
        _run("dvc", "push", "-q", cwd=repo)
        _git("add", "-A", cwd=repo)
        _git("commit", "-q", "-m", f"data with {users} users", cwd=repo)
        _git("tag", tag, cwd=repo)
        lock = yaml.safe_load(_git("show", f"{tag}:dvc.lock", cwd=repo))
        (out,) = lock["stages"]["ingest"]["outs"]
        md5[tag] = out["md5"]
    shutil.rmtree(repo / ".dvc" / "cache")  # only the remote holds the data now
    shutil.rmtree(repo / "data" / "interim")
    commits = {tag: _git("rev-parse", tag, cwd=repo).strip() for tag in USERS}
    return {"repo": repo, "md5": md5, "commits": commits}


def test_fetch_data_reads_each_revision_from_the_remote(
    data_repo: dict[str, object], tmp_path: Path
) -> None:
    repo, md5, commits = data_repo["repo"], data_repo["md5"], data_repo["commits"]
    write_tiny_params(tmp_path / "params.yaml")
    for tag, users in USERS.items():
        out = _run(
            sys.executable, "-m", "recfound.cli", "fetch-data", "--repo", str(repo), "--rev", tag,
            cwd=tmp_path,
        )  # fmt: skip
        assert md5[tag] in out
        interim = tmp_path / "data" / "interim"
        interactions = pd.read_parquet(interim / "interactions.parquet")
        assert interactions["user_id"].nunique() == users
        version = json.loads((interim / DATA_VERSION_FILE).read_text())
        assert version["md5"] == md5[tag] and version["revision"] == commits[tag]
        assert version["path"] == "data/interim"


def test_a_revision_that_does_not_exist_is_named(
    data_repo: dict[str, object], tmp_path: Path
) -> None:
    write_tiny_params(tmp_path / "params.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "recfound.cli", "fetch-data", "--repo", str(data_repo["repo"]),
         "--rev", "v9"],
        cwd=tmp_path, env=dvc_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot fetch the data of" in result.stderr and "v9" in result.stderr
    assert not (tmp_path / "data" / "interim").exists()


@pytest.mark.slow
def test_a_raw_run_then_a_revision_run_each_train_on_their_data_and_register_its_md5(
    data_repo: dict[str, object], tmp_path: Path
) -> None:
    """Two `recfound pipeline run-local` runs into one MLflow store: the first from the raw data
    (a user's first run: every step runs through kfp.local and the model becomes
    `recfound@champion`), the second from revision v2 of the data repository. Each trains on its
    own data and registers that data's md5; the second does not see the first's data.

    (Fetching each of two revisions is `test_fetch_data_reads_each_revision_from_the_remote`; one
    full pipeline run per revision would only repeat it at two minutes a run.)"""
    repo, md5 = data_repo["repo"], data_repo["md5"]
    params = run_local_params(tmp_path / "params.yaml")  # fewer users of the raw data than v2
    raw = run_local(tmp_path, "data_from=raw", output_dir="kfp-raw", timeout=1200)
    assert raw.returncode == 0, raw.stdout[-6000:] + raw.stderr[-3000:]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (raw_dir,) = (tmp_path / "kfp-raw").iterdir()
    check_run_local_outputs(raw_dir, raw.stdout, tracking_uri)

    tag, users = "v2", USERS["v2"]
    versioned = run_local(
        tmp_path, f"data_repo={repo}", f"data_rev={tag}", output_dir="kfp-v2", timeout=1200
    )
    assert versioned.returncode == 0, versioned.stdout[-6000:] + versioned.stderr[-3000:]

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("recfound")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (v2_dir,) = (tmp_path / "kfp-v2").iterdir()
    runs = {"raw": (raw_dir, load_config(params).data.max_users), tag: (v2_dir, users)}
    groups, data_versions = [], []
    for number, (name, (run_dir, run_users)) in enumerate(runs.items(), start=1):
        interim = run_dir / "ingest" / "interim"
        assert pd.read_parquet(interim / "interactions.parquet")["user_id"].nunique() == run_users
        counts = json.loads((run_dir / "build-tasks" / "tasks" / "manifest.json").read_text())
        train_records = sum(s["train"] for s in counts["built"].values())

        version = client.get_model_version("recfound", str(number))
        data_versions.append(version.tags["data_version"])
        if name == tag:
            assert version.tags["data_version"] == md5[tag]
            assert version.tags["data_revision"] == data_repo["commits"][tag]
        assert len(version.tags) <= 10 and version.description
        source = client.get_run(version.run_id)
        assert source.data.tags["recfound.stage"] == "register"  # the run that logged the model
        (digest,) = {d.dataset.digest for d in source.inputs.dataset_inputs}
        assert data_versions[-1].startswith(digest)  # MLflow keeps a dataset digest's first 36
        group = source.data.tags["recfound.run_group"]
        groups.append(group)
        runs_of_group = client.search_runs(
            [experiment.experiment_id], f"tags.`recfound.run_group` = '{group}'"
        )
        top = [r for r in runs_of_group if "mlflow.parentRunId" not in r.data.tags]
        assert sorted(r.info.run_name for r in top) == sorted(MLFLOW_STEPS)
        (train,) = [r for r in top if r.info.run_name == "train"]
        inputs = {
            d.tags[0].value: d.dataset for d in train.inputs.dataset_inputs
        }  # context → dataset
        assert set(inputs) == {"training", "validation"}
        assert inputs["training"].digest == digest
        assert json.loads(inputs["training"].profile)["num_records"] == train_records
        if name == tag:
            assert json.loads(inputs["training"].source)["rev"] == data_repo["commits"][tag]
        assert any(r.info.run_name == "merge trial 0" for r in runs_of_group)
    assert groups[0] != groups[1]
    assert data_versions[0] != data_versions[1]
