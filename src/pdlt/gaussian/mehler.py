"""The Mehler (Hermite) series of the bivariate normal (book §4.1 route for two inputs).

    ⟨f(z_a) g(z_b)⟩ = Σ_k ρ_ab^k c_k(f; K_aa) c_k(g; K_bb),    c_k(f; K) = ⟨f(√K u) He_k(u)⟩/√k!

with ρ_ab = K_ab/√(K_aa K_bb). The coefficients are one 1-D quadrature per *input*; the pair sum
is a Horner recursion, so N inputs cost O(N·Q·k + N²·k) instead of O(N²·Q²). By Parseval,
Σ_k c_k² = ⟨f²⟩, so the truncation error after k_max terms is bounded rigorously by
|ρ|^{k_max+1} √(tail_f · tail_g), tail = ⟨f²⟩ − Σ_{k≤k_max} c_k².
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import torch

from pdlt.gaussian.rules import (
    DTYPE,
    Fn,
    Tensor,
    as_tensor,
    check_finite,
    nodes_per_piece,
    segment_rule,
    transition_breaks,
    unit_breaks,
)


def hermite_polynomials(u: Tensor, kmax: int) -> Iterator[Tensor]:
    """He_k(u)/√k! for k = 0…kmax, by the one recurrence h_{k+1} = (u h_k − √k h_{k−1})/√(k+1)
    (stable for the |u| ≤ 12 of the quadrature window)."""
    h_prev, h = torch.zeros_like(u), torch.ones_like(u)
    for k in range(kmax + 1):
        yield h
        h_prev, h = h, (u * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)


@lru_cache(maxsize=16)
def _shared_table(q: int, kmax: int, breaks: tuple[float, ...]) -> Tensor:
    u, _ = segment_rule(torch.tensor([breaks], dtype=DTYPE).reshape(1, len(breaks)), q)
    return torch.stack(list(hermite_polynomials(u[0], kmax)), dim=1)  # (Q, kmax+1)


def hermite_coefficients(
    f: Fn, var: Tensor, kmax: int, *, kinks: Sequence[float] = ()
) -> tuple[Tensor, Tensor]:
    """Normalized Hermite coefficients c_k = ⟨f(√var·u) He_k(u)⟩/√k!, k = 0..kmax.

    Returns ``(c, second_moment)``: c of shape (N, kmax+1) and ⟨f²⟩ of shape (N,), so that
    ``second_moment − (c**2).sum(1)`` is the Parseval tail of the truncated series.
    """
    s = torch.sqrt(torch.clamp(as_tensor(var), min=0.0))
    s_max = float(s.max()) if s.numel() else 1.0
    q = nodes_per_piece(s_max, kmax, split=True)
    breaks = unit_breaks(transition_breaks(kinks, s_max), s)
    u, w = segment_rule(breaks, q)
    values = f(s[:, None] * u)
    second = check_finite((values**2 * w).sum(dim=1), "⟨f²⟩")
    fw = values * w
    if bool((breaks == breaks[:1]).all()):
        # One rule for every input (no kinks, or kinks only at 0): c = (f·w) @ H, a matmul
        # with a table that depends only on the rule, so it is cached across calls.
        coeffs = fw @ _shared_table(q, kmax, tuple(breaks[0].tolist()))
    else:
        coeffs = torch.stack([(fw * h).sum(dim=1) for h in hermite_polynomials(u, kmax)], dim=1)
    return check_finite(coeffs, "Hermite coefficients"), second


def horner(
    a: Tensor, x: Tensor, b: Tensor | None = None, *, derivative: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Σ_k a_k x^k — or Σ_k a_k b_k x^k when ``b`` is given, without forming the products —
    (and its x-derivative), with the series index on the *first* axis of ``a`` (and ``b``),
    broadcast against x. In place: the kernel's hot path for σ without a closed form."""

    def coeff(k: int) -> Tensor:
        return a[k] if b is None else a[k] * b[k]

    p = coeff(-1) * torch.ones_like(x)
    dp = torch.zeros_like(p)
    for k in range(a.shape[0] - 2, -1, -1):
        if derivative:
            dp.mul_(x).add_(p)
        p.mul_(x)
        if b is None:
            p.add_(a[k])
        else:
            p.addcmul_(a[k], b[k])
    return (p, dp) if derivative else p


def mehler_pairs(rho: Tensor, cf: Tensor, cg: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
    """Σ_k ρ_p^k c_k(a_p) d_k(b_p) for the pairs p = (a_p, b_p), by Horner's rule.

    Chunked over pairs so the gathered (k, pairs) coefficient blocks stay near 64 MB.
    """
    out = torch.empty(ia.shape[0], dtype=DTYPE)
    K = cf.shape[1]
    chunk = max(1024, 4_000_000 // max(K, 1))
    cfT, cgT = cf.T.contiguous(), cg.T.contiguous()
    for lo in range(0, ia.shape[0], chunk):
        sl = slice(lo, lo + chunk)
        out[sl] = horner(cfT[:, ia[sl]], rho[sl], cgT[:, ib[sl]])
    return out


def truncation_order(
    cf: Tensor, ef: Tensor, cg: Tensor, eg: Tensor, rho_max: float, tol: float
) -> int:
    """Smallest k_max whose error bound ρ_max^{k+1} √(tail_f tail_g / ⟨f²⟩⟨g²⟩) is below tol for
    every pair (with the worst relative tails over inputs); k_max of the table if none is."""
    kmax = cf.shape[1] - 1
    rf = ((ef[:, None] - torch.cumsum(cf**2, dim=1)) / torch.clamp(ef, min=1e-300)[:, None]).amax(0)
    rg = ((eg[:, None] - torch.cumsum(cg**2, dim=1)) / torch.clamp(eg, min=1e-300)[:, None]).amax(0)
    k = torch.arange(kmax + 1, dtype=DTYPE)
    bound = rho_max ** (k + 1) * torch.sqrt(torch.clamp(rf, min=0.0) * torch.clamp(rg, min=0.0))
    ok = torch.nonzero(bound <= tol)
    return int(ok[0]) if ok.numel() else kmax
