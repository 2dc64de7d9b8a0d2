"""What the two trained baselines (biased MF, SASRec) share: the check of their params' sizes and
counts, the epoch loop that early-stops on a validation figure and keeps the best epoch's weights,
and their on-disk form (the weights as safetensors beside a JSON of their params, ids and training
history, written atomically)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from recfound import artifacts
from recfound.baselines.rankers import BaselineError


class Schedule(Protocol):
    """The epoch budget of a baseline's params."""

    max_epochs: int
    patience: int


def check_counts(params: object, model: str, *names: str) -> None:
    """Refuse the first of ``names`` (sizes and counts of ``model``'s ``params``) below 1."""
    for name in names:
        if getattr(params, name) < 1:
            raise BaselineError(f"{model} {name} must be >= 1, got {getattr(params, name)}")


def fit_epochs(
    network: nn.Module,
    run_epoch: Callable[[], dict[str, float]],
    schedule: Schedule,
    monitor: tuple[str, bool],
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, float]], int]:
    """Epochs ``1..schedule.max_epochs`` of ``run_epoch()`` (one training pass; it returns the
    epoch's figures, among them the monitored one when there is validation data).

    ``monitor`` is (figure, whether higher is better). Stops after ``schedule.patience`` epochs
    without a better figure; an epoch without it counts as
    better than the ones before (so without validation data the last epoch is kept). The best
    epoch's weights are loaded back into ``network``. Returns the per-epoch records (``epoch``
    first; each also went to ``on_epoch``) and the best epoch.
    """
    figure, higher_is_better = monitor
    best_state, best_score, best_epoch, waited = None, -float("inf"), 0, 0
    history: list[dict[str, float]] = []
    desc = type(schedule).__name__.removesuffix("Params")
    bar = tqdm(range(1, schedule.max_epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        record: dict[str, float] = {"epoch": epoch, **run_epoch()}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
        if figure in record:
            score = record[figure] if higher_is_better else -record[figure]
        else:
            score = float(epoch)
        if score > best_score:
            best_score, waited, best_epoch = score, 0, epoch
            best_state = copy.deepcopy(network.state_dict())
        else:
            waited += 1
            if waited >= schedule.patience:
                break
    bar.close()
    network.load_state_dict(best_state)
    return history, best_epoch


def save_trained(
    directory: str | Path,
    network: nn.Module | None,
    files: tuple[str, str],
    config: Mapping[str, Any],
    name: str,
) -> Path:
    """``network``'s weights and ``config`` into ``directory`` as ``files`` (weights, JSON)."""
    if network is None:
        raise RuntimeError(f"{name}.save called before fit")
    weights_file, config_file = files
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with artifacts.staged_directory(directory) as staging:
        save_file(state, str(staging / weights_file))
        artifacts.write_json(staging / config_file, dict(config))
    return Path(directory)


def read_trained(
    directory: str | Path, files: tuple[str, str], name: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON and the weights :func:`save_trained` wrote to ``directory``."""
    directory = Path(directory)
    weights_file, config_file = files
    if not (directory / config_file).is_file() or not (directory / weights_file).is_file():
        raise BaselineError(
            f"{directory} holds no saved {name} ({config_file} + {weights_file}); run "
            "`recfound baselines` first"
        )
    return json.loads((directory / config_file).read_text()), load_file(
        str(directory / weights_file)
    )
