"""The device a stage computes on: the accelerator's (a GPU when there is one, else the CPU).

Training creates its own :class:`accelerate.Accelerator` (process group, strategy, precision);
the other stages (pretrain, merge, evaluate, baselines) run in one process and ask here, so every
stage lands on the same device accelerate would pick.
"""

from __future__ import annotations

import torch
from accelerate import PartialState


def stage_device() -> torch.device:
    """``accelerator.device`` of this process (``cuda:LOCAL_RANK`` on GPUs, else ``cpu``)."""
    return PartialState(cpu=not torch.cuda.is_available()).device
