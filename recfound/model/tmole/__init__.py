"""TMoLE: task-wise mixture of low-rank experts (RecFound), shaped like peft's LoRA tuner."""

from __future__ import annotations

from recfound.model.tmole.config import TMoLEConfig, TMoLEConfigError
from recfound.model.tmole.layer import TaskSelectionError, TaskState, TMoLELinear
from recfound.model.tmole.model import AdapterLoadError, TMoLEModel

__all__ = [
    "AdapterLoadError",
    "TMoLEConfig",
    "TMoLEConfigError",
    "TMoLELinear",
    "TMoLEModel",
    "TaskSelectionError",
    "TaskState",
]
