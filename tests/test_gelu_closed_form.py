"""GELU's closed-form pair expectations ⟨σσ⟩ and ⟨σ'σ'⟩ against independent references.

The reference integrates out z_b given z_a analytically (E_v[gelu(m + s v)] is elementary) and
does the remaining 1-D integral with mpmath at 20 digits, so it is independent of pdlt's
quadrature; pdlt's own 2-D quadrature is checked too where it is accurate (moderate kernels).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch

import pdlt
from pdlt.gaussian.pairs import pair_expectation

GELU = pdlt.activation("gelu")


def _reference(a: float, b: float, c: float) -> tuple[float, float]:
    """(⟨gelu_a gelu_b⟩, ⟨gelu'_a gelu'_b⟩) for K = [[a, c], [c, b]], a > 0, at 20 digits."""
    with mp.workdps(20):
        a, b, c = mp.mpf(a), mp.mpf(b), mp.mpf(c)
        sa = mp.sqrt(a)
        slope, var = c / sa, max(b - c * c / a, mp.mpf(0))  # z_b = slope·u + √var·v
        t = mp.sqrt(1 + var)

        def inner(m):  # E_v[(m + √var v) Φ(m + √var v)]
            return m * mp.ncdf(m / t) + var * mp.npdf(m / t) / t

        def inner_d(m):  # E_v[Φ(w) + w φ(w)], w = m + √var v
            return mp.ncdf(m / t) + m * mp.npdf(m / t) / t**3

        pts = [-mp.inf] + [k / sa for k in (-8, -3, -1, 0, 1, 3, 8)] + [mp.inf]
        s = mp.quad(lambda u: mp.npdf(u) * sa * u * mp.ncdf(sa * u) * inner(slope * u), pts)
        d = mp.quad(
            lambda u: (
                mp.npdf(u) * (mp.ncdf(sa * u) + sa * u * mp.npdf(sa * u)) * inner_d(slope * u)
            ),
            pts,
        )
        return float(s), float(d)


def _kernels() -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(7)
    out = []
    for scale in (1e-3, 0.3, 1.0, 10.0, 400.0):  # small to large variance
        for _ in range(2):  # random
            a, b = scale * rng.uniform(0.2, 2.0, size=2)
            out.append((a, b, rng.uniform(-1, 1) * math.sqrt(a * b)))
        for rho in (1 - 1e-13, -1 + 1e-10, -1.0):  # (anti-)parallel
            out.append((scale, 2.5 * scale, rho * math.sqrt(2.5) * scale))
    return out


_FAST = {0, 4, 12, 16, 18, 22, 24}  # random, parallel, anti-parallel, tiny and large variance


@pytest.mark.parametrize(
    "a,b,c",
    [
        k if i in _FAST else pytest.param(*k, marks=pytest.mark.slow)
        for i, k in enumerate(_kernels())
    ],
)
def test_gelu_closed_forms_match_mpmath(a: float, b: float, c: float) -> None:
    K = torch.tensor([[a, c], [c, b]], dtype=torch.float64)
    ss = pair_expectation(GELU, K, (0, 0), method="closed")
    dd = pair_expectation(GELU, K, (1, 1), method="closed")
    ref_ss, ref_dd = _reference(a, b, c)
    # pdlt's convention: error relative to √(⟨σ²⟩_a ⟨σ²⟩_b)
    scale_ss = math.sqrt(float(ss[0, 0] * ss[1, 1]))
    scale_dd = math.sqrt(float(dd[0, 0] * dd[1, 1]))
    assert abs(float(ss[0, 1]) - ref_ss) <= 1e-10 * scale_ss
    assert abs(float(dd[0, 1]) - ref_dd) <= 1e-10 * scale_dd
    # diagonal: 1-D expectations
    for i, v in enumerate((a, b)):
        ref = _reference(v, v, v)
        assert abs(float(ss[i, i]) - ref[0]) <= 1e-10 * abs(ref[0])
        assert abs(float(dd[i, i]) - ref[1]) <= 1e-10 * abs(ref[1])


def test_gelu_closed_forms_match_quadrature_on_random_kernels() -> None:
    """Many random (N = 12) kernels of moderate variance: closed form vs 2-D quadrature."""
    gen = torch.Generator().manual_seed(3)
    for scale in (0.05, 1.0, 6.0):
        A = torch.randn(12, 5, generator=gen, dtype=torch.float64)
        K = scale * (A @ A.T) / 5
        for orders in ((0, 0), (1, 1)):
            closed = pair_expectation(GELU, K, orders, method="closed")
            quad = pair_expectation(GELU, K, orders, method="quadrature")
            d = torch.sqrt(torch.outer(torch.diagonal(quad), torch.diagonal(quad)))
            assert float(((closed - quad).abs() / d).max()) < 1e-10


def test_gelu_zero_variance_input() -> None:
    """z_a ≡ 0: gelu(0) = 0 and gelu'(0) = ½, so ⟨σσ⟩ = 0 and ⟨σ'σ'⟩ = ½⟨gelu'(z_b)⟩ = ¼."""
    K = torch.tensor([[0.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    ss = pair_expectation(GELU, K, (0, 0), method="closed")
    dd = pair_expectation(GELU, K, (1, 1), method="closed")
    assert float(ss[0, 1]) == 0.0 and float(ss[0, 0]) == 0.0
    assert abs(float(dd[0, 1]) - 0.25) < 1e-15 and abs(float(dd[0, 0]) - 0.25) < 1e-15
