"""Properties of interpolation paths: exact ends, constant speed, length, slerp norms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from otpc.couplings import couple, couple_many
from otpc.paths import interpolate, path_frames, t_grid

coords = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def cloud_pairs(draw: st.DrawFn, min_d: int = 1) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 8))
    d = draw(st.integers(min_d, 5))
    return (
        draw(arrays(np.float64, (n, d), elements=coords)),
        draw(arrays(np.float64, (n, d), elements=coords)),
    )


methods = st.sampled_from(["clip", "ot", "random"])


@settings(max_examples=80, deadline=None)
@given(cloud_pairs(), methods, st.integers(2, 12), st.integers(0, 1000))
def test_path_starts_at_a_and_ends_at_b_sigma(pair, method: str, frames: int, seed: int) -> None:
    a, b = pair
    c = couple(a, b, method, seed=seed)
    path = path_frames(a, b, c, t_grid(frames)).numpy()
    assert path.shape == (frames, *a.shape)
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b[c.permutation])


@settings(max_examples=80, deadline=None)
@given(cloud_pairs(), methods, st.integers(2, 12), st.integers(0, 1000))
@example((np.zeros((2, 1)), np.zeros((2, 1))), "ot", 2, 0)  # identical clouds (CI failure)
def test_permutation_path_has_constant_speed_and_length_sqrt_n_cost(
    pair, method: str, frames: int, seed: int
) -> None:
    """E(t) = (1-t) A + t B[sigma] moves every row straight at constant speed, so each of the
    K-1 steps has Frobenius length ||B[sigma] - A|| / (K-1); the path's length L is
    ||B[sigma] - A||, hence L^2 = sum_i ||a_i - b_sigma(i)||^2 = n * cost, and its energy
    sum_k ||step_k||^2 / dt equals the same n * cost."""
    a, b = pair
    n = len(a)
    c = couple(a, b, method, seed=seed)
    steps = np.diff(path_frames(a, b, c, t_grid(frames)).numpy(), axis=0)
    step_len = np.sqrt((steps**2).sum(axis=(1, 2)))
    scale = 1e-9 * max(1.0, n * c.cost)
    expected = np.sqrt(n * c.cost) / (frames - 1)
    np.testing.assert_allclose(step_len, expected, rtol=1e-9, atol=1e-9)
    assert step_len.sum() ** 2 == pytest.approx(n * c.cost, rel=1e-9, abs=scale)
    dt = 1 / (frames - 1)
    assert (step_len**2).sum() / dt == pytest.approx(n * c.cost, rel=1e-9, abs=scale)
    # every row of the cloud moves at its own constant speed along a fixed direction
    row_steps = np.sqrt((steps**2).sum(axis=2))
    np.testing.assert_allclose(row_steps, row_steps[:1].repeat(frames - 1, 0), rtol=1e-9, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(cloud_pairs(min_d=2), st.integers(2, 12))
def test_slerp_ends_exact_and_norms_linear(pair, frames: int) -> None:
    a, b = pair
    ts = t_grid(frames)
    c = couple(a, b, "slerp")
    path = path_frames(a, b, c, ts).numpy()
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    norms = np.linalg.norm(path, axis=-1)
    expected = (1 - ts)[:, None] * np.linalg.norm(a, axis=-1) + ts[:, None] * np.linalg.norm(
        b, axis=-1
    )
    np.testing.assert_allclose(norms, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["clip", "ot", "slerp"])
def test_identical_clouds_cost_exactly_zero(method: str) -> None:
    """Coupled to itself by these methods a cloud does not move, so the cost is exactly 0,
    not Gram-formula rounding (hypothesis once drew this: ``ot`` reported ~1e-14)."""
    rng = np.random.default_rng(3)
    a = rng.uniform(-10, 10, (8, 5))
    c = couple(a, a.copy(), method, seed=1)
    assert c.cost == 0.0
    many = couple_many(np.stack([a, a]), np.stack([a, a]), method, seeds=[1, 2])
    assert [m.cost for m in many] == [0.0, 0.0]


def test_slerp_moves_on_the_arc_and_turns_opposite_rows_continuously() -> None:
    """Rows at 90 degrees go along the arc (not the chord); opposite rows, which have no
    unique arc, still turn through the sphere without passing through the origin."""
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0]], dtype=torch.float64)
    ts = t_grid(9)
    path = interpolate(a, b, ts, "slerp")
    half = path[4]
    np.testing.assert_allclose(half[0].numpy(), [np.sqrt(0.5), np.sqrt(0.5), 0.0], atol=1e-12)
    np.testing.assert_allclose(half[1].norm().item(), 2.0, atol=1e-12)
    assert abs(half[1] @ a[1]).item() < 1e-9  # halfway round: orthogonal to both ends
    gaps = (path[1:, 1] - path[:-1, 1]).norm(dim=-1)
    np.testing.assert_allclose(gaps.numpy(), gaps[0].item(), rtol=1e-9)  # constant angular speed


def test_barycentric_path_ends_at_the_plan_image() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    c = couple(a, b, "sinkhorn", sinkhorn_reg=0.5)
    path = path_frames(a, b, c, t_grid(3)).numpy()
    np.testing.assert_allclose(path[-1], 6 * c.plan @ b)
    assert not np.allclose(path[-1], b[couple(a, b, "ot").permutation])


def test_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        t_grid(1)
    a = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate(a, torch.zeros(4, 2), t_grid(3))
    with pytest.raises(ValueError, match="unknown path kind 'wiggle'"):
        interpolate(a, a, t_grid(3), "wiggle")
