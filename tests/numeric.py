"""Float comparisons sized to the values compared.

Two fp32 computations of the same function along different paths (folded vs unfolded weights, one
batch vs one row at a time) differ by rounding that grows with the magnitude of the values:
logits of size 10 differ by about 1e-6 to 1e-5 on some machines. A fixed ``atol`` at that edge
fails on one machine and passes on another, so the tolerance here is relative to the largest
value compared.
"""

from __future__ import annotations

import torch

# fp32 has ~7 significant digits; a few hundred summed products lose one or two
RELATIVE = 1e-5


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, relative: float = RELATIVE) -> None:
    """``got`` equals ``want`` within ``relative`` × the largest magnitude in ``want`` (at least
    ``relative`` in absolute terms) per element, plus ``relative`` of each element."""
    got, want = torch.as_tensor(got), torch.as_tensor(want)
    scale = max(1.0, float(want.detach().abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got, want, atol=relative * scale, rtol=relative)
