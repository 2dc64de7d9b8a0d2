"""Registry test helpers: an isolated MLflow environment, metrics documents and params files
(the tiny model bundle is the shared ``tiny_bundle`` fixture of tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

from recfound import artifacts
from recfound.config import load_config
from recfound.layout import EVALUATION_MANIFEST, METRICS_FILE, RECORDS_FILE
from recfound.model.backbone import load_backbone
from recfound.model.bundle import ModelSpec, adapter_tensors, build_from_spec, save_bundle
from recfound.stages.register import run_register
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
    publish_evaluation(path.parent)
    return path


def publish_evaluation(reports: Path) -> None:
    """The manifest evaluate writes last, over the evaluation files now in ``reports``."""
    files = [reports / name for name in (METRICS_FILE, RECORDS_FILE) if (reports / name).exists()]
    artifacts.write_manifest(reports / EVALUATION_MANIFEST, files, writer="the test")


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


FOUR_TASKS = {
    "genre": "generative",
    "year": "generative",
    "match": "embedding",
    "similar": "embedding",
}


@pytest.fixture(scope="session")
def four_task_bundle(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: tuple[Path, Path]
) -> tuple[Path, Path]:
    """``(backbone_dir, bundle_dir)``: the tiny backbone with a TMoLE of four tasks (two of each
    kind), moved off its initial values so every task has its own weights."""
    from tests.train import tiny

    backbone, _ = tiny_bundle
    root = tmp_path_factory.mktemp("four_tasks")
    spec = ModelSpec(adapter=tiny.ADAPTER, task_kinds=dict(FOUR_TASKS), seed=0, max_length=48)
    base, tokenizer = load_backbone(backbone)
    rec = build_from_spec(base, tokenizer, spec)
    generator = torch.Generator().manual_seed(1)
    tensors = {
        name: value + 0.05 * torch.randn(value.shape, generator=generator)
        for name, value in adapter_tensors(rec.model).items()
    }
    save_bundle(root / "bundle", spec, tensors)
    return backbone, root / "bundle"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process dies first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args[:3]} exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} not up after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def mlflow_cli() -> str:
    return str(Path(sys.executable).parent / "mlflow")


@contextlib.contextmanager
def mlflow_cli_on_localhost(
    args: list[str], cwd: Path, ready: str, env: dict[str, str] | None = None, timeout: float = 240
) -> Iterator[str]:
    """``mlflow <args> --host 127.0.0.1 --port <free>`` in its own process group, logging to
    ``<cwd>/mlflow-cli.log``; yields its base URL once ``ready`` (a path) answers 200."""
    port = free_port()
    log_path = cwd / "mlflow-cli.log"
    # `mlflow models serve` starts `uvicorn` by name: the environment's bin folder goes first on
    # PATH (make test runs .venv/bin/python without activating the environment)
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [mlflow_cli(), *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers go down with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{url}{ready}", log_path, timeout=timeout)
        yield url
    finally:
        stop_process_group(process)


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    """``mlflow server`` on 127.0.0.1 with a sqlite store and proxied artifacts under tmp_path,
    without MLflow's job runner, as the cluster's server runs (``infra/k8s/base/mlflow.yaml``)."""
    store = tmp_path / "server"
    store.mkdir()
    args = ["server", "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db"]
    args += ["--artifacts-destination", str(store / "artifacts")]
    env = {**os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name: "false"}
    with mlflow_cli_on_localhost(args, store, "/health", env=env, timeout=120) as url:
        yield url


def register_in_sqlite(root: Path, bundle: tuple[Path, Path], **sections: dict) -> dict:
    """Register ``bundle`` (backbone, bundle dirs) as ``recfound`` in a sqlite store under
    ``root``, no MLflow URI from the environment; the register stage's report."""
    tracking = {
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "artifact_location": str(root / "mlartifacts"),
    }
    cfg = load_config(project_params(root, *bundle, tracking=tracking, **sections))
    write_metrics(Path(cfg.paths.reports) / "metrics.json", 0.4, {"genre": 0.3, "match": 0.5})
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        patch.chdir(root)  # no dvc.lock here: the data version is a content hash
        return run_register(cfg)


def post_json(url: str, payload: dict) -> tuple[int, dict]:
    """POST ``payload`` as JSON; the HTTP status and the decoded answer (errors included)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
