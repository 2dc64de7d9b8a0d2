"""Pipeline parameters: params.yaml's sections as defaults, ``--param KEY=VALUE`` overrides.

Every top-level section of params.yaml except ``paths`` is one pipeline parameter (a dict; ``seed``
an int); ``paths`` is not, because on the cluster each step's inputs and outputs are KFP artifacts.
The resource parameters (GPUs, CPU, memory of the steps) and the data location (the data
repository, revision and DVC remote the first data step fetches from) are plain scalars. An
override is checked with the same parser as params.yaml before anything is submitted, so a bad
value fails here with the key named.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import yaml

from recfound.config import ClusterConfig, Config, ConfigError, dotted, parse_config

SECTIONS: tuple[str, ...] = (
    "seed",
    "data",
    "tasks",
    "model",
    "pretrain",
    "train",
    "merge",
    "baselines",
    "evaluate",
    "registry",
    "tracking",
)
# Sections no Kubeflow step reads: the ablation is a DVC pipeline of its own (`make ablate`).
NOT_IN_THE_PIPELINE: tuple[str, ...] = ("ablation",)
# The resource parameters: params.yaml's ``cluster`` section (these are its defaults; a profile
# such as params.gpu.yaml sets its own, see resource_arguments).
RESOURCE_DEFAULTS: dict[str, int | str] = ClusterConfig().model_dump()
# Where the run's data comes from: "dvc" fetches the DVC-tracked tables of the data repository
# data_repo (a Git URL or path) at data_rev from its DVC remote (data_remote, default: the
# repository's default remote); "raw" re-reads data.source (a first run, before any data is
# versioned).
DATA_DEFAULTS: dict[str, str] = {
    "data_from": "dvc",
    "data_repo": "",
    "data_rev": "",
    "data_remote": "",
}
DATA_FROM = ("dvc", "raw")
_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def config_arguments(cfg: Config) -> dict[str, Any]:
    """The validated settings as pipeline arguments: one entry per section, ``paths`` left out.

    KFP parameters cannot hold null, so null settings are left out; every nullable setting of
    params.yaml defaults to null, so the pod's parse gives back the same config (checked here).
    """
    dumped = _without_nulls(cfg.model_dump(mode="json"))
    arguments = {section: dumped[section] for section in SECTIONS}
    outside = {"paths", "cluster", *NOT_IN_THE_PIPELINE}
    passed = dotted(parse_config(arguments).model_dump(mode="json", exclude=outside))
    wanted = dotted(cfg.model_dump(mode="json", exclude=outside))
    differing = sorted(k for k in passed.keys() | wanted.keys() if passed.get(k) != wanted.get(k))
    if differing:
        carried = ", ".join(s for s in SECTIONS if s != "seed")
        raise ConfigError(
            f"{', '.join(differing)}: the Kubeflow pipeline would run with another value than "
            f"params.yaml's (its parameters carry seed and the sections {carried}, and no "
            "null where the default is not null); set it to its default there, or run this "
            "setting with `dvc repro`"
        )
    return arguments


def resource_arguments(cfg: Config) -> dict[str, int | str]:
    """The resource parameters' values from the params file's ``cluster`` section (what the train
    step's pod requests: GPUs and their type, CPU, memory; and every other step's CPU, memory)."""
    return cfg.cluster.model_dump()


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"--param {key}: {'.'.join(parts[: depth + 1])} is a value, not a section"
            )
        node = child
    node[parts[-1]] = value


def _check_resource(key: str, value: Any) -> int | str:
    if key == "train_gpus":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--param train_gpus: expected a whole number >= 1, got {value!r}")
        return value
    text = str(value)
    if key.endswith("_cpu") and not _CPU.match(text):
        raise ConfigError(f"--param {key}: {text!r} is not a CPU amount (e.g. 4, 500m)")
    if key.endswith("_memory") and not _MEMORY.match(text):
        raise ConfigError(f"--param {key}: {text!r} is not a memory amount (e.g. 32G, 512Mi)")
    return text


def check_data_location(arguments: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` unless the arguments say where the run's data comes from."""
    if arguments["data_from"] not in DATA_FROM:
        raise ConfigError(
            f"--param data_from: expected one of {', '.join(DATA_FROM)}, got "
            f"{arguments['data_from']!r}"
        )
    if arguments["data_from"] == "dvc" and not arguments["data_repo"]:
        raise ConfigError(
            "the run reads versioned data (data_from=dvc) but no data repository is set: pass "
            "--param data_repo=<Git URL or path of the DVC project> --param data_rev=<tag, "
            "branch or commit>, or --param data_from=raw to re-read data.source"
        )


def pipeline_arguments(cfg: Config, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """All pipeline arguments: ``cfg``'s sections, the resources and the data location, with
    ``KEY=VALUE`` applied.

    ``KEY`` is a dotted params.yaml key (``train.steps``, ``model.tmole.rank``), a resource
    parameter (``train_gpus``, ``gpu_type``, …) or a data-location parameter (``data_from``,
    ``data_repo``, ``data_rev``, ``data_remote``); ``VALUE`` is read as YAML (``500``, ``true``,
    ``[user2item, item2item]``, ``null``). Raises :class:`ConfigError` naming the key when the
    result is not a valid params.yaml or a resource value is malformed.
    """
    raw = copy.deepcopy(config_arguments(cfg))
    resources = resource_arguments(cfg)
    location = dict(DATA_DEFAULTS)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param expects KEY=VALUE, got {override!r}")
        if key in location:
            location[key] = text.strip()  # a revision such as 1e5 stays text
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {key}: {text!r} is not a valid value: {exc}") from None
        if key in resources:
            resources[key] = _check_resource(key, value)
        elif key.split(".")[0] == "cluster":
            raise ConfigError(
                f"--param {key}: the cluster section sets the resource parameters; pass "
                f"--param {key.partition('.')[2] or 'train_gpus'}=VALUE instead"
            )
        elif key.split(".")[0] == "paths":
            raise ConfigError(
                f"--param {key}: paths are not settings of a pipeline run (each step's inputs "
                "and outputs are KFP artifacts)"
            )
        else:
            _set_dotted(raw, key, value)
    checked = parse_config(raw, origin="params with --param overrides")
    return {**config_arguments(checked), **resources, **location}
