"""TMoLE: task-wise mixture of low-rank experts (RecFound), shaped like peft's LoRA tuner."""

from __future__ import annotations

from recfound.model.tmole.config import TMoLEConfig, TMoLEConfigError
from recfound.model.tmole.layer import TaskSelectionError, TaskState, TMoLELinear
from recfound.model.tmole.model import TMoLEModel

__all__ = [
    "TMoLEConfig",
    "TMoLEConfigError",
    "TMoLELinear",
    "TMoLEModel",
    "TaskSelectionError",
    "TaskState",
]
