"""Checkpoint merging: linear, SLERP and TIES against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from recfound.merge.methods import (
    MergeError,
    merge,
    merge_linear,
    merge_slerp,
    merge_ties,
)


def _ckpt(**tensors: list[float] | list[list[float]]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(values, dtype=torch.float32) for name, values in tensors.items()}


def test_linear_with_weights_one_zero_returns_first() -> None:
    a = _ckpt(w=[[1.0, -2.0], [3.0, 4.0]], b=[0.5])
    b = _ckpt(w=[[9.0, 9.0], [9.0, 9.0]], b=[-7.0])
    merged = merge_linear([a, b], [1.0, 0.0])
    assert set(merged) == {"w", "b"}
    for key in a:
        assert torch.equal(merged[key], a[key])
        assert merged[key].data_ptr() != a[key].data_ptr()


def test_linear_is_weighted_mean() -> None:
    a = _ckpt(w=[1.0, 2.0, 3.0])
    b = _ckpt(w=[5.0, 6.0, -1.0])
    merged = merge_linear([a, b], [3.0, 1.0])
    expected = torch.tensor([0.75 * 1 + 0.25 * 5, 0.75 * 2 + 0.25 * 6, 0.75 * 3 + 0.25 * -1])
    torch.testing.assert_close(merged["w"], expected)


def test_linear_with_base_merges_task_vectors() -> None:
    base = _ckpt(w=[1.0, 1.0])
    a = _ckpt(w=[3.0, 1.0])  # task vector (2, 0)
    b = _ckpt(w=[1.0, 5.0])  # task vector (0, 4)
    merged = merge_linear([a, b], [1.0, 1.0], base=base)
    torch.testing.assert_close(merged["w"], torch.tensor([2.0, 3.0]))


def test_linear_keeps_dtype_and_rejects_bad_weights() -> None:
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    b = {"w": torch.tensor([3.0, 4.0], dtype=torch.bfloat16)}
    assert merge_linear([a, b], [1.0, 1.0])["w"].dtype == torch.bfloat16
    with pytest.raises(MergeError, match="non-negative"):
        merge_linear([a, b], [1.0, -0.5])
    with pytest.raises(MergeError, match="sum to 0"):
        merge_linear([a, b], [0.0, 0.0])
    with pytest.raises(MergeError, match="2 checkpoints"):
        merge_linear([a, b], [1.0])


def test_slerp_endpoints() -> None:
    a = _ckpt(w=[1.0, 2.0, 0.0], v=[[0.5, -1.0]])
    b = _ckpt(w=[0.0, 1.0, 3.0], v=[[2.0, 1.0]])
    for t, expected in ((0.0, a), (1.0, b)):
        merged = merge_slerp(a, b, t)
        for key in a:
            torch.testing.assert_close(merged[key], expected[key])


def test_slerp_midpoint_preserves_norm_of_orthogonal_vectors() -> None:
    a = _ckpt(w=[3.0, 0.0])
    b = _ckpt(w=[0.0, 3.0])
    slerped = merge_slerp(a, b, 0.5)["w"]
    linear = merge_linear([a, b], [1.0, 1.0])["w"]
    assert float(torch.linalg.vector_norm(slerped)) == pytest.approx(3.0, rel=1e-6)
    torch.testing.assert_close(slerped, torch.tensor([3.0, 3.0]) / math.sqrt(2.0))
    assert float(torch.linalg.vector_norm(linear)) == pytest.approx(3.0 / math.sqrt(2.0))


def test_slerp_falls_back_to_linear_for_colinear_and_zero_vectors() -> None:
    a = _ckpt(w=[1.0, 2.0], z=[0.0, 0.0])
    b = _ckpt(w=[2.0, 4.0], z=[1.0, 1.0])
    merged = merge_slerp(a, b, 0.25)
    torch.testing.assert_close(merged["w"], torch.tensor([1.25, 2.5]))
    torch.testing.assert_close(merged["z"], torch.tensor([0.25, 0.25]))
    with pytest.raises(MergeError, match=r"\[0, 1\]"):
        merge_slerp(a, b, 1.5)


def test_slerp_interpolates_task_vectors_around_base() -> None:
    base = _ckpt(w=[10.0, 10.0])
    a = _ckpt(w=[13.0, 10.0])
    b = _ckpt(w=[10.0, 13.0])
    merged = merge_slerp(a, b, 0.5, base=base)["w"]
    torch.testing.assert_close(merged, torch.tensor([10.0, 10.0]) + 3.0 / math.sqrt(2.0))


def test_ties_density_one_identical_inputs_returns_input() -> None:
    a = _ckpt(w=[[1.0, -2.0, 0.0], [0.5, 3.0, -0.25]])
    merged = merge_ties([a, a, a], [1.0, 2.0, 3.0], density=1.0)
    torch.testing.assert_close(merged["w"], a["w"])


def test_ties_sign_election_and_disjoint_mean() -> None:
    a = _ckpt(w=[2.0, -1.0, -4.0, 1.0])
    b = _ckpt(w=[1.0, 3.0, 1.0, -1.0])
    # Sums (3, 2, -3, 0) elect (+, +, -, 0): entry 0 averages both (1.5), entry 1 keeps b (3),
    # entry 2 keeps a (-4), entry 3 has no elected sign (0).
    merged = merge_ties([a, b], [1.0, 1.0], density=1.0)
    torch.testing.assert_close(merged["w"], torch.tensor([1.5, 3.0, -4.0, 0.0]))


def test_ties_weights_drive_election_and_mean() -> None:
    a = _ckpt(w=[2.0, -1.0])
    b = _ckpt(w=[1.0, 3.0])
    # Weights (0.8, 0.2): weighted sums (1.8, -0.2) elect (+, -); entry 0 is the weighted mean
    # (0.8*2 + 0.2*1) / 1.0 = 1.8, entry 1 keeps only a: -1.
    merged = merge_ties([a, b], [4.0, 1.0], density=1.0)
    torch.testing.assert_close(merged["w"], torch.tensor([1.8, -1.0]))


def test_ties_magnitude_trim_keeps_largest_entries() -> None:
    a = _ckpt(w=[0.1, -5.0, 0.2, 3.0])
    # density 0.5 keeps the two largest magnitudes (-5 and 3); a single checkpoint merges to it.
    merged = merge_ties([a], [1.0], density=0.5, sparsify="magnitude")
    torch.testing.assert_close(merged["w"], torch.tensor([0.0, -5.0, 0.0, 3.0]))


def test_ties_magnitude_trim_with_base() -> None:
    base = _ckpt(w=[1.0, 1.0, 1.0, 1.0])
    a = _ckpt(w=[1.5, 0.0, 4.0, 1.0])  # task vector (0.5, -1, 3, 0)
    merged = merge_ties([a], [1.0], density=0.5, base=base)
    torch.testing.assert_close(merged["w"], torch.tensor([1.0, 0.0, 4.0, 1.0]))


def test_ties_random_sparsify_is_seeded_and_rescaled() -> None:
    gen = torch.Generator().manual_seed(123)
    a = {"w": torch.randn(64, generator=gen), "v": torch.randn(8, 8, generator=gen)}
    first = merge_ties([a], [1.0], density=0.25, sparsify="random", seed=7)
    again = merge_ties([a], [1.0], density=0.25, sparsify="random", seed=7)
    other = merge_ties([a], [1.0], density=0.25, sparsify="random", seed=8)
    for key in a:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["w"], other["w"])
    kept = first["w"] != 0
    assert int(kept.sum()) == 16
    torch.testing.assert_close(first["w"][kept], a["w"][kept] * 4.0)


def test_ties_rejects_bad_settings() -> None:
    a = _ckpt(w=[1.0])
    with pytest.raises(MergeError, match="density"):
        merge_ties([a, a], [1.0, 1.0], density=0.0)
    with pytest.raises(MergeError, match="sparsify"):
        merge_ties([a, a], [1.0, 1.0], density=0.5, sparsify="bogus")  # type: ignore[arg-type]


def test_mismatched_keys_and_shapes_name_the_key() -> None:
    a = _ckpt(w=[1.0, 2.0], v=[1.0])
    with pytest.raises(MergeError, match="'v'"):
        merge_linear([a, _ckpt(w=[1.0, 2.0])], [1.0, 1.0])
    with pytest.raises(MergeError, match="'u'"):
        merge_linear([a, _ckpt(w=[1.0, 2.0], v=[1.0], u=[0.0])], [1.0, 1.0])
    with pytest.raises(MergeError, match=r"'w' has shape \(2,\)"):
        merge_ties([a, _ckpt(w=[1.0, 2.0, 3.0], v=[1.0])], [1.0, 1.0], density=1.0)
    with pytest.raises(MergeError, match="base"):
        merge_slerp(a, a, 0.5, base=_ckpt(w=[1.0, 2.0]))
    assert issubclass(MergeError, ValueError)


def test_merge_dispatches() -> None:
    a = _ckpt(w=[3.0, 0.0])
    b = _ckpt(w=[0.0, 3.0])
    torch.testing.assert_close(merge("linear", [a, b], [1.0, 1.0])["w"], torch.tensor([1.5, 1.5]))
    # coefficients (1, 3) -> t = 0.75
    torch.testing.assert_close(
        merge("slerp", [a, b], [1.0, 3.0])["w"], merge_slerp(a, b, 0.75)["w"]
    )
    torch.testing.assert_close(
        merge("ties", [a, b], [1.0, 1.0], density=0.5, seed=3)["w"],
        merge_ties([a, b], [1.0, 1.0], density=0.5, seed=3)["w"],
    )
    with pytest.raises(MergeError, match="exactly 2"):
        merge("slerp", [a, b, a], [1.0, 1.0, 1.0])
    with pytest.raises(MergeError, match="unknown merge method"):
        merge("dare", [a, b], [1.0, 1.0])
