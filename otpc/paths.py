"""Interpolation paths E(t) between two point clouds, given a coupling.

For a permutation sigma the path is the displacement interpolation
E(t) = (1 - t) A + t B[sigma]; ``slerp`` moves each row along a great circle with a
linearly interpolated norm; ``barycentric`` (Sinkhorn) moves a_i to n (P B)_i.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from otpc.couplings import Coupling, PathKind


def t_grid(frames: int) -> np.ndarray:
    """``frames`` uniform values of t from 0 to 1 inclusive."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    return np.linspace(0.0, 1.0, frames)


def _orthogonal_unit(u: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to each unit row of ``u`` (..., d): the basis vector on which
    ``u`` is smallest, with its ``u`` component removed."""
    e = torch.zeros_like(u).scatter_(-1, u.abs().argmin(dim=-1, keepdim=True), 1.0)
    p = e - (e * u).sum(-1, keepdim=True) * u
    return p / p.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _slerp_rows(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Row-wise slerp of directions with linear norm; a, b (..., n, d), t (K,).

    Parallel rows move straight; opposite rows (no unique arc) turn through a fixed
    orthogonal direction, so the norm is interpolated linearly in every case (d >= 2).
    """
    na = a.norm(dim=-1, keepdim=True)
    nb = b.norm(dim=-1, keepdim=True)
    ua = a / na.clamp_min(1e-12)
    ub = b / nb.clamp_min(1e-12)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    tt = t.reshape(-1, *([1] * a.dim())).to(a.dtype)
    small = sin.abs() < 1e-6
    safe_sin = torch.where(small, torch.ones_like(sin), sin)
    wa = torch.where(small, 1 - tt, torch.sin((1 - tt) * theta) / safe_sin)
    wb = torch.where(small, tt, torch.sin(tt * theta) / safe_sin)
    direction = wa * ua + wb * ub
    opposite = small & (cos < 0)
    if opposite.any():
        turned = torch.cos(tt * theta) * ua + torch.sin(tt * theta) * _orthogonal_unit(ua)
        direction = torch.where(opposite, turned, direction)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return direction * ((1 - tt) * na + tt * nb)


def interpolate(
    a: torch.Tensor, target: torch.Tensor, ts: np.ndarray | torch.Tensor, kind: str = "linear"
) -> torch.Tensor:
    """Frames of the path from ``a`` to ``target`` (already coupled), shape (K, ..., n, d).

    ``a`` and ``target`` may carry leading batch dimensions (P, n, d) for many paths at once.
    """
    if a.shape != target.shape:
        raise ValueError(f"path ends differ in shape: {tuple(a.shape)} and {tuple(target.shape)}")
    if kind not in get_args(PathKind):
        raise ValueError(f"unknown path kind {kind!r}; known: {', '.join(get_args(PathKind))}")
    t = torch.as_tensor(np.asarray(ts), dtype=a.dtype, device=a.device)
    if kind == "slerp":
        frames = _slerp_rows(a, target, t)
    else:
        tt = t.reshape(-1, *([1] * a.dim()))
        frames = (1 - tt) * a + tt * target
    # End frames are exact copies, not (1 - 1) * a + 1 * b rounded in floating point.
    if len(t) and t[0] == 0:
        frames[0] = a
    if len(t) and t[-1] == 1:
        frames[-1] = target
    return frames


def path_frames(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, coupling: Coupling, ts: np.ndarray
) -> torch.Tensor:
    """Frames (K, n, d) of the path from A to B under ``coupling``."""
    a_t = torch.as_tensor(a)
    b_np = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    target = torch.as_tensor(coupling.target(b_np), dtype=a_t.dtype, device=a_t.device)
    return interpolate(a_t, target, ts, coupling.path)


def conditioning_path(
    a: torch.Tensor,
    b: torch.Tensor,
    coupling: Coupling,
    ts: np.ndarray,
    pooled_a: torch.Tensor | None = None,
    pooled_b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the model is conditioned on at each of a path's frames, in float32: the rows
    (K, n, d), moved along the coupling in float64, and SDXL's pooled vector (K, p), which has
    no rows and moves linearly with the same t (None if the model has none)."""
    rows = path_frames(a.double(), b.double(), coupling, ts).float()
    if pooled_a is None or pooled_b is None:
        return rows, None
    return rows, interpolate(pooled_a.double(), pooled_b.double(), ts).float()
