from __future__ import annotations

from pathlib import Path

import pytest

from recfound.config import ALL_TASKS, ConfigError, load_config, parse_config
from tests.conftest import REPO_ROOT


def test_repository_params_are_valid() -> None:
    cfg = load_config(REPO_ROOT / "params.yaml")
    assert cfg.data.source == "ml-100k"
    assert set(cfg.tasks.enabled) == set(ALL_TASKS)


def test_unknown_key_names_the_key_and_the_known_keys() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"rating_treshold": 4}})
    message = str(err.value)
    assert "data.rating_treshold: unknown key" in message
    assert "rating_threshold" in message  # the known keys are listed


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"tasks\.history_length.*'ten'"):
        parse_config({"tasks": {"history_length": "ten"}})


def test_out_of_range_names_the_bound() -> None:
    with pytest.raises(
        ConfigError, match=r"data\.min_user_interactions.*greater than or equal to 3"
    ):
        parse_config({"data": {"min_user_interactions": 1}})


def test_unknown_source_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"source": "movielens"}})
    assert "data.source" in str(err.value)
    assert "'ml-100k', 'recbole_atomic' or 'amazon_jsonl'" in str(err.value)


def test_unknown_task_lists_allowed_tasks() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"tasks": {"enabled": ["user2item", "next_item"]}})
    assert "tasks.enabled" in str(err.value)
    assert "next_item" in str(err.value)
    assert "sequential_recommendation" in str(err.value)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            {"train": {"task_weights": {"ctr": 2.0}}},
            r"train\.task_weights.*unknown task 'ctr'.*ctr_prediction",
        ),
        (
            {"train": {"task_weights": {"ctr_prediction": 0}}},
            r"ctr_prediction's weight must be a positive",
        ),
        (
            {"tasks": {"enabled": ["user2item"]}, "train": {"task_weights": {"ctr_prediction": 2}}},
            r"task_weights names ctr_prediction, which tasks\.enabled does not list",
        ),
    ],
)
def test_task_weights_name_enabled_tasks_and_positive_numbers(raw: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(raw)
    assert parse_config({"train": {"task_weights": {"ctr_prediction": 2}}}).train.task_weights == {
        "ctr_prediction": 2.0
    }


def test_item_ids_names_the_key_and_the_allowed_values() -> None:
    assert parse_config({}).tasks.item_ids == "atomic"  # default scores do not move
    assert parse_config({"tasks": {"item_ids": "semantic"}}).tasks.item_ids == "semantic"
    with pytest.raises(ConfigError) as err:
        parse_config({"tasks": {"item_ids": "rq-vae"}})
    assert "tasks.item_ids" in str(err.value)
    assert "'atomic' or 'semantic'" in str(err.value)
    with pytest.raises(ConfigError, match="tasks.semantic_codebook_size"):
        parse_config({"tasks": {"semantic_codebook_size": 1}})


def test_user_source_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="data.path is required"):
        parse_config({"data": {"source": "recbole_atomic"}})


def test_threshold_outside_rating_range() -> None:
    with pytest.raises(ConfigError, match="rating_threshold"):
        parse_config({"data": {"rating_threshold": 9}})


def test_unparsable_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_params_file_missing_whole_sections_names_them(tmp_path: Path) -> None:
    import yaml

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    del params["merge"], params["registry"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path} lacks section(s) merge, registry;")
    parse_config({"data": {"max_users": 10}})  # partial mappings (pipeline overrides) stay fine


# ---- reliability (issue 24): non-finite numbers, overlapping paths, seeds, the file itself -----


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "tmole.alpha", float("inf")),
        ("model", "tmole.gate_temperature", float("nan")),
        ("train", "learning_rate", float("nan")),
        ("train", "weight_decay", float("inf")),
        ("data", "rating_threshold", float("-inf")),
        ("registry", "min_improvement", float("inf")),
    ],
)
def test_non_finite_settings_are_refused_naming_the_key(
    section: str, key: str, value: float
) -> None:
    raw: dict = {}
    inner = raw.setdefault(section, {})
    *parents, leaf = key.split(".")
    for parent in parents:
        inner = inner.setdefault(parent, {})
    inner[leaf] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: Input should be a finite number"):
        parse_config(raw)


def test_non_finite_setting_written_as_yaml_is_refused(tmp_path: Path) -> None:
    text = (REPO_ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("    alpha: 16.0", "    alpha: .inf", 1))
    with pytest.raises(ConfigError, match=r"model\.tmole\.alpha: Input should be a finite number"):
        load_config(path)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ({"tasks": "data/interim"}, r"paths\.interim and paths\.tasks are the same folder"),
        ({"reports": "data/tasks/reports"}, r"paths\.reports .* lies inside paths\.tasks"),
        ({"train": "models"}, r"paths\.backbone .* lies inside paths\.train"),
        ({"merged": "./models/train/"}, r"paths\.train and paths\.merged are the same folder"),
    ],
)
def test_overlapping_paths_are_refused(paths: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"paths": paths})


@pytest.mark.parametrize("seed", [-1, 2**70])
def test_seed_out_of_range_is_named(seed: int) -> None:
    with pytest.raises(ConfigError, match=rf"seed: Input should be .*\(got {seed}\)"):
        parse_config({"seed": seed})


def test_empty_params_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="params.yaml is empty; it must name every section"):
        load_config(path)


def test_duplicate_yaml_key_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (REPO_ROOT / "params.yaml").read_text()
    path.write_text(text.replace("seed: 42", "seed: 42\nseed: 7", 1))
    with pytest.raises(
        ConfigError, match=r"duplicate key 'seed' on line 4 \(first given on line 3\)"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("team/recfound", "cannot contain '/'"),
        ("team:recfound", "cannot contain ':'"),
        ("..", "reads as '..'"),
        ("   ", "must not be blank"),
    ],
)
def test_model_name_the_registry_refuses_is_named(name: str, words: str) -> None:
    """Refused when params.yaml is read, not after evaluate, when MLflow creates the version;
    the rule is MLflow's own (its check agrees on every name here)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    with pytest.raises(ConfigError) as err:
        parse_config({"registry": {"model_name": name}})
    assert "registry.model_name" in str(err.value) and words in str(err.value)
    with pytest.raises(MlflowException):
        _validate_model_name(name)


@pytest.mark.parametrize("name", ["recfound", "team-recfound", "team_recfound.v2", "RecFound 2"])
def test_model_names_the_registry_accepts_pass(name: str) -> None:
    from mlflow.utils.validation import _validate_model_name

    _validate_model_name(name)
    assert parse_config({"registry": {"model_name": name}}).registry.model_name == name


def test_gpu_profile_is_a_full_valid_params_file() -> None:
    """params.gpu.yaml names every key params.yaml names (so it stays a whole file as settings
    are added) and passes the same validation; it trains a user's checkpoint, not the builtin."""
    import yaml

    def keys(node: object, prefix: str = "") -> set[str]:
        if not isinstance(node, dict):
            return {prefix}
        return {k for name, v in node.items() for k in keys(v, f"{prefix}{name}.")}

    default = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    profile = yaml.safe_load((REPO_ROOT / "params.gpu.yaml").read_text())
    assert keys(profile) == keys(default)
    cfg = load_config(REPO_ROOT / "params.gpu.yaml")
    assert cfg.model.backbone != "builtin"
    assert cfg.pretrain.trainable == "identifiers" and cfg.pretrain.bf16 and cfg.train.bf16
    assert cfg.train.bf16_weights
    assert cfg.cluster.train_gpus >= 1
    assert load_config(REPO_ROOT / "params.yaml").train.bf16_weights is False  # CPU run as it was
