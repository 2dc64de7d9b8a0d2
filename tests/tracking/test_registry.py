"""Promotion gates, version tags and the registry against a real ``mlflow server``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recfound.cli import EXIT_USER_ERROR, main
from recfound.config import RegistryConfig, load_config
from recfound.errors import UserInputError
from recfound.stages.register import (
    PromotionRefused,
    content_hash,
    data_version,
    run_promote,
    run_register,
)
from recfound.tracking.registry import (
    RegistryError,
    check_gates,
    configure_registry,
    metrics_from_tags,
    promote,
    version_tags,
)
from tests.tracking.conftest import project_params, write_metrics

GATES = RegistryConfig(primary_metric="mean_score", max_regression=0.02, min_improvement=0.0)


def scores(mean: float, **tasks: float) -> dict:
    return {
        "overall": {"mean_score": mean, "embedding_score": mean, "generative_score": mean},
        "tasks": {
            t: {"kind": "generative", "score_metric": "mrr@20", "score": s}
            for t, s in tasks.items()
        },
    }


# ---- gates ----------------------------------------------------------------------------------


def test_first_version_passes_without_a_champion() -> None:
    decision = check_gates(scores(0.1, genre=0.1), None, GATES)
    assert decision.passed and decision.promote
    assert decision.failures == []
    assert "no champion yet" in decision.summary()


def test_better_candidate_passes() -> None:
    decision = check_gates(
        scores(0.50, genre=0.50, year=0.49),
        scores(0.45, genre=0.40, year=0.50),
        GATES,
        champion_version=3,
    )
    assert decision.passed, decision.summary()
    assert "v3" in decision.summary()


def test_regressed_task_is_refused_and_named() -> None:
    decision = check_gates(
        scores(0.60, genre=0.70, year=0.40),
        scores(0.50, genre=0.50, year=0.45),
        GATES,
        champion_version=1,
    )
    assert not decision.passed and not decision.promote
    assert len(decision.failures) == 1
    failure = decision.failures[0]
    for words in ("year", "0.4000", "0.4500", "0.0500 below", "allowed drop is 0.02"):
        assert words in failure
    assert "fails 1 gate(s) against the champion v1" in decision.summary()


def test_drop_exactly_at_the_tolerance_passes() -> None:
    decision = check_gates(scores(0.5, year=0.50), scores(0.5, year=0.52), GATES)
    assert decision.passed, decision.summary()


def test_lower_primary_metric_is_refused() -> None:
    decision = check_gates(scores(0.44, genre=0.5), scores(0.45, genre=0.5), GATES)
    assert not decision.passed
    assert decision.failures == ["mean_score: candidate 0.4400 is below the champion's 0.4500"]


def test_min_improvement_is_required() -> None:
    gates = RegistryConfig(primary_metric="generative_score", min_improvement=0.05)
    decision = check_gates(scores(0.48), scores(0.45), gates)
    assert not decision.passed
    assert "min_improvement 0.05 = 0.5000" in decision.failures[0]
    assert check_gates(scores(0.50), scores(0.45), gates).passed


def test_force_promotes_but_keeps_the_failures() -> None:
    decision = check_gates(scores(0.1, genre=0.1), scores(0.5, genre=0.5), GATES, force=True)
    assert not decision.passed and decision.forced and decision.promote
    assert len(decision.failures) == 2
    assert "promoted by force" in decision.summary()


def test_tasks_in_one_model_only_are_noted_not_compared() -> None:
    decision = check_gates(scores(0.5, genre=0.5, new=0.0), scores(0.5, genre=0.5, old=0.9), GATES)
    assert decision.passed
    assert any("old" in n for n in decision.notes) and any("new" in n for n in decision.notes)


def test_scores_survive_the_round_trip_through_version_tags() -> None:
    metrics = scores(0.123456789, genre=0.5, year=1 / 3)
    tags = version_tags(metrics, {"seed": 42, "model": {"tmole": {"rank": 8}}}, "abc")
    assert tags["data_version"] == "abc"
    assert tags["param.model.tmole.rank"] == "8"
    assert tags["metric.year.score"] == repr(1 / 3)
    back = metrics_from_tags(tags)
    assert back["overall"] == metrics["overall"]
    assert {t: v["score"] for t, v in back["tasks"].items()} == {"genre": 0.5, "year": 1 / 3}


def test_data_version_prefers_dvc_lock(tmp_path: Path) -> None:
    tasks = tmp_path / "data" / "tasks"
    (tasks / "genre").mkdir(parents=True)
    (tasks / "genre" / "train.parquet").write_bytes(b"one")
    first = content_hash(tasks)
    assert first == content_hash(tasks)  # deterministic
    (tasks / "genre" / "train.parquet").write_bytes(b"two")
    assert content_hash(tasks) != first
    assert data_version(tasks, tmp_path / "dvc.lock") == (content_hash(tasks), "content")

    lock = {
        "schema": "2.0",
        "stages": {
            "build_tasks": {
                "outs": [
                    {"path": "data/tasks", "hash": "md5", "md5": "dec81e53.dir"},
                ]
            }
        },
    }
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML
    assert data_version(tasks, tmp_path / "dvc.lock") == ("dec81e53.dir", "dvc.lock")


def test_register_names_the_stage_to_run_first(tmp_path: Path) -> None:
    cfg = load_config(project_params(tmp_path, tmp_path / "no_backbone", tmp_path / "no_bundle"))
    with pytest.raises(UserInputError, match="run `recfound pretrain`"):
        run_register(cfg)
    Path(cfg.paths.backbone).mkdir()
    with pytest.raises(UserInputError, match="run `recfound pretrain`"):  # no config.json
        run_register(cfg)
    (Path(cfg.paths.backbone) / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="run `recfound merge`"):
        run_register(cfg)
    bundle = Path(cfg.paths.merged)
    bundle.mkdir()
    (bundle / "model_spec.json").write_text("{}")
    with pytest.raises(UserInputError, match="run `recfound evaluate`"):
        run_register(cfg)
    (Path(cfg.paths.reports) / "metrics.json").parent.mkdir(parents=True)
    (Path(cfg.paths.reports) / "metrics.json").write_text('{"overall": {}}')
    with pytest.raises(UserInputError, match="needs overall.mean_score"):
        run_register(cfg)


# ---- a real MLflow server -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    """``mlflow server`` on 127.0.0.1 with a sqlite store and proxied artifacts under tmp_path."""
    store = tmp_path / "server"
    store.mkdir()
    port = _free_port()
    log_file = (store / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--artifacts-destination",
            str(store / "artifacts"),
        ],
        cwd=store,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers go down with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited:\n{(store / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up:\n{(store / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log_file.close()


@pytest.mark.slow
def test_gates_refuse_the_worse_version_on_a_real_server(
    mlflow_server: str,
    tiny_bundle: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    params = project_params(tmp_path / "project", *tiny_bundle)
    cfg = load_config(params)
    metrics_path = Path(cfg.paths.reports) / "metrics.json"

    write_metrics(metrics_path, 0.50, {"genre": 0.40, "year": 0.60, "match": 0.50})
    first = run_register(cfg)
    write_metrics(metrics_path, 0.55, {"genre": 0.70, "year": 0.45, "match": 0.50})
    second = run_register(cfg)

    assert (first["version"], first["alias"]) == (1, "champion")
    assert (second["version"], second["alias"]) == (2, "challenger")
    failures = second["decision"]["failures"]
    assert len(failures) == 1 and "task year" in failures[0]
    saved = json.loads((Path(cfg.paths.reports) / "registry.json").read_text())
    assert saved["version"] == 2 and saved["decision"]["failures"] == failures

    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_model_version_by_alias("recfound", "champion").version == "1"
    assert client.get_model_version_by_alias("recfound", "challenger").version == "2"
    v2 = client.get_model_version("recfound", "2")
    assert v2.tags["metric.year.score"] == "0.45"
    assert v2.tags["metric.overall.mean_score"] == "0.55"
    assert v2.tags["data_version"] == first["data_version"]
    assert v2.tags["param.registry.max_regression"] == "0.02"
    assert v2.tags["promotion.alias"] == "challenger"
    assert v2.run_id == second["mlflow_run_id"]
    artifacts = {a.path for a in client.list_artifacts(second["mlflow_run_id"])}
    assert {"metrics.json", "registry.json"} <= artifacts

    # by hand: the same gates refuse version 2 (the library, then the command) ...
    registry_client = configure_registry(cfg.tracking)
    decision = promote(registry_client, cfg.registry, 2)
    assert not decision.promote and "task year" in decision.failures[0]
    with pytest.raises(PromotionRefused, match="task year"):
        run_promote(cfg, 2)
    assert main(["--params", str(params), "promote", "--version", "2"]) == EXIT_USER_ERROR
    assert "--force" in capsys.readouterr().err
    assert client.get_model_version_by_alias("recfound", "champion").version == "1"

    # ... and --force moves the champion
    assert main(["--params", str(params), "promote", "--version", "2", "--force"]) == 0
    assert client.get_model_version_by_alias("recfound", "champion").version == "2"
    assert client.get_model_version("recfound", "2").tags["promotion.forced"] == "true"
    assert "already is champion" in run_promote(cfg, 2)["notes"][0]
    with pytest.raises(MlflowException, match="challenger"):  # v2 no longer is challenger
        client.get_model_version_by_alias("recfound", "challenger")
    with pytest.raises(RegistryError, match=r"no version 7; registered versions: \[1, 2\]"):
        run_promote(cfg, 7)
