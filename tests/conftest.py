"""Shared fixtures: small real data (a slice of MovieLens-100K) written as RecBole atomic files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from recfound.data.sources import ml100k_folder
from recfound.model.backbone import load_backbone, save_backbone
from recfound.model.bundle import ModelSpec, adapter_tensors, build_from_spec, save_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]


# The two longest files (each about five minutes under `make test`), started first of all
LONGEST_FILES = ("tests/test_dvc_pipeline.py", "tests/pipelines/test_dvc_data.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first, the longest two files before them: under `make test`'s
    workers (``--dist loadfile --no-loadscope-reorder``, which keeps this order) the long files
    start at once on different workers instead of queueing behind each other at the end."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            not item.nodeid.startswith(LONGEST_FILES),
        )
    )


def read_atomic_text(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_ml100k_slice(folder: Path, num_users: int = 40, name: str = "mini") -> Path:
    """Copy the first ``num_users`` users of ml-100k (their ratings and items) as atomic files."""
    source = ml100k_folder()
    folder.mkdir(parents=True, exist_ok=True)
    inter = read_atomic_text(source / "ml-100k.inter")
    users = {str(u) for u in range(1, num_users + 1)}
    kept = [inter[0]] + [line for line in inter[1:] if line.split("\t")[0] in users]
    items = {line.split("\t")[1] for line in kept[1:]}
    item_lines = read_atomic_text(source / "ml-100k.item")
    user_lines = read_atomic_text(source / "ml-100k.user")
    (folder / f"{name}.inter").write_text("\n".join(kept) + "\n")
    (folder / f"{name}.item").write_text(
        "\n".join([item_lines[0]] + [ln for ln in item_lines[1:] if ln.split("\t")[0] in items])
        + "\n"
    )
    (folder / f"{name}.user").write_text(
        "\n".join([user_lines[0]] + [ln for ln in user_lines[1:] if ln.split("\t")[0] in users])
        + "\n"
    )
    return folder


# The whole pipeline in a minute or two: a slice of users, a one-layer backbone, a few steps.
TINY_SECTIONS: dict[str, dict] = {
    "data": {"max_users": 60},
    "tasks": {"max_train_per_task": 60, "max_eval_per_task": 15, "queries_per_train_item": 1},
    "baselines": {
        "sasrec": {
            "hidden_size": 16,
            "num_layers": 1,
            "num_heads": 1,
            "inner_size": 32,
            "max_len": 10,
            "max_epochs": 4,
            "patience": 2,
        },
        "mf": {"factors": 4, "max_epochs": 4, "patience": 2},
    },
    "model": {
        "builtin": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 4,
            "intermediate_size": 64,
            "max_length": 128,
            "vocab_size": 600,
        },
        "max_length": 96,
    },
    "pretrain": {"steps": 10, "batch_size": 4, "seq_len": 32, "eval_every": 5, "warmup_steps": 2},
    "train": {
        "steps": 6,
        "batch_size": 8,
        "embedding_batch_size": 8,
        "samples_per_task": 4,
        "eval_every": 3,
        "val_batch_size": 4,
        "checkpoint_every": 3,
        "warmup_steps": 1,
        "s2sched": {"warmup_steps": 2, "update_every": 2, "window": 2},
    },
    "merge": {"trials": 2, "max_per_task": 6},
    "evaluate": {"max_per_task": 6, "max_new_tokens": 3, "ks": [1, 5]},
}


def write_tiny_params(path: Path, **overrides: dict) -> Path:
    """A params.yaml with :data:`TINY_SECTIONS`, each section updated by ``overrides``."""
    sections = {k: dict(v) for k, v in TINY_SECTIONS.items()}
    for key, value in overrides.items():
        sections[key] = {**sections.get(key, {}), **value}
    return write_params(path, **sections)


def sqlite_tracking(root: Path) -> dict[str, str]:
    """The ``tracking`` section of a project under ``root``: a sqlite store and artifacts there."""
    return {
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "artifact_location": str(root / "mlartifacts"),
    }


def dirs_under(root: Path, *names: str) -> dict[str, str]:
    """``paths`` entries ``name: root/name`` for each of ``names``."""
    return {name: str(root / name) for name in names}


def build_task_data(cfg) -> None:
    """Run the data stages of ``cfg`` in order: ingest, validate, build_tasks."""
    from recfound.stages.build_tasks import run_build_tasks
    from recfound.stages.ingest import run_ingest
    from recfound.stages.validate import run_validate

    run_ingest(cfg)
    run_validate(cfg)
    run_build_tasks(cfg)


def write_params(path: Path, **sections: dict) -> Path:
    """Write a params.yaml from the repository's defaults with ``sections`` merged in."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture()
def mini_atomic(tmp_path: Path) -> Path:
    return write_ml100k_slice(tmp_path / "raw")


def write_mini_project(work: Path, atomic: Path) -> Path:
    """``work`` with a params.yaml pointing at the mini atomic files in ``atomic``, small caps."""
    work.mkdir()
    write_params(
        work / "params.yaml",
        data={"source": "recbole_atomic", "path": str(atomic), "dataset_name": "mini"},
        tasks={"max_train_per_task": 100, "max_eval_per_task": 20},
    )
    return work


@pytest.fixture()
def mini_project(tmp_path: Path, mini_atomic: Path) -> Path:
    """A working directory whose params.yaml points at the mini atomic files with small caps."""
    return write_mini_project(tmp_path / "work", mini_atomic)


def dvc_env() -> dict[str, str]:
    """The environment a test runs `dvc` (and the stages it starts) in: the virtual environment's
    bin folder first on PATH (`make test` runs its python without activating it), no DVC
    analytics, and no MLFLOW_TRACKING_URI from the caller (each project tracks to its own store)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def file_digests(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


__all__ = [
    "REPO_ROOT",
    "TINY_SECTIONS",
    "dvc_env",
    "file_digests",
    "pd",
    "write_ml100k_slice",
    "write_params",
    "write_tiny_params",
]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(backbone_dir, bundle_dir)`` of a tiny, randomly initialised RecFound model."""
    from tests.train import tiny

    root = tmp_path_factory.mktemp("tiny_model")
    tasks = tiny.tiny_tasks(n_train=60, n_valid=8)
    texts = [str(t) for task in tasks for t in pd.concat([task.train.prompt, task.train.target])]
    base, tokenizer = tiny.tiny_backbone(texts)
    save_backbone(base, tokenizer, root / "backbone")
    spec = ModelSpec(
        adapter=tiny.ADAPTER, task_kinds={t.name: t.kind for t in tasks}, seed=0, max_length=48
    )
    base, tokenizer = load_backbone(root / "backbone")
    rec = build_from_spec(base, tokenizer, spec)
    generator = torch.Generator().manual_seed(0)
    tensors = {  # move the adapter off its initial values so it does change the outputs
        name: value + 0.02 * torch.randn(value.shape, generator=generator)
        for name, value in adapter_tensors(rec.model).items()
    }
    save_bundle(root / "bundle", spec, tensors)
    return root / "backbone", root / "bundle"


# Tasks with a catalogue: the two next-item tasks the `recommend` request uses.
CATALOGUE_TASKS = {"sequential_recommendation": "generative", "user2item": "embedding"}


@pytest.fixture(scope="session")
def tiny_catalogue_project(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: tuple[Path, Path]
) -> Path:
    """A working directory with task data of 30 ml-100k users (``sequential_recommendation`` and
    ``user2item``; items, identifiers, split interactions) and a model that knows the
    identifiers: the tiny backbone extended with one token per item and a TMoLE of the two tasks
    moved off its initial values. Its ``params.yaml`` points at all of it (tracking under it)."""
    from recfound.config import load_config
    from recfound.model.backbone import add_item_tokens
    from tests.train import tiny

    root = tmp_path_factory.mktemp("catalogue_project")
    raw = write_ml100k_slice(root / "raw", num_users=30)
    params = write_tiny_params(
        root / "params.yaml",
        data={"source": "recbole_atomic", "path": str(raw), "dataset_name": "mini"},
        tasks={"enabled": list(CATALOGUE_TASKS), "sequence_length": 12},
        paths={
            "interim": str(root / "data" / "interim"),
            "tasks": str(root / "data" / "tasks"),
            "backbone": str(root / "models" / "backbone"),
            "merged": str(root / "models" / "merged"),
            "baselines": str(root / "models" / "baselines"),
            "reports": str(root / "reports"),
            "recommendations": str(root / "data" / "recommendations"),
        },
        tracking=sqlite_tracking(root),
    )
    cfg = load_config(params)
    build_task_data(cfg)
    items = pd.read_parquet(Path(cfg.paths.tasks) / "items.parquet")
    base, tokenizer = load_backbone(tiny_bundle[0])
    added = add_item_tokens(base, tokenizer, [t for t in items["token"] if t])
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # distinct identifier rows (resizing gives them all the same mean)
        for matrix in {base.get_input_embeddings().weight, base.get_output_embeddings().weight}:
            scale = matrix[:-added].std()
            matrix[-added:] = scale * torch.randn(added, matrix.shape[1], generator=generator)
    save_backbone(base, tokenizer, cfg.paths.backbone)
    spec = ModelSpec(adapter=tiny.ADAPTER, task_kinds=dict(CATALOGUE_TASKS), seed=0, max_length=64)
    base, tokenizer = load_backbone(cfg.paths.backbone)
    rec = build_from_spec(base, tokenizer, spec)
    generator = torch.Generator().manual_seed(3)
    tensors = {
        name: value + 0.05 * torch.randn(value.shape, generator=generator)
        for name, value in adapter_tensors(rec.model).items()
    }
    save_bundle(cfg.paths.merged, spec, tensors)
    return root
