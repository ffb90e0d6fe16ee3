"""Gaussian expectations ⟨f(z_a) g(z_b)⟩_K over a kernel (book §1.1, §4.1).

The theory needs, for every pair of inputs (a, b), expectations of products of functions of two
jointly Gaussian preactivations with covariance ``[[K_aa, K_ab], [K_ab, K_bb]]``. pdlt computes
all N² of them at once, down a ladder of routes (as neural-tangents does for its kernels):

1. **Closed forms** registered on the activation (arc-cosine family, erf, sin/cos).
2. **Mehler series** (the Hermite expansion of the bivariate normal)::

       ⟨f(z_a) g(z_b)⟩ = Σ_k ρ_ab^k c_k(f; K_aa) c_k(g; K_bb),    c_k(f; K) = ⟨f(√K u) He_k(u)⟩/√k!

   with ρ_ab = K_ab/√(K_aa K_bb). The coefficients are one 1-D quadrature per *input*; the pair
   sum is a Horner recursion over N×N matrices, so the cost is O(N·Q·k + N²·k) instead of
   O(N²·Q²). By Parseval, Σ_k c_k² = ⟨f²⟩, so the truncation error after k_max terms is bounded
   rigorously by |ρ_ab|^{k_max+1} √(tail_f,a · tail_g,b), with tail = ⟨f²⟩ − Σ_{k≤k_max} c_k².
3. **2-D quadrature** for the pairs whose Mehler bound exceeds the tolerance (nearly parallel
   inputs with a kinked or very steep function): composite Gauss–Legendre on each smooth piece,
   the inner integral split where ``g``'s kink falls for each outer node.

1-D expectations use composite Gauss–Legendre on [−T, T] (T = 12 standard deviations: the
Gaussian tail beyond is < 1e-31) with the interval split at the kinks, so kinked functions
converge exponentially rather than like the ~1e-3 of plain Gauss–Hermite for ReLU.

All routes work in float64 torch tensors and accept numpy arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
from scipy.special import roots_legendre

from pdlt.activations import Activation

Tensor = torch.Tensor
Fn = Callable[[Tensor], Tensor]

_T = 12.0  # half-width of the integration window in standard deviations
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_DTYPE = torch.float64

DEFAULT_TOL = 1e-12
DEFAULT_KMAX = 320


@lru_cache(maxsize=32)
def _gauss_legendre(q: int) -> tuple[Tensor, Tensor]:
    # scipy's O(q) Newton/asymptotic rule: numpy's leggauss is an O(q³) eigensolve that took
    # 10–20 s for q ≈ 2000 on multithreaded BLAS, at no better accuracy.
    x, w = roots_legendre(q)
    return torch.as_tensor(x, dtype=_DTYPE), torch.as_tensor(w, dtype=_DTYPE)


def _as_tensor(a: Tensor | np.ndarray | float) -> Tensor:
    return torch.as_tensor(a, dtype=_DTYPE)


def _nodes_per_piece(scale_max: float, kmax: int = 0) -> int:
    """Gauss–Legendre nodes per piece.

    The integrand φ(u) f(s·u) is analytic in a strip whose width shrinks like 1/s for functions
    with complex singularities (tanh: poles at iπ/2), so the node count grows ∝ s; Hermite
    coefficients up to order k oscillate k/2 times across the window and need q ≳ k.
    """
    q = max(160, math.ceil(140 * scale_max), kmax + 96)
    return int(min(2400, -(-q // 32) * 32))  # multiples of 32, so cached rules get reused


def _segment_rule(breaks: Tensor, q: int) -> tuple[Tensor, Tensor]:
    """Composite Gauss–Legendre over the pieces of [−T, T] cut at ``breaks``.

    ``breaks``: (M, m) break points per row (any order, may lie outside the window).
    Returns nodes and weights of shape (M, (m+1)·q); the weights include the standard normal
    density, so Σ w f(u) ≈ E f(u) for u ~ N(0, 1).
    """
    x, w = _gauss_legendre(q)
    M = breaks.shape[0]
    inner = torch.sort(torch.clamp(breaks, -_T, _T), dim=1).values
    edges = torch.cat(
        [torch.full((M, 1), -_T, dtype=_DTYPE), inner, torch.full((M, 1), _T, dtype=_DTYPE)], dim=1
    )
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]  # (M, pieces, 1)
    half = (hi - lo) / 2
    nodes = lo + half * (x + 1)
    weights = half * w * torch.exp(-0.5 * nodes * nodes) * _INV_SQRT_2PI
    return nodes.reshape(M, -1), weights.reshape(M, -1)


def _unit_breaks(kinks: Sequence[float], scale: Tensor) -> Tensor:
    """Kinks of f(s·u) in the standardized variable u: k/s (pushed out of the window if s = 0)."""
    if not kinks:
        return torch.empty((scale.shape[0], 0), dtype=_DTYPE)
    k = torch.as_tensor(list(kinks), dtype=_DTYPE)
    safe = torch.where(scale > 0, scale, 1.0)[:, None]
    return torch.where(scale[:, None] > 0, k / safe, torch.full_like(k / safe, 2 * _T))


def _check_finite(values: Tensor, what: str) -> Tensor:
    if not torch.isfinite(values).all():
        raise FloatingPointError(
            f"{what} is not finite; the function overflows under the Gaussian "
            "(try smaller C_W or fewer layers, or an activation that grows at most polynomially)"
        )
    return values


def expect(f: Fn, var: Tensor | np.ndarray | float, *, kinks: Sequence[float] = ()) -> Tensor:
    """⟨f(z)⟩ for z ~ N(0, var), elementwise over a 1-D tensor of variances (book eq. 1.45).

    ``kinks`` lists points in z where f is not smooth; the quadrature splits there. Accuracy:
    ≲1e-12 relative for smooth f and for piecewise-smooth f with its kinks given.
    """
    var = _as_tensor(var)
    shape = var.shape
    v = torch.clamp(var.reshape(-1), min=0.0)
    s = torch.sqrt(v)
    q = _nodes_per_piece(float(s.max()) if s.numel() else 1.0)
    u, w = _segment_rule(_unit_breaks(kinks, s), q)
    vals = (f(s[:, None] * u) * w).sum(dim=1)
    return _check_finite(vals, "a Gaussian expectation").reshape(shape)


def hermite_coefficients(
    f: Fn, var: Tensor, kmax: int, *, kinks: Sequence[float] = ()
) -> tuple[Tensor, Tensor]:
    """Normalized Hermite coefficients c_k = ⟨f(√var·u) He_k(u)⟩/√k!, k = 0..kmax.

    Returns ``(c, second_moment)``: c of shape (N, kmax+1) and ⟨f²⟩ of shape (N,), so that
    ``second_moment − (c**2).sum(1)`` is the Parseval tail of the truncated series.
    """
    s = torch.sqrt(torch.clamp(_as_tensor(var), min=0.0))
    q = _nodes_per_piece(float(s.max()) if s.numel() else 1.0, kmax)
    breaks = _unit_breaks(kinks, s)
    u, w = _segment_rule(breaks, q)
    values = f(s[:, None] * u)
    second = _check_finite((values**2 * w).sum(dim=1), "⟨f²⟩")
    fw = values * w
    if bool((breaks == breaks[:1]).all()):
        # One rule for every input (no kinks, or kinks only at 0): c = (f·w) @ H, a matmul
        # with a table that depends only on the rule, so it is cached across calls.
        coeffs = fw @ _shared_hermite_table(q, kmax, tuple(breaks[0].tolist()))
    else:
        coeffs = torch.empty((s.shape[0], kmax + 1), dtype=_DTYPE)
        h_prev, h = torch.zeros_like(u), torch.ones_like(u)
        for k in range(kmax + 1):
            coeffs[:, k] = (fw * h).sum(dim=1)
            h_prev, h = h, (u * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return _check_finite(coeffs, "Hermite coefficients"), second


@lru_cache(maxsize=16)
def _shared_hermite_table(q: int, kmax: int, breaks: tuple[float, ...]) -> Tensor:
    u, _ = _segment_rule(torch.tensor([breaks], dtype=_DTYPE).reshape(1, len(breaks)), q)
    return _hermite_table(u[0], kmax)


def _hermite_table(u: Tensor, kmax: int) -> Tensor:
    """(Q, kmax+1) orthonormal Hermite polynomials He_k(u)/√k! at the nodes u.

    h_{k+1} = (u h_k − √k h_{k−1}) / √(k+1), stable for the |u| ≤ 12 of the window.
    """
    table = torch.empty((u.shape[0], kmax + 1), dtype=_DTYPE)
    h_prev, h = torch.zeros_like(u), torch.ones_like(u)
    for k in range(kmax + 1):
        table[:, k] = h
        h_prev, h = h, (u * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return table


def _correlation(K: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sqrt(torch.clamp(torch.diagonal(K), min=0.0))
    norm = s[:, None] * s[None, :]
    rho = torch.where(norm > 0, K / torch.where(norm > 0, norm, 1.0), torch.zeros_like(K))
    return s, torch.clamp(rho, -1.0, 1.0)


def _mehler_sum(rho: Tensor, cf: Tensor, cg: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
    """Σ_k ρ_p^k c_k(a_p) d_k(b_p) for the pairs p = (a_p, b_p), by Horner's rule.

    Chunked over pairs so the gathered (k, pairs) coefficient blocks stay near 64 MB.
    """
    out = torch.empty(ia.shape[0], dtype=_DTYPE)
    K = cf.shape[1]
    chunk = max(1024, 4_000_000 // max(K, 1))
    cfT, cgT = cf.T.contiguous(), cg.T.contiguous()
    for lo in range(0, ia.shape[0], chunk):
        a, b, r = ia[lo : lo + chunk], ib[lo : lo + chunk], rho[lo : lo + chunk]
        A, B = cfT[:, a], cgT[:, b]  # (K, C)
        acc = A[-1] * B[-1]
        for k in range(K - 2, -1, -1):
            acc.mul_(r).addcmul_(A[k], B[k])
        out[lo : lo + chunk] = acc
    return out


def _quadrature_2d(
    f: Fn,
    g: Fn,
    s: Tensor,
    rho: Tensor,
    ia: Tensor,
    ib: Tensor,
    kinks_f: Sequence[float],
    kinks_g: Sequence[float],
    q: int,
) -> Tensor:
    """⟨f(z_a) g(z_b)⟩ for the listed pairs by nested composite Gauss–Legendre.

    z_a = s_a u, z_b = s_b (ρ u + r v) with r = √(1 − ρ²), u, v iid N(0, 1). The outer rule is cut
    at f's kinks; for each outer node the inner rule is cut where z_b crosses g's kinks.
    """
    out = torch.empty(ia.shape[0], dtype=_DTYPE)
    n_pieces = (len(kinks_f) + 2 * len(kinks_g) + 1) * (len(kinks_g) + 1)
    chunk = max(1, int(4_000_000 // (n_pieces * q * q)))
    kg = torch.as_tensor(list(kinks_g), dtype=_DTYPE)
    for start in range(0, ia.shape[0], chunk):
        a, b = ia[start : start + chunk], ib[start : start + chunk]
        sa, sb, r_ab = s[a], s[b], rho[a, b]
        r = torch.sqrt(torch.clamp(1 - r_ab * r_ab, min=0.0))
        outer = _unit_breaks(kinks_f, sa)
        if len(kinks_g):
            # For nearly parallel inputs g's kink sweeps the whole inner window while u moves
            # by only ~r·T around k/(s_b ρ): cut the outer rule there too, or that thin
            # feature falls between the outer nodes.
            kb = _unit_breaks(kinks_g, sb)  # (P, m) in units of z_b/s_b
            safe_rho = torch.where(r_ab != 0, r_ab, 1.0)[:, None]
            shadow = torch.cat(
                [(kb - r[:, None] * _T) / safe_rho, (kb + r[:, None] * _T) / safe_rho], 1
            )
            shadow = torch.where((r_ab != 0)[:, None], shadow, 2 * _T)
            outer = torch.cat([outer, shadow], dim=1)
        u, wu = _segment_rule(outer, q)  # (P, Qu)
        P, Qu = u.shape
        if len(kinks_g):
            # v where s_b(ρu + r v) = kink; outside the window when r = 0 (then v is irrelevant).
            safe_r = torch.where(r > 0, r, 1.0)[:, None, None]
            sb_safe = torch.where(sb > 0, sb, 1.0)[:, None, None]
            vb = (kg / sb_safe - r_ab[:, None, None] * u[:, :, None]) / safe_r
            vb = torch.where((r > 0)[:, None, None] & (sb > 0)[:, None, None], vb, 2 * _T)
        else:
            vb = torch.empty((P, Qu, 0), dtype=_DTYPE)
        v, wv = _segment_rule(vb.reshape(P * Qu, -1), q)
        v, wv = v.reshape(P, Qu, -1), wv.reshape(P, Qu, -1)
        za = sa[:, None] * u
        zb = sb[:, None, None] * (r_ab[:, None, None] * u[:, :, None] + r[:, None, None] * v)
        inner = (g(zb) * wv).sum(dim=2)
        out[start : start + chunk] = (f(za) * wu * inner).sum(dim=1)
    return out


def expect_pairs(
    f: Fn,
    g: Fn | None,
    K: Tensor | np.ndarray,
    *,
    kinks_f: Sequence[float] = (),
    kinks_g: Sequence[float] | None = None,
    method: str = "auto",
    tol: float = DEFAULT_TOL,
    kmax: int = DEFAULT_KMAX,
) -> Tensor:
    """The N×N matrix ⟨f(z_a) g(z_b)⟩_K for all input pairs, z ~ N(0, K) (book §4.1).

    Parameters
    ----------
    f, g:
        Elementwise torch functions (``g=None`` means ``g = f``).
    K:
        (N, N) symmetric positive semi-definite kernel.
    kinks_f, kinks_g:
        Points where f (g) is not smooth.
    method:
        ``"auto"`` (Mehler series, 2-D quadrature for the pairs it cannot certify),
        ``"mehler"`` (series only; warns if its error bound exceeds ``tol``) or
        ``"quadrature"`` (2-D quadrature for every off-diagonal pair).
    tol:
        Target absolute error relative to √(⟨f²⟩_a ⟨g²⟩_b).

    The diagonal is a 1-D expectation of f·g and exact to quadrature accuracy.
    """
    if method not in ("auto", "mehler", "quadrature"):
        raise ValueError(f"method must be 'auto', 'mehler' or 'quadrature', got {method!r}")
    if g is None:
        g, kinks_g = f, kinks_f
    kinks_g = tuple(kinks_f if kinks_g is None else kinks_g)
    kinks_f = tuple(kinks_f)
    K = _as_tensor(K)
    N = K.shape[0]
    s, rho = _correlation(K)
    diag = expect(lambda z: f(z) * g(z), s * s, kinks=tuple(sorted(set(kinks_f + kinks_g))))
    q2 = _nodes_per_piece(float(s.max()) if N else 1.0) if method != "mehler" else 0
    q2 = min(q2, 192)
    symmetric = g is f
    # off-diagonal pairs to compute: the upper triangle when the matrix is symmetric
    if symmetric:
        ia, ib = torch.triu_indices(N, N, offset=1)
    else:
        ia, ib = torch.nonzero(~torch.eye(N, dtype=torch.bool), as_tuple=True)
    if method == "quadrature":
        vals = _quadrature_2d(f, g, s, rho, ia, ib, kinks_f, kinks_g, q2)
    elif ia.numel() == 0:
        vals = torch.empty(0, dtype=_DTYPE)  # a single input: only the diagonal
    else:
        cf, ef = hermite_coefficients(f, s * s, kmax, kinks=kinks_f)
        cg, eg = (cf, ef) if symmetric else hermite_coefficients(g, s * s, kmax, kinks=kinks_g)
        rho_p = rho[ia, ib]
        kcut = _truncation_order(cf, ef, cg, eg, float(rho_p.abs().max()), tol)
        cf, cg = cf[:, : kcut + 1], cg[:, : kcut + 1]
        vals = _mehler_sum(rho_p, cf, cg, ia, ib)
        tail_f = torch.clamp(ef - (cf**2).sum(1), min=0.0)
        tail_g = torch.clamp(eg - (cg**2).sum(1), min=0.0)
        bound = rho_p.abs() ** (kcut + 1) * torch.sqrt(tail_f[ia] * tail_g[ib])
        scale = torch.clamp(torch.sqrt(ef[ia] * eg[ib]), min=1e-300)
        bad = bound > tol * scale
        if bad.any():
            if method == "mehler":
                warnings.warn(
                    f"Mehler series truncated at order {kcut}: relative error bound "
                    f"{float((bound / scale).max()):.1e} exceeds tol={tol:g} for "
                    f"{int(bad.sum())} of {ia.numel()} pairs; use method='auto' to fall back to "
                    "2-D quadrature for them",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                vals[bad] = _quadrature_2d(f, g, s, rho, ia[bad], ib[bad], kinks_f, kinks_g, q2)
    out = torch.empty((N, N), dtype=_DTYPE)
    out[ia, ib] = vals
    if symmetric:
        out[ib, ia] = vals
    out[range(N), range(N)] = diag
    return _check_finite(out, "a pair expectation ⟨f(z_a) g(z_b)⟩")


def _truncation_order(
    cf: Tensor, ef: Tensor, cg: Tensor, eg: Tensor, rho_max: float, tol: float
) -> int:
    """Smallest k_max whose error bound ρ_max^{k+1} √(tail_f tail_g / ⟨f²⟩⟨g²⟩) is below tol for
    every pair (with the worst relative tails over inputs); k_max of the table if none is."""
    kmax = cf.shape[1] - 1
    rf = ((ef[:, None] - torch.cumsum(cf**2, dim=1)) / torch.clamp(ef, min=1e-300)[:, None]).amax(0)
    rg = ((eg[:, None] - torch.cumsum(cg**2, dim=1)) / torch.clamp(eg, min=1e-300)[:, None]).amax(0)
    k = torch.arange(kmax + 1, dtype=_DTYPE)
    bound = rho_max ** (k + 1) * torch.sqrt(torch.clamp(rf, min=0.0) * torch.clamp(rg, min=0.0))
    ok = torch.nonzero(bound <= tol)
    return int(ok[0]) if ok.numel() else kmax


def pair_expectation(
    act: Activation,
    K: Tensor | np.ndarray,
    orders: tuple[int, int] = (0, 0),
    *,
    method: str = "auto",
    tol: float = DEFAULT_TOL,
) -> Tensor:
    """⟨σ^{(i)}(z_a) σ^{(j)}(z_b)⟩_K for all pairs (a, b), by closed form where one exists.

    ``orders=(0, 0)`` is the kernel map's ⟨σσ⟩ (book eq. 4.1x); ``(1, 1)`` gives ⟨σ'σ'⟩, which
    enters χ_⊥ and the NTK. ``method="closed"`` demands the closed form, ``"quadrature"``
    and ``"mehler"`` skip it (used to test one route against the other).
    """
    K = _as_tensor(K)
    form = act.closed_forms.get(tuple(orders))
    if method == "closed" and form is None:
        raise ValueError(
            f"activation {act.name!r} has no closed form for orders {orders}; "
            f"it has {sorted(act.closed_forms)}"
        )
    if form is not None and method in ("auto", "closed"):
        d = torch.diagonal(K)
        return _check_finite(form(d[:, None], d[None, :], K), "a closed-form expectation")
    i, j = orders
    return expect_pairs(
        act.derivative(i),
        act.derivative(j) if i != j else None,
        K,
        kinks_f=act.kinks,
        kinks_g=act.kinks,
        method="auto" if method == "closed" else method,
        tol=tol,
    )
