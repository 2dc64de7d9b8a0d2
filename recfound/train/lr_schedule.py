"""The learning-rate schedule of pretraining and adapter training: linear warmup, cosine decay."""

from __future__ import annotations

import math


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate of step ``step`` (0-based) of ``total``: a linear warmup over ``warmup``
    steps to ``peak``, then a cosine decay to 10% of the peak at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
