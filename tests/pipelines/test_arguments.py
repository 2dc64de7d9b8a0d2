"""`--param KEY=VALUE` for submit / run-local: checked like params.yaml before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.arguments import (
    DATA_DEFAULTS,
    RESOURCE_DEFAULTS,
    check_data_location,
    config_arguments,
    pipeline_arguments,
)
from recfound.cli import main
from recfound.config import Config, ConfigError, load_config
from recfound.errors import EXIT_USER_ERROR
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(REPO_ROOT / "params.yaml")


def test_no_overrides_gives_params_yaml_and_the_default_resources(cfg: Config) -> None:
    arguments = pipeline_arguments(cfg)
    assert arguments == {**config_arguments(cfg), **RESOURCE_DEFAULTS, **DATA_DEFAULTS}
    assert "paths" not in arguments
    assert arguments["train"]["steps"] == cfg.train.steps


def test_overrides_set_dotted_keys_and_resources(cfg: Config) -> None:
    arguments = pipeline_arguments(
        cfg,
        [
            "train.steps=500",
            "model.tmole.rank=4",
            "tasks.enabled=[user2item, rating_prediction]",
            "data.max_users=100",
            "train.bf16=true",
            "baselines.mf.factors=8",
            "seed=7",
            "train_gpus=4",
            "train_memory=64Gi",
            "gpu_type=nvidia.com/gpu",
        ],
    )
    assert arguments["train"]["steps"] == 500
    assert arguments["train"]["bf16"] is True
    assert arguments["train"]["batch_size"] == cfg.train.batch_size  # the rest of the section
    assert arguments["model"]["tmole"]["rank"] == 4
    assert arguments["model"]["tmole"]["alpha"] == cfg.model.tmole.alpha
    assert arguments["tasks"]["enabled"] == ["user2item", "rating_prediction"]
    assert arguments["data"]["max_users"] == 100
    assert arguments["baselines"]["mf"]["factors"] == 8
    assert arguments["seed"] == 7
    assert arguments["train_gpus"] == 4 and arguments["train_memory"] == "64Gi"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.strategy=foo", "train.strategy: 'foo' is not allowed"),
        ("train.steps=0", "train.steps"),
        ("train.stepz=5", "train.stepz: unknown key"),
        ("trian.steps=5", "trian: unknown key"),
        ("tasks.enabled=[user2item, nope]", "unknown task(s) ['nope']"),
        ("train.steps.x=1", "train.steps is a value"),
        ("paths.tasks=/data", "paths are not settings of a pipeline run"),
        ("cluster.train_gpus=2", "pass --param train_gpus=VALUE instead"),
        ("train_gpus=0", "train_gpus: expected a whole number >= 1"),
        ("train_cpu=lots", "train_cpu: 'lots' is not a CPU amount"),
        ("step_memory=8 GB", "step_memory: '8 GB' is not a memory amount"),
        ("train.steps", "expects KEY=VALUE"),
    ],
)
def test_a_bad_override_is_a_config_error_naming_the_key(
    cfg: Config, override: str, named: str
) -> None:
    with pytest.raises(ConfigError) as error:
        pipeline_arguments(cfg, [override])
    assert named in str(error.value)


class _FakeRun:
    run_id = "run-123"


class _FakeClient:
    """Stands in for kfp.Client: records what submit sends instead of calling a cluster."""

    calls: list[dict[str, Any]] = []

    def __init__(self, host: str, namespace: str | None = None) -> None:
        self.host = host

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> _FakeRun:
        assert Path(pipeline_file).is_file()
        _FakeClient.calls.append({"host": self.host, **kwargs})
        return _FakeRun()


@pytest.fixture()
def fake_kfp(monkeypatch: pytest.MonkeyPatch) -> type[_FakeClient]:
    """``kfp.Client`` replaced by a recorder (no cluster here); returns the recorder class."""
    import kfp

    monkeypatch.setattr(kfp, "Client", _FakeClient)
    _FakeClient.calls.clear()
    return _FakeClient


DATA = ("--param", "data_repo=https://git.example.com/recfound-data.git", "--param", "data_rev=v1")


def _submit(host: str, *extra: str) -> int:
    args = ["pipeline", "submit", "--host", host, "--experiment", "recfound-dev", *DATA, *extra]
    return main(["--params", str(REPO_ROOT / "params.yaml"), *args])


def test_submit_sends_the_checked_arguments_to_the_experiment(
    fake_kfp: type[_FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _submit(
        "http://kfp.example:8080/", "--param", "train.steps=500", "--param", "train_gpus=2"
    )
    assert code == 0
    (call,) = fake_kfp.calls
    assert call["host"] == "http://kfp.example:8080/"
    assert call["experiment_name"] == "recfound-dev"
    assert call["enable_caching"] is None  # the compiled setting: caching on
    assert call["arguments"]["train"]["steps"] == 500
    assert call["arguments"]["train_gpus"] == 2
    assert call["arguments"]["data_repo"] == "https://git.example.com/recfound-data.git"
    assert call["arguments"]["data_rev"] == "v1"
    assert "http://kfp.example:8080/#/runs/details/run-123" in capsys.readouterr().out


def test_submit_with_a_bad_override_stops_before_the_cluster(
    fake_kfp: type[_FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _submit("http://kfp.example:8080", "--param", "train.strategy=foo")
    assert code == EXIT_USER_ERROR
    assert "train.strategy: 'foo' is not allowed" in capsys.readouterr().err
    assert fake_kfp.calls == []


def test_submit_no_cache_turns_caching_off_for_the_run(fake_kfp: type[_FakeClient]) -> None:
    assert _submit("http://kfp", "--no-cache") == 0
    assert fake_kfp.calls[0]["enable_caching"] is False


def test_the_data_location_is_text_and_must_be_set_for_versioned_data(cfg: Config) -> None:
    with pytest.raises(ConfigError, match="--param data_repo="):
        check_data_location(pipeline_arguments(cfg))
    arguments = pipeline_arguments(cfg, ["data_repo=https://git.example.com/d.git", "data_rev=1e5"])
    assert arguments["data_repo"] == "https://git.example.com/d.git"
    assert arguments["data_rev"] == "1e5"  # text, not the number 100000.0
    check_data_location(arguments)
    check_data_location(pipeline_arguments(cfg, ["data_from=raw"]))
    with pytest.raises(ConfigError, match="data_from: expected one of dvc, raw"):
        check_data_location(pipeline_arguments(cfg, ["data_from=s3"]))
