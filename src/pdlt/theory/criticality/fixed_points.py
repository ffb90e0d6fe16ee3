"""Fixed points of the kernel map and their stability (book §5.1), and the fixed point of the
correlation map of two inputs (Poole et al. 2016; the papers' c*, χ_c)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize

from pdlt.activations import Activation
from pdlt.gaussian import hermite_coefficients
from pdlt.gaussian.mehler import horner
from pdlt.theory.criticality._common import (
    CRITICAL_TOL,
    DT,
    K_GRID,
    K_MAX,
    Tensor,
    as_t,
    chi_parallel_at,
    g_second,
    mean_sigma2,
)

_KMAX_MEHLER = 320


# --------------------------------------------------------------------------------------------
# fixed points of the kernel map


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point K* = C_b + C_W g(K*) of the single-input kernel map (book §5.1).

    ``stability``: "stable" (χ_∥ < 1), "unstable" (χ_∥ > 1), "stable from above" /
    "stable from below" (χ_∥ = 1, half-stable: F(K) − K ≈ c (K − K*)², book §5.3.4) or
    "marginal" (χ_∥ = 1 and flat).
    """

    K: float
    chi_parallel: float
    stability: str


def map_gap(act: Activation, C_b: float, C_W: float) -> Callable[[float], float]:
    return lambda K: C_b + C_W * float(mean_sigma2(act, as_t([K]))[0]) - K


def stability_of(act: Activation, K: float, chi: float, C_W: float) -> str:
    if chi < 1 - CRITICAL_TOL:
        return "stable"
    if chi > 1 + CRITICAL_TOL:
        return "unstable"
    if K == 0.0:
        # only K ≥ 0 is reachable: the sign of F − K just above 0 decides
        small = float(_h_above_zero(act, C_W))
        return "stable" if small < 0 else "unstable" if small > 0 else "marginal"
    c = 0.5 * C_W * float(g_second(act, as_t([K]))[0])
    if c < 0:
        return "stable from above"
    if c > 0:
        return "stable from below"
    return "marginal"


def _h_above_zero(act: Activation, C_W: float) -> float:
    """F(K) − K at K = 1e-4 with C_b = 0 (the side of a K* = 0 fixed point that matters)."""
    K = as_t([1e-4])
    return float(C_W * mean_sigma2(act, K)[0] - K[0])


def fixed_points(act: Activation, C_b: float, C_W: float) -> list[FixedPoint]:
    """All fixed points in [0, K_MAX]: sign changes of F − K and tangent zeros.

    Scale-invariant σ has the linear map F(K) = C_b + C_W A_2 K (book §5.2), solved exactly:
    K* = C_b/(1 − C_W A_2) when C_W A_2 < 1, none when > 1 (or = 1 with C_b > 0), and the
    marginal line "every K" when C_W A_2 = 1 and C_b = 0 (returned as an empty list; see
    :func:`criticality`)."""
    hom = act.homogeneous
    if hom is not None:
        chi = C_W * (hom[0] ** 2 + hom[1] ** 2) / 2
        if chi < 1 - CRITICAL_TOL:
            K = C_b / (1 - chi)
            return [FixedPoint(K, chi, "stable")] if K <= K_MAX else []
        if chi <= 1 + CRITICAL_TOL:
            return []
        return [FixedPoint(0.0, chi, "unstable")] if C_b == 0 else []
    Kg = as_t(K_GRID)
    h = (C_b + C_W * mean_sigma2(act, Kg) - Kg).numpy()
    roots: list[float] = []
    if abs(h[0]) <= 1e-300:
        roots.append(0.0)
    hfun = map_gap(act, C_b, C_W)
    for i in range(len(h) - 1):
        lo, hi = K_GRID[i], K_GRID[i + 1]
        if h[i] == 0.0 and i > 0:
            roots.append(lo)
        elif h[i] * h[i + 1] < 0:
            roots.append(optimize.brentq(hfun, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=200))
    # tangent (double) zeros: local minima of |h| without a sign change
    ah = np.abs(h)
    for i in range(1, len(h) - 1):
        if ah[i] <= ah[i - 1] and ah[i] <= ah[i + 1] and h[i - 1] * h[i + 1] > 0 and h[i] != 0:
            if ah[i] > 1e-3 * max(1.0, K_GRID[i]):
                continue
            res = optimize.minimize_scalar(
                lambda k: abs(hfun(k)),
                bounds=(K_GRID[i - 1], K_GRID[i + 1]),
                method="bounded",
                options={"xatol": 1e-13 * K_GRID[i]},
            )
            if abs(res.fun) <= 1e-10 * max(1.0, res.x) and all(
                abs(res.x - r) > 1e-6 * max(1.0, r) for r in roots
            ):
                roots.append(float(res.x))
    roots = sorted(set(roots))
    chis = chi_parallel_at(act, as_t(roots), C_W).numpy() if roots else []
    return [
        FixedPoint(float(k), float(c), stability_of(act, float(k), float(c), C_W))
        for k, c in zip(roots, chis, strict=True)
    ]


def attractor(points: Sequence[FixedPoint], h1: float, K_first: float) -> FixedPoint | None:
    """The fixed point a kernel starting at K_first flows to (F increasing: the nearest one in the
    direction of F(K_first) − K_first); None if it flows past K_MAX."""
    if h1 == 0.0:
        for p in points:
            if abs(p.K - K_first) <= 1e-12 * max(1.0, K_first):
                return p
    if h1 > 0:
        above = [p for p in points if p.K >= K_first * (1 - 1e-12)]
        return above[0] if above else None
    below = [p for p in points if p.K <= K_first * (1 + 1e-12)]
    return below[-1] if below else None


# --------------------------------------------------------------------------------------------
# the correlation map of two inputs at the fixed point


def _mehler_weights(act: Activation, K: Tensor) -> Tensor:
    """a_k(K) = c_k² so that ⟨σ(z_a)σ(z_b)⟩ = Σ_k a_k c^k for K_aa = K_bb = K, K_ab = cK
    (the Mehler series), as (k, M, 1) for :func:`_poly`."""
    c, _ = hermite_coefficients(act.fn, K, _KMAX_MEHLER, kinks=act.kinks)
    return (c**2).T[:, :, None]


def _poly(a: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Σ_k a_k c^k and its derivative; a (k, M, 1), c (M, Q) → (M, Q) each."""
    return horner(a, c, derivative=True)


_C_GRID = torch.as_tensor(
    np.concatenate([np.linspace(-1.0, 0.9, 191), 1.0 - np.logspace(-1.0, -9.0, 161)]), dtype=DT
)


def correlation_fixed_point(
    act: Activation, K: Tensor, C_b: Tensor, C_W: Tensor
) -> tuple[Tensor, Tensor]:
    """(c*, χ_c) for the chaotic points: the largest stable root c* < 1 of the correlation map
    c ↦ (C_b + C_W ⟨σ(z_a)σ(z_b)⟩_{K*(1,c)})/K* (Poole et al. 2016), and its slope
    χ_c = C_W ⟨σ'(z_a)σ'(z_b)⟩ there. K, C_b, C_W: (M,)."""
    a = _mehler_weights(act, K)
    grid = _C_GRID.expand(K.shape[0], -1)
    p, _ = _poly(a, grid)
    P = (C_b[:, None] + C_W[:, None] * p) / K[:, None] - grid
    # walk down from c = 1: the first grid point with P ≥ 0 brackets the root with its right
    # neighbour (P < 0 just below 1 when χ_⊥ > 1).
    n = grid.shape[1]
    nonneg = P >= 0
    nonneg[:, -1] = False
    idx = torch.where(
        nonneg.any(dim=1),
        n - 1 - torch.argmax(torch.flip(nonneg, dims=[1]).to(torch.int8), dim=1),
        torch.zeros(K.shape[0], dtype=torch.long),
    )
    lo = grid.gather(1, idx[:, None])[:, 0]
    hi = grid.gather(1, torch.clamp(idx + 1, max=n - 1)[:, None])[:, 0]
    for _ in range(60):
        mid = (lo + hi) / 2
        pm, _ = _poly(a, mid[:, None])
        val = (C_b + C_W * pm[:, 0]) / K - mid
        lo = torch.where(val >= 0, mid, lo)
        hi = torch.where(val >= 0, hi, mid)
    c = (lo + hi) / 2
    _, dp = _poly(a, c[:, None])
    return c, C_W * dp[:, 0] / K


# --------------------------------------------------------------------------------------------
# one setting: criticality()


def vector_fixed_point(act: Activation, cb: Tensor, cw: Tensor, K_first: Tensor) -> Tensor:
    """The fixed point each (C_b, C_W) flows to from K_first (inf if beyond K_MAX), vectorised:
    bracket on the K grid, then bisection to ~1e-14 relative."""
    Kg = as_t(K_GRID)
    h = cb[:, None] + cw[:, None] * mean_sigma2(act, Kg)[None, :] - Kg[None, :]
    h1 = cb + cw * mean_sigma2(act, K_first) - K_first
    G = Kg.shape[0]
    above = Kg[None, :] > K_first[:, None]
    below = Kg[None, :] < K_first[:, None]
    # flowing up: first grid point above K_first with h ≤ 0; bracket [previous point or K_first, it]
    up_hit = above & (h <= 0)
    i_up = torch.argmax(up_hit.to(torch.int8), dim=1)
    has_up = up_hit.any(dim=1)
    # flowing down: last grid point below K_first with h ≥ 0
    down_hit = below & (h >= 0)
    i_down = G - 1 - torch.argmax(torch.flip(down_hit, dims=[1]).to(torch.int8), dim=1)
    has_down = down_hit.any(dim=1)
    lo = torch.where(
        h1 > 0,
        torch.maximum(Kg[torch.clamp(i_up - 1, min=0)], K_first),
        Kg[i_down],
    )
    hi = torch.where(
        h1 > 0, Kg[i_up], torch.minimum(Kg[torch.clamp(i_down + 1, max=G - 1)], K_first)
    )
    found = torch.where(h1 > 0, has_up, has_down) | (h1 == 0)
    lo = torch.where(h1 == 0, K_first, lo)
    hi = torch.where(h1 == 0, K_first, hi)
    exact_lo = found & (h1 != 0) & (torch.where(h1 > 0, Kg[i_up], Kg[i_down]) == 0)
    active = found & (h1 != 0) & ~exact_lo
    for _ in range(48):  # brackets start ≤ 6 % wide: 2^-48 · 0.06 < 1e-15
        if not active.any():
            break
        mid = (lo[active] + hi[active]) / 2
        hm = cb[active] + cw[active] * mean_sigma2(act, mid) - mid
        # h decreases through the root when flowing up (h > 0 below it), increases when down
        go_right = torch.where(h1[active] > 0, hm > 0, hm >= 0)
        lo[active] = torch.where(go_right, mid, lo[active])
        hi[active] = torch.where(go_right, hi[active], mid)
    K = torch.where(exact_lo, torch.zeros_like(lo), (lo + hi) / 2)
    return torch.where(found, K, torch.full_like(K, math.inf))
