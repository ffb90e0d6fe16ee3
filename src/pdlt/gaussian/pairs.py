"""⟨f(z_a) g(z_b)⟩_K for all N² input pairs (book §4.1), down a ladder of routes (as
neural-tangents does for its kernels):

1. **Closed forms** registered on the activation (arc-cosine family, erf, sin/cos).
2. **Mehler series** (:mod:`pdlt.gaussian.mehler`) with its rigorous Parseval truncation bound.
3. **2-D quadrature** for the pairs whose Mehler bound exceeds the tolerance (nearly parallel
   inputs with a kinked or very steep function): the kink-split rule of
   :mod:`pdlt.gaussian.rules`.

The diagonal is a 1-D expectation of f·g. All routes work in float64 torch tensors and accept
numpy arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from pdlt.activations import Activation
from pdlt.gaussian.mehler import hermite_coefficients, mehler_pairs, truncation_order
from pdlt.gaussian.rules import (
    DTYPE,
    Fn,
    Tensor,
    as_tensor,
    check_finite,
    expect,
    expect_split,
    nodes_per_piece,
    transition_breaks,
)

DEFAULT_TOL = 1e-12
DEFAULT_KMAX = 320
_MAX_2D_POINTS = 4_000_000


def correlation(K: Tensor) -> tuple[Tensor, Tensor]:
    """(standard deviations s (N,), correlations ρ (N, N)) of a kernel; ρ = 0 at a zero-variance
    input (the 0/0 of an input with z ≡ 0)."""
    s = torch.sqrt(torch.clamp(torch.diagonal(K), min=0.0))
    norm = s[:, None] * s[None, :]
    rho = torch.where(norm > 0, K / torch.where(norm > 0, norm, 1.0), torch.zeros_like(K))
    return s, torch.clamp(rho, -1.0, 1.0)


def finite(values: Tensor, what: str) -> Tensor:
    """``values`` if every entry is finite, else the FloatingPointError of
    :func:`~pdlt.gaussian.rules.check_finite`. One reduction decides it: a sum is finite only
    if every term is (an inf or NaN entry makes it inf or NaN), and a sum is ~15× cheaper than
    an elementwise test on the N² entries of a layer."""
    if math.isfinite(values.sum().item()):  # a float test: ~10 µs less than torch.isfinite
        return values
    return check_finite(values, what)


def _quadrature_2d(
    f: Fn, g: Fn, K: Tensor, ia: Tensor, ib: Tensor, kinks: Sequence[float], q: int
) -> Tensor:
    """⟨f(z_a) g(z_b)⟩ for the listed pairs by the kink-split rule over each pair's 2×2 block."""
    idx = torch.stack([ia, ib], dim=1)
    sub = K[idx[:, :, None], idx[:, None, :]]
    return expect_split([f, g], sub, kinks, q, max_points=_MAX_2D_POINTS)


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
    K = as_tensor(K)
    N = K.shape[0]
    s, rho = correlation(K)
    diag = expect(lambda z: f(z) * g(z), s * s, kinks=tuple(sorted(set(kinks_f + kinks_g))))
    s_max = float(s.max()) if N else 1.0
    q2 = min(nodes_per_piece(s_max, split=True), 192)
    # the 2-D rule is cut at the kinks and, for large variances, at the transition region
    kinks = transition_breaks(tuple(sorted(set(kinks_f + kinks_g))), s_max)
    symmetric = g is f
    # off-diagonal pairs to compute: the upper triangle when the matrix is symmetric
    if symmetric:
        ia, ib = torch.triu_indices(N, N, offset=1)
    else:
        ia, ib = torch.nonzero(~torch.eye(N, dtype=torch.bool), as_tuple=True)
    if method == "quadrature":
        vals = _quadrature_2d(f, g, K, ia, ib, kinks, q2)
    elif ia.numel() == 0:
        vals = torch.empty(0, dtype=DTYPE)  # a single input: only the diagonal
    else:
        cf, ef = hermite_coefficients(f, s * s, kmax, kinks=kinks_f)
        cg, eg = (cf, ef) if symmetric else hermite_coefficients(g, s * s, kmax, kinks=kinks_g)
        rho_p = rho[ia, ib]
        kcut = truncation_order(cf, ef, cg, eg, float(rho_p.abs().max()), tol)
        cf, cg = cf[:, : kcut + 1], cg[:, : kcut + 1]
        vals = mehler_pairs(rho_p, cf, cg, ia, ib)
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
                vals[bad] = _quadrature_2d(f, g, K, ia[bad], ib[bad], kinks, q2)
    out = torch.empty((N, N), dtype=DTYPE)
    out[ia, ib] = vals
    if symmetric:
        out[ib, ia] = vals
    out[range(N), range(N)] = diag
    return check_finite(out, "a pair expectation ⟨f(z_a) g(z_b)⟩")


def pair_expectation(
    act: Activation,
    K: Tensor | np.ndarray,
    orders: tuple[int, int] = (0, 0),
    *,
    method: str = "auto",
    tol: float = DEFAULT_TOL,
    shared: dict | None = None,
    checked: bool = True,
) -> Tensor:
    """⟨σ^{(i)}(z_a) σ^{(j)}(z_b)⟩_K for all pairs (a, b), by closed form where one exists.

    ``orders=(0, 0)`` is the kernel map's ⟨σσ⟩ (book eq. 4.1x); ``(1, 1)`` gives ⟨σ'σ'⟩, which
    enters χ_⊥ and the NTK. ``method="closed"`` demands the closed form, ``"quadrature"``
    and ``"mehler"`` skip it (used to test one route against the other). ``shared``: a dict
    kept for one kernel ``K`` in which the closed forms of one family share intermediates
    (θ, det(1 + K), …) across orders. ``checked=False`` leaves the closed form's finiteness
    check to the caller (the layer walk checks every field it derives, one reduction each).
    """
    K = as_tensor(K)
    form = act.closed_forms.get(tuple(orders))
    if method == "closed" and form is None:
        raise ValueError(
            f"activation {act.name!r} has no closed form for orders {orders}; "
            f"it has {sorted(act.closed_forms)}"
        )
    if form is not None and method in ("auto", "closed"):
        if shared is None or "variances" not in shared:
            d = torch.diagonal(K)
            rows_cols = (d[:, None], d[None, :])
            if shared is not None:
                shared["variances"] = rows_cols
        else:
            rows_cols = shared["variances"]
        out = form(*rows_cols, K, shared)
        return finite(out, "a closed-form expectation") if checked else out
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


# --------------------------------------------------------------------------------------------
# entrywise forms: a rectangle of pairs, or the diagonal, given the variances


def diagonal_expectation(
    act: Activation, d: Tensor, orders: tuple[int, int] = (0, 0), *, shared: dict | None = None
) -> Tensor:
    """⟨σ^{(i)}(z) σ^{(j)}(z)⟩ for z ~ N(0, d), elementwise over the variances d: the diagonal
    of :func:`pair_expectation` without the rest of the matrix (``shared`` as there)."""
    form = act.closed_forms.get(tuple(orders))
    if form is not None:
        return finite(form(d, d, d, shared), "a closed-form expectation")
    f, g = act.derivative(orders[0]), act.derivative(orders[1])
    return expect(lambda z: f(z) * g(z), d, kinks=act.kinks)


def cross_expectation(
    act: Activation,
    d_a: Tensor,
    d_b: Tensor,
    K_ab: Tensor,
    orders: tuple[int, int] = (0, 0),
    *,
    tol: float = DEFAULT_TOL,
    kmax: int = DEFAULT_KMAX,
    shared: dict | None = None,
) -> Tensor:
    """⟨σ^{(i)}(z_a) σ^{(j)}(z_b)⟩ for a rectangle of pairs (n_a, n_b): rows with variances
    ``d_a``, columns with variances ``d_b`` and cross-covariances ``K_ab``. A pair expectation
    needs only its 2×2 block, so this is :func:`pair_expectation` restricted to the block
    K_ab of a larger kernel — closed form, else the certified Mehler series with 2-D
    quadrature for the pairs it cannot certify — without forming the rest of the kernel
    (``shared`` as in :func:`pair_expectation`)."""
    form = act.closed_forms.get(tuple(orders))
    if form is not None:
        return finite(form(d_a[:, None], d_b[None, :], K_ab, shared), "a closed-form expectation")
    f, g = act.derivative(orders[0]), act.derivative(orders[1])
    s_a = torch.sqrt(torch.clamp(d_a, min=0.0))
    s_b = torch.sqrt(torch.clamp(d_b, min=0.0))
    norm = s_a[:, None] * s_b[None, :]
    rho = torch.where(norm > 0, K_ab / torch.where(norm > 0, norm, 1.0), 0.0).clamp_(-1.0, 1.0)
    n_a, n_b = K_ab.shape
    ia = torch.arange(n_a).repeat_interleave(n_b)
    ib = torch.arange(n_b).repeat(n_a)
    rho_p = rho.reshape(-1)
    cf, ef = hermite_coefficients(f, s_a * s_a, kmax, kinks=act.kinks)
    cg, eg = hermite_coefficients(g, s_b * s_b, kmax, kinks=act.kinks)
    kcut = truncation_order(cf, ef, cg, eg, float(rho_p.abs().max()) if rho_p.numel() else 0.0, tol)
    cf, cg = cf[:, : kcut + 1], cg[:, : kcut + 1]
    vals = mehler_pairs(rho_p, cf, cg, ia, ib)
    tail_f = torch.clamp(ef - (cf**2).sum(1), min=0.0)
    tail_g = torch.clamp(eg - (cg**2).sum(1), min=0.0)
    bound = rho_p.abs() ** (kcut + 1) * torch.sqrt(tail_f[ia] * tail_g[ib])
    bad = bound > tol * torch.clamp(torch.sqrt(ef[ia] * eg[ib]), min=1e-300)
    if bad.any():
        ja, jb = ia[bad], ib[bad]
        c = K_ab[ja, jb]
        sub = torch.stack(
            [torch.stack([d_a[ja], c], -1), torch.stack([c, d_b[jb]], -1)], dim=-2
        )  # (P, 2, 2)
        q2 = min(nodes_per_piece(float(torch.sqrt(torch.cat([d_a, d_b]).max()))), 192)
        vals[bad] = expect_split([f, g], sub, act.kinks, q2, max_points=_MAX_2D_POINTS)
    return check_finite(vals.reshape(n_a, n_b), "a pair expectation ⟨f(z_a) g(z_b)⟩")
