"""`recfound pipeline compile`: the YAML package has every stage, wired in order, with the GPU
request on training, the MLflow secret on every MLflow-using step, caching and the project image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components import DEFAULT_IMAGE, IMAGE_ENV
from pipelines.arguments import (
    DATA_DEFAULTS,
    RESOURCE_DEFAULTS,
    config_arguments,
    pipeline_arguments,
)
from pipelines.commands import compile_pipeline
from pipelines.recfound_pipeline import (
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    MLFLOW_STEPS,
    build_pipeline,
)
from recfound.cli import main
from recfound.config import load_config
from tests.conftest import REPO_ROOT

# off the chain: trained from the task data alone, read by evaluate (as in dvc.yaml)
BASELINES = "baselines"
STAGE_ORDER = ["ingest", "validate", "build-tasks", *(s for s in MLFLOW_STEPS if s != BASELINES)]
STAGES = [*STAGE_ORDER, BASELINES]
MLFLOW_STEPS = {"baselines", "pretrain", "train", "merge", "evaluate", "register", "recommend"}
# (consumer, input artifact) ← (producer, output artifact): what each step reads from the one before
ARTIFACT_WIRING = {
    ("validate", "interim"): ("ingest", "interim"),
    ("build-tasks", "interim"): ("ingest", "interim"),
    ("build-tasks", "validation"): ("validate", "report"),
    ("baselines", "tasks"): ("build-tasks", "tasks"),
    ("pretrain", "tasks"): ("build-tasks", "tasks"),
    ("train", "tasks"): ("build-tasks", "tasks"),
    ("train", "backbone"): ("pretrain", "backbone"),
    ("merge", "checkpoints"): ("train", "checkpoints"),
    ("merge", "backbone"): ("pretrain", "backbone"),
    ("evaluate", "merged"): ("merge", "merged"),
    ("evaluate", "tasks"): ("build-tasks", "tasks"),
    ("evaluate", "baselines"): ("baselines", "baselines"),
    ("register", "merged"): ("merge", "merged"),
    ("register", "backbone"): ("pretrain", "backbone"),
    ("register", "evaluation"): ("evaluate", "report"),
    ("register", "interim"): ("ingest", "interim"),
    ("recommend", "merged"): ("merge", "merged"),
    ("recommend", "backbone"): ("pretrain", "backbone"),
    ("recommend", "tasks"): ("build-tasks", "tasks"),
}


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = documents[0]
    platform = documents[1]["platforms"]["kubernetes"] if len(documents) > 1 else {}
    return spec, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("compiled") / "recfound.yaml"
    code = main(["--params", str(REPO_ROOT / "params.yaml"), "pipeline", "compile", "-o", str(out)])
    assert code == 0
    return _load(out)


def _executor(spec: dict, task: str) -> str:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    return spec["components"][component]["executorLabel"]


def test_every_stage_is_a_task_wired_in_stage_order(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"check-params", *STAGES}
    for before, after in zip(STAGE_ORDER, STAGE_ORDER[1:], strict=False):
        assert before in tasks[after]["dependentTasks"], f"{after} does not wait for {before}"
    assert sorted(tasks[BASELINES]["dependentTasks"]) == ["build-tasks", "check-params"]
    assert BASELINES in tasks["evaluate"]["dependentTasks"]
    assert "interim" not in tasks["pretrain"]["inputs"]["artifacts"]  # it reads the tasks only
    for (consumer, name), (producer, output) in ARTIFACT_WIRING.items():
        source = tasks[consumer]["inputs"]["artifacts"][name]["taskOutputArtifact"]
        assert source == {"producerTask": producer, "outputArtifactKey": output}, consumer
    for stage in STAGES:  # every step gets the settings validated by check-params
        params = tasks[stage]["inputs"]["parameters"]["params"]["taskOutputParameter"]
        assert params["producerTask"] == "check-params"
    assert tasks["ingest"]["dependentTasks"] == ["check-params"]


def test_parameters_mirror_params_yaml(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    expected = config_arguments(load_config(REPO_ROOT / "params.yaml"))
    assert set(parameters) == set(expected) | set(RESOURCE_DEFAULTS) | set(DATA_DEFAULTS)
    for section, value in expected.items():
        assert parameters[section]["defaultValue"] == value, section  # 200.0 == 200
    assert parameters["data"]["parameterType"] == "STRUCT"
    assert parameters["train_gpus"]["defaultValue"] == RESOURCE_DEFAULTS["train_gpus"]
    assert parameters["data_from"]["defaultValue"] == "dvc"  # versioned data unless told


def test_ingest_reads_the_data_location(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    ingest = spec["root"]["dag"]["tasks"]["ingest"]["inputs"]["parameters"]
    for name in DATA_DEFAULTS:
        assert ingest[name] == {"componentInputParameter": name}
    k8s = platform["deploymentSpec"]["executors"]
    for stage in MLFLOW_STEPS:  # the MLflow runs of one KFP run share the KFP run id as a tag
        (field,) = k8s[_executor(spec, stage)]["fieldPathAsEnv"]
        assert field["name"] == "RECFOUND_RUN_GROUP"
        assert field["fieldPath"] == "metadata.labels['pipeline/runid']"


def test_train_requests_gpus_cpu_and_memory_from_parameters(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    resources = executors[_executor(spec, "train")]["container"]["resources"]
    assert resources["accelerator"] == {
        "resourceType": "{{$.inputs.parameters['pipelinechannel--gpu_type']}}",
        "resourceCount": "{{$.inputs.parameters['pipelinechannel--train_gpus']}}",
    }
    assert "train_cpu" in resources["resourceCpuLimit"]
    assert "train_memory" in resources["resourceMemoryLimit"]
    train_inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train_inputs["pipelinechannel--train_gpus"] == {"componentInputParameter": "train_gpus"}
    for stage in set(STAGES) - {"train"}:
        assert "accelerator" not in executors[_executor(spec, stage)]["container"]["resources"]
    train_k8s = platform["deploymentSpec"]["executors"][_executor(spec, "train")]
    assert train_k8s["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}
    ]  # NCCL needs more shared memory than a pod's default /dev/shm


def test_mlflow_steps_get_the_secret_backed_environment(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    k8s = platform["deploymentSpec"]["executors"]
    for stage in STAGES:
        secrets = k8s.get(_executor(spec, stage), {}).get("secretAsEnv", [])
        if stage not in (*MLFLOW_STEPS, "ingest"):  # ingest: the DVC remote's credentials
            assert secrets == [], f"{stage} does not use MLflow and gets no credentials"
            continue
        assert len(secrets) == 1, stage
        assert secrets[0]["secretName"] == MLFLOW_SECRET == "recfound-mlflow"
        assert secrets[0]["optional"] is False
        mapping = {e["secretKey"]: e["envVar"] for e in secrets[0]["keyToEnv"]}
        assert mapping == {key: key for key in MLFLOW_SECRET_KEYS}
        assert set(mapping) == {
            "MLFLOW_TRACKING_URI",
            "MLFLOW_S3_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }


def test_caching_is_on_and_steps_run_in_the_project_image(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    for name, task in spec["root"]["dag"]["tasks"].items():
        assert task["cachingOptions"] == {"enableCache": True}, name
        container = spec["deploymentSpec"]["executors"][_executor(spec, name)]["container"]
        assert container["image"] == DEFAULT_IMAGE
        # nothing is installed at run time: the image has the project
        assert "pip install" not in " ".join(container["command"])


def test_image_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(REPO_ROOT / "params.yaml")
    monkeypatch.setenv(IMAGE_ENV, "registry.example.com/ml/recfound:abc123")
    spec, _ = _load(compile_pipeline(cfg, tmp_path / "env.yaml"))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/ml/recfound:abc123"}
    spec, _ = _load(compile_pipeline(cfg, tmp_path / "flag.yaml", image="other/recfound:1"))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"other/recfound:1"}


def test_local_target_leaves_out_the_cluster_settings(tmp_path: Path) -> None:
    from kfp import compiler

    defaults = config_arguments(load_config(REPO_ROOT / "params.yaml"))
    out = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(defaults, target="local"), str(out))
    spec, platform = _load(out)
    assert platform == {}
    assert set(spec["root"]["dag"]["tasks"]) == {"check-params", *STAGES}
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "resources" not in executor["container"]


def test_gpu_profile_compiles_a_pipeline_whose_train_step_requests_its_gpus(
    tmp_path: Path,
) -> None:
    out = tmp_path / "gpu.yaml"
    code = main(
        ["--params", str(REPO_ROOT / "params.gpu.yaml"), "pipeline", "compile", "-o", str(out)]
    )
    assert code == 0
    spec, _ = _load(out)
    profile = load_config(REPO_ROOT / "params.gpu.yaml")
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name, value in profile.cluster.model_dump().items():  # the profile's cluster section
        assert parameters[name]["defaultValue"] == value, name
    assert parameters["train_gpus"]["defaultValue"] >= 1
    assert parameters["model"]["defaultValue"]["backbone"] == profile.model.backbone
    resources = spec["deploymentSpec"]["executors"][_executor(spec, "train")]["container"][
        "resources"
    ]
    assert resources["accelerator"]["resourceCount"].endswith("train_gpus']}}")
    arguments = pipeline_arguments(profile, ["train.steps=10"])
    assert (
        arguments["train_memory"]
        == profile.cluster.train_memory
        != RESOURCE_DEFAULTS["train_memory"]
    )
    assert pipeline_arguments(profile, ["train_gpus=2"])["train_gpus"] == 2


def test_a_setting_the_pipeline_cannot_carry_is_named(tmp_path: Path) -> None:
    """The pipeline's parameters carry seed and the settings sections; a params.yaml value it
    would not carry (here a serving limit) is refused naming its key, not run with the default.
    The ablation section is not the pipeline's: any value of it compiles."""
    from recfound.config import ConfigError

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["ablation"]["extra_seeds"] = [7]
    (tmp_path / "ablation.yaml").write_text(yaml.safe_dump(params))
    assert config_arguments(load_config(tmp_path / "ablation.yaml"))["seed"] == params["seed"]
    params["serving"]["max_k"] = 50
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"^serving\.max_k: the Kubeflow pipeline would run"):
        config_arguments(load_config(tmp_path / "serving.yaml"))
