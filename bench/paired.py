"""How the benches print a paired difference: ``+0.036 [+0.019, +0.054]``, the signed difference
and its interval to three decimals, from the dict that evaluation's ``compare(...).to_dict()``
writes (``difference``, ``ci``; a bound evaluation could not compute is ``None``, printed nan).

Imported by the benches as a sibling (``python bench/NAME.py`` puts bench/ on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def interval_text(interval: Sequence[float | None], sign: str = "+") -> str:
    """``[low, high]`` to three decimals; ``sign`` "+" writes the signs (a difference's bounds),
    "" leaves them as numbers print (a score's)."""
    return "[" + ", ".join("nan" if v is None else f"{v:{sign}.3f}" for v in interval) + "]"


def signed(difference: dict[str, Any]) -> str:
    """``+0.036 [+0.019, +0.054]``: a paired difference with its interval."""
    return f"{difference['difference']:+.3f} {interval_text(difference['ci'])}"
