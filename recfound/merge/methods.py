"""Merging of checkpoints (state dicts) by linear averaging, SLERP and TIES.

Every method works on *task vectors*: ``checkpoint - base``, where ``base`` is the adapter at
initialisation (all zeros when ``base`` is None, i.e. the checkpoints themselves are merged). The
merged checkpoint is ``base + merged task vector``. Working on task vectors matters for SLERP and
TIES: the angle between, and the signs of, the *updates* carry the information, not those of the raw
weights.

Contract shared by all functions:

- checkpoints are ``dict[str, torch.Tensor]`` with identical keys and shapes (and ``base`` too, when
  given); otherwise :class:`MergeError` names the first mismatching key;
- floating tensors are merged in at least float32 and returned in the dtype and on the device of the
  first checkpoint's tensor; non-floating tensors (integer buffers) must be equal in every
  checkpoint and are copied through;
- inputs are never modified; results are new tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from recfound.errors import UserInputError

StateDict = dict[str, torch.Tensor]
Sparsify = Literal["magnitude", "random"]

MERGE_METHODS: tuple[str, ...] = ("linear", "slerp", "ties")
SPARSIFY_METHODS: tuple[str, ...] = ("magnitude", "random")

# Below this angle (radians) between two task vectors, SLERP equals linear interpolation to
# numerical precision and the sin(angle) denominator is unstable.
SLERP_MIN_ANGLE = 1e-4
# Task vectors with a norm at or below this are treated as zero (SLERP falls back to linear).
SLERP_MIN_NORM = 1e-12


class MergeError(UserInputError):
    """Checkpoints or merge settings that cannot be merged; the message says which and why."""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Promote half-precision floats to float32 for the arithmetic; keep float64 as is."""
    return torch.promote_types(dtype, torch.float32)


def _check_compatible(checkpoints: Sequence[StateDict], base: StateDict | None) -> list[str]:
    """Return the (shared) keys, or raise :class:`MergeError` naming the first mismatching key."""
    if not checkpoints:
        raise MergeError("no checkpoints to merge: pass at least one state dict")
    reference = checkpoints[0]
    others: list[tuple[str, StateDict]] = [
        (f"checkpoint {i}", ckpt) for i, ckpt in enumerate(checkpoints[1:], start=1)
    ]
    if base is not None:
        others.append(("base", base))
    for name, other in others:
        missing = [k for k in reference if k not in other]
        if missing:
            raise MergeError(f"key {missing[0]!r} of checkpoint 0 is missing from {name}")
        extra = [k for k in other if k not in reference]
        if extra:
            raise MergeError(f"key {extra[0]!r} of {name} is missing from checkpoint 0")
        for key, tensor in reference.items():
            if tuple(other[key].shape) != tuple(tensor.shape):
                raise MergeError(
                    f"key {key!r} has shape {tuple(tensor.shape)} in checkpoint 0 but "
                    f"{tuple(other[key].shape)} in {name}"
                )
            if other[key].is_floating_point() != tensor.is_floating_point():
                raise MergeError(
                    f"key {key!r} is floating in one of checkpoint 0 / {name} and not in the other"
                )
    return list(reference)


def _check_weights(weights: Sequence[float], n: int) -> list[float]:
    """Validate non-negative weights (one per checkpoint) and normalise them to sum 1."""
    if len(weights) != n:
        raise MergeError(f"got {len(weights)} weights for {n} checkpoints; pass one per checkpoint")
    values = [float(w) for w in weights]
    for i, w in enumerate(values):
        if not math.isfinite(w) or w < 0:
            raise MergeError(f"weight {i} is {w}; weights must be finite and non-negative")
    total = sum(values)
    if total <= 0:
        raise MergeError("weights sum to 0; at least one weight must be positive")
    return [w / total for w in values]


def _merge_per_key(
    checkpoints: Sequence[StateDict],
    base: StateDict | None,
    merge_task_vectors: Callable[[str, list[torch.Tensor]], torch.Tensor],
) -> StateDict:
    """Apply ``merge_task_vectors(key, task_vectors) -> merged task vector`` to every key.

    Task vectors are passed flattened, shape ``(numel,)``, in the compute dtype; the merged one
    must have the same shape. Keys are visited in sorted order so that seeded randomness does not
    depend on the insertion order of the dicts.
    """
    keys = _check_compatible(checkpoints, base)
    merged: StateDict = {}
    for key in sorted(keys):
        first = checkpoints[0][key]
        if not first.is_floating_point():
            for i, ckpt in enumerate(checkpoints[1:], start=1):
                if not torch.equal(ckpt[key], first):
                    raise MergeError(
                        f"non-floating tensor {key!r} differs between checkpoint 0 and "
                        f"checkpoint {i}; it cannot be interpolated"
                    )
            merged[key] = first.clone()
            continue
        dtype = _compute_dtype(first.dtype)
        base_flat = (
            torch.zeros(first.numel(), dtype=dtype, device=first.device)
            if base is None
            else base[key].detach().to(device=first.device, dtype=dtype).reshape(-1)
        )
        task_vectors = [
            ckpt[key].detach().to(device=first.device, dtype=dtype).reshape(-1) - base_flat
            for ckpt in checkpoints
        ]
        merged_tv = merge_task_vectors(key, task_vectors)
        merged[key] = (base_flat + merged_tv).reshape(first.shape).to(first.dtype)
    return {key: merged[key] for key in keys}


def merge_linear(
    checkpoints: Sequence[StateDict],
    weights: Sequence[float],
    base: StateDict | None = None,
) -> StateDict:
    """Weighted mean of the task vectors: ``base + sum_i w_i (ckpt_i - base)``.

    ``weights`` (one per checkpoint, non-negative, not all zero) are normalised to sum 1, so
    ``(1, 0)`` returns the first checkpoint and ``(1, 1)`` the plain mean.
    """
    normalised = _check_weights(weights, len(checkpoints))

    def combine(_key: str, task_vectors: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros_like(task_vectors[0])
        for w, tv in zip(normalised, task_vectors, strict=True):
            out += w * tv
        return out

    return _merge_per_key(checkpoints, base, combine)


def _slerp_vectors(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two flat vectors, linear when (anti)colinear or one is ~0."""
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    linear = (1.0 - t) * a + t * b
    if norm_a <= SLERP_MIN_NORM or norm_b <= SLERP_MIN_NORM:
        return linear
    cos = torch.clamp(torch.dot(a, b) / (norm_a * norm_b), -1.0, 1.0)
    omega = float(torch.arccos(cos))
    # sin(omega) vanishes at both ends; at omega ~ pi the great circle is undefined too.
    if omega < SLERP_MIN_ANGLE or math.pi - omega < SLERP_MIN_ANGLE:
        return linear
    sin_omega = math.sin(omega)
    return (math.sin((1.0 - t) * omega) / sin_omega) * a + (math.sin(t * omega) / sin_omega) * b


def merge_slerp(
    a: StateDict,
    b: StateDict,
    t: float,
    base: StateDict | None = None,
) -> StateDict:
    """Spherical linear interpolation of the task vectors of ``a`` and ``b``, tensor by tensor.

    Each tensor's task vector is flattened; ``t = 0`` gives ``a``, ``t = 1`` gives ``b``. For
    task vectors of equal norm the result keeps that norm (linear interpolation shrinks it). Falls
    back to linear interpolation when the angle is below ``SLERP_MIN_ANGLE`` (or within it of pi),
    or when either task vector has norm at most ``SLERP_MIN_NORM``.
    """
    t = float(t)
    if not math.isfinite(t) or not 0.0 <= t <= 1.0:
        raise MergeError(f"SLERP t must lie in [0, 1], got {t}")

    def combine(_key: str, task_vectors: list[torch.Tensor]) -> torch.Tensor:
        return _slerp_vectors(task_vectors[0], task_vectors[1], t)

    return _merge_per_key([a, b], base, combine)


def _keep_count(density: float, numel: int) -> int:
    """How many entries a trim at ``density`` keeps: ``ceil(density * numel)`` (at least one)."""
    return min(numel, max(1, math.ceil(density * numel - 1e-9)))


def _trim(
    task_vector: torch.Tensor,
    density: float,
    sparsify: Sparsify,
    generator: torch.Generator,
) -> torch.Tensor:
    """Keep ``_keep_count(density, numel)`` entries of a flat task vector, zero the rest.

    ``magnitude`` keeps the largest ``|v|`` (TIES); ``random`` keeps a uniformly random subset drawn
    from ``generator`` and rescales the survivors by ``1 / density`` (DARE), preserving the
    expectation of the vector.
    """
    numel = task_vector.numel()
    if density >= 1.0 or numel == 0:
        return task_vector.clone()
    k = _keep_count(density, numel)
    if sparsify == "magnitude":
        keep = torch.topk(task_vector.abs(), k, sorted=False).indices
        scale = 1.0
    else:
        keep = torch.randperm(numel, generator=generator)[:k].to(task_vector.device)
        scale = 1.0 / density
    trimmed = torch.zeros_like(task_vector)
    trimmed[keep] = task_vector[keep] * scale
    return trimmed


def merge_ties(
    checkpoints: Sequence[StateDict],
    weights: Sequence[float],
    density: float,
    sparsify: Sparsify = "magnitude",
    seed: int = 0,
    base: StateDict | None = None,
) -> StateDict:
    """TIES-merging (Yadav et al., 2023) of the task vectors, tensor by tensor.

    1. Trim: each task vector keeps ``ceil(density * numel)`` entries per tensor, either the
       largest by magnitude or (``sparsify="random"``) a random subset drawn from a generator
       seeded with ``seed`` and rescaled by ``1 / density`` as in DARE.
    2. Elect: the sign of each entry is the sign of the weighted sum ``sum_i w_i tv_i``.
    3. Disjoint merge: per entry, the weighted mean over the task vectors whose (non-zero) entry
       agrees with the elected sign, ``sum_i w_i tv_i m_i / sum_i w_i m_i``; entries where none
       agrees (or the elected sign is 0) become 0.

    ``weights`` are non-negative, one per checkpoint, normalised to sum 1. ``density`` lies in
    ``(0, 1]``; with ``density=1`` nothing is trimmed and identical inputs merge to themselves.
    """
    normalised = _check_weights(weights, len(checkpoints))
    density = float(density)
    if not math.isfinite(density) or not 0.0 < density <= 1.0:
        raise MergeError(f"TIES density must lie in (0, 1], got {density}")
    if sparsify not in SPARSIFY_METHODS:
        raise MergeError(f"unknown sparsify {sparsify!r}; choose one of {SPARSIFY_METHODS}")
    generator = torch.Generator().manual_seed(int(seed))

    def combine(_key: str, task_vectors: list[torch.Tensor]) -> torch.Tensor:
        trimmed = torch.stack([_trim(tv, density, sparsify, generator) for tv in task_vectors])
        w = torch.tensor(normalised, dtype=trimmed.dtype, device=trimmed.device).unsqueeze(1)
        weighted = w * trimmed  # (n_checkpoints, numel)
        elected = torch.sign(weighted.sum(dim=0))  # (numel,)
        agrees = (torch.sign(trimmed) == elected) & (elected != 0)
        numerator = (weighted * agrees).sum(dim=0)
        denominator = (w * agrees).sum(dim=0)
        return torch.where(
            denominator > 0, numerator / denominator.clamp_min(1e-30), torch.zeros_like(numerator)
        )

    return _merge_per_key(checkpoints, base, combine)


def merge(
    method: str,
    checkpoints: Sequence[StateDict],
    coefficients: Sequence[float],
    density: float = 1.0,
    sparsify: Sparsify = "magnitude",
    seed: int = 0,
    base: StateDict | None = None,
) -> StateDict:
    """Merge ``checkpoints`` with ``method`` (one of :data:`MERGE_METHODS`).

    ``coefficients`` (one per checkpoint, non-negative) are the weights for ``linear`` and
    ``ties``; ``slerp`` needs exactly two checkpoints and interpolates at
    ``t = coefficients[1] / sum(coefficients)``. ``density``, ``sparsify`` and ``seed`` are used
    by ``ties`` only.
    """
    if method == "linear":
        return merge_linear(checkpoints, coefficients, base=base)
    if method == "slerp":
        if len(checkpoints) != 2:
            raise MergeError(f"SLERP merges exactly 2 checkpoints, got {len(checkpoints)}")
        weights = _check_weights(coefficients, 2)
        return merge_slerp(checkpoints[0], checkpoints[1], weights[1], base=base)
    if method == "ties":
        return merge_ties(
            checkpoints, coefficients, density=density, sparsify=sparsify, seed=seed, base=base
        )
    raise MergeError(f"unknown merge method {method!r}; choose one of {MERGE_METHODS}")
