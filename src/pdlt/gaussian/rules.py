"""Quadrature rules for Gaussian expectations: the only place nodes and weights are made.

Every rule integrates against a Gaussian, z ~ N(0, K), on the window |u| ≤ T = 12 standard
deviations (the mass beyond is < 1e-31), and every rule is *split at the kinks* of the integrand:
a piecewise-smooth function integrated piece by piece by Gauss–Legendre converges exponentially,
where plain Gauss–Hermite stalls near 1e-3 for ReLU.

* :func:`segment_rule` — composite Gauss–Legendre for u ~ N(0, 1), cut at given break points.
* :func:`expect` — ⟨f(z)⟩ for a vector of variances (book eq. 1.45), rules sized per band of
  variance so that a large variance does not inflate the rule of a small one.
* :class:`SplitRule` — the kink-split rule in d ≤ 4 Cholesky coordinates z = L u: each
  coordinate's integral is cut where z_k crosses a kink *given the outer coordinates*
  (``z_k = s_k(u_<k) + L_kk u_k``), so every piece is smooth. For two inputs the outer rule is
  also cut at the kink's *shadow* (where the inner cut leaves the window), which nearly parallel
  inputs need. The same rule serves the 2-D pair quadrature, the 3-/4-input products of kinked
  functions, and the Stein projections of the NTK fluctuations (:meth:`SplitRule.projection`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.special import roots_legendre

Tensor = torch.Tensor
Fn = Callable[[Tensor], Tensor]

DTYPE = torch.float64
WINDOW = 12.0  # half-width of the integration window in standard deviations
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MAX_Q = 2400
# Large variances: an activation changes shape only for |z| ≲ a few units (tanh, sigmoid,
# softplus, swish, gelu, elu all reach their asymptotes exponentially fast), which is a sliver
# 1/s wide in u = z/s. Above SPLIT_SCALE the rules cut the window at these geometrically spaced
# points z = ±c (graded pieces resolve the exponential approach to the asymptote), so every
# piece is smooth on its own length and the node count per piece stops growing with s.
SPLIT_SCALE = 4.0
TRANSITIONS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0)


# --------------------------------------------------------------------------------------------
# the memory cap: one number every cubature route sizes its chunks by

DEFAULT_MAX_MEMORY = 2 * 2**30  # bytes
BYTES_PER_NODE = 8 * 12  # float64 values held per node at once (coordinates, weights, values)
_MAX_MEMORY: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "pdlt_max_memory", default=None
)


def max_memory() -> int:
    """The memory cap in bytes for the Gaussian engine's work arrays: the innermost
    :func:`memory_limit`, else the environment variable ``PDLT_MAX_MEMORY`` (bytes, or with a
    K/M/G suffix: ``"8G"``), else 2 GiB."""
    v = _MAX_MEMORY.get()
    if v is not None:
        return v
    env = os.environ.get("PDLT_MAX_MEMORY", "").strip()
    if not env:
        return DEFAULT_MAX_MEMORY
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(env[-1].upper(), 1)
    try:
        value = float(env[:-1] if scale > 1 else env) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 2**20:
        raise ValueError(
            f"PDLT_MAX_MEMORY must be a number of bytes ≥ 1M (e.g. 4000000000 or 4G), got {env!r}"
        )
    return int(value)


@contextlib.contextmanager
def memory_limit(max_bytes: int | None) -> Iterator[None]:
    """Within the block, cap the engine's work arrays at ``max_bytes`` (None: leave as is)."""
    token = _MAX_MEMORY.set(max_bytes) if max_bytes is not None else None
    try:
        yield
    finally:
        if token is not None:
            _MAX_MEMORY.reset(token)


def node_budget(nodes_per_item: int, what: str) -> int:
    """How many items (tuples, pairs) of ``nodes_per_item`` quadrature nodes each fit under the
    memory cap at once (≥ 1); a ValueError naming the cap and how to raise it when one item
    alone does not fit."""
    cap = max_memory()
    need = nodes_per_item * BYTES_PER_NODE
    if need > cap:
        raise ValueError(
            f"{what} needs about {need / 2**20:,.0f} MiB for one integral "
            f"({nodes_per_item:,} quadrature nodes), above the memory cap of "
            f"{cap / 2**20:,.0f} MiB. Raise the cap with max_memory=<bytes> (theory entries) or "
            "the environment variable PDLT_MAX_MEMORY (e.g. PDLT_MAX_MEMORY=8G), or use smaller "
            "variances (C_W, |x|²/n_0) or fewer inputs."
        )
    return max(1, cap // need)


@lru_cache(maxsize=64)
def gauss_legendre(q: int) -> tuple[Tensor, Tensor]:
    """The q-node Gauss–Legendre rule on [−1, 1] (cached).

    scipy's O(q) Newton/asymptotic rule: numpy's ``leggauss`` is an O(q³) eigensolve that took
    10–20 s for q ≈ 2000 on multithreaded BLAS, at no better accuracy.
    """
    x, w = roots_legendre(q)
    return torch.as_tensor(x, dtype=DTYPE), torch.as_tensor(w, dtype=DTYPE)


def as_tensor(a: Tensor | np.ndarray | float) -> Tensor:
    return torch.as_tensor(a, dtype=DTYPE)


def nodes_per_piece(scale_max: float, kmax: int = 0, *, split: bool = False) -> int:
    """Gauss–Legendre nodes per piece for a standard deviation up to ``scale_max``.

    The integrand φ(u) f(s·u) is analytic in a strip whose width shrinks like 1/s for functions
    with complex singularities (tanh: poles at iπ/2), so the node count grows ∝ s; Hermite
    coefficients up to order k oscillate k/2 times across the window and need q ≳ k. With
    ``split`` the rule is also cut at :func:`transition_breaks`, and the count stops growing at
    ``SPLIT_SCALE``.
    """
    if split:
        scale_max = min(scale_max, SPLIT_SCALE)
    q = max(160, math.ceil(140 * scale_max), kmax + 96)
    return int(min(_MAX_Q, -(-q // 32) * 32))  # multiples of 32, so cached rules get reused


def segment_rule(breaks: Tensor, q: int, window: float = WINDOW) -> tuple[Tensor, Tensor]:
    """Composite Gauss–Legendre over the pieces of [−T, T] (T = ``window``) cut at ``breaks``.

    ``breaks``: (..., m) break points per row (any order, may lie outside the window).
    Returns nodes and weights of shape (..., (m+1)·q); the weights include the standard normal
    density, so Σ w f(u) ≈ E f(u) for u ~ N(0, 1).
    """
    x, w = gauss_legendre(q)
    inner = torch.sort(torch.clamp(breaks, -window, window), dim=-1).values
    edge = torch.full((*inner.shape[:-1], 1), window, dtype=DTYPE)
    edges = torch.cat([-edge, inner, edge], dim=-1)
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]  # (..., pieces, 1)
    half = (hi - lo) / 2
    nodes = lo + half * (x + 1)
    weights = half * w * torch.exp(-0.5 * nodes * nodes) * _INV_SQRT_2PI
    return nodes.flatten(-2), weights.flatten(-2)


def transition_breaks(kinks: Sequence[float], scale_max: float) -> tuple[float, ...]:
    """The break points (in z) of a rule for standard deviations up to ``scale_max``: the kinks,
    and above ``SPLIT_SCALE`` also the transition points ±c of :data:`TRANSITIONS` that lie
    inside the window (|c| < s·T). Rules cut there need only :func:`nodes_per_piece` with
    ``split=True`` nodes per piece at any variance (accuracy ≲1e-12 up to K = 10⁶, see
    tests/test_gaussian_large_variance.py)."""
    if not scale_max > SPLIT_SCALE:
        return tuple(kinks)
    extra = {sign * c for c in TRANSITIONS if c < scale_max * WINDOW for sign in (-1.0, 1.0)}
    return tuple(sorted(set(kinks) | extra))


def unit_breaks(kinks: Sequence[float], scale: Tensor) -> Tensor:
    """Kinks of f(s·u) in the standardized variable u: k/s (pushed out of the window if s = 0)."""
    if not kinks:
        return torch.empty((scale.shape[0], 0), dtype=DTYPE)
    k = torch.as_tensor(list(kinks), dtype=DTYPE)
    safe = torch.where(scale > 0, scale, 1.0)[:, None]
    return torch.where(scale[:, None] > 0, k / safe, torch.full_like(k / safe, 2 * WINDOW))


def check_finite(values: Tensor, what: str) -> Tensor:
    if not torch.isfinite(values).all():
        raise FloatingPointError(
            f"{what} is not finite; the function overflows under the Gaussian "
            "(try smaller C_W or fewer layers, or an activation that grows at most polynomially)"
        )
    return values


def _level(s: float) -> int:
    return max(0, math.ceil(math.log2(max(140 * s, 160) / 160)))


def _bands(s: Tensor, kmax: int = 0) -> list[tuple[int, Tensor | slice]]:
    """Group standard deviations by the rule they need: (q, indices) per distinct node count,
    node counts rounded up to 160·2^j so that only a handful of rules is ever built."""
    if s.numel() == 0:
        return []
    lo, hi = _level(float(s.min())), _level(float(s.max()))
    if lo == hi:  # the common case: one rule for all
        return [(nodes_per_piece(160 * 2**hi / 140, kmax), slice(None))]
    levels = torch.ceil(torch.log2(torch.clamp(140 * s, min=160) / 160))
    return [
        (
            nodes_per_piece(160 * 2 ** float(lv) / 140, kmax),
            torch.nonzero(levels == lv).squeeze(1),
        )
        for lv in torch.unique(levels)
    ]


def expect(
    f: Callable[..., Tensor],
    var: Tensor | np.ndarray | float,
    *,
    kinks: Sequence[float] = (),
    with_unit: bool = False,
) -> Tensor:
    """⟨f(z)⟩ for z ~ N(0, var), elementwise over a tensor of variances (book §1.1).

    ``kinks`` lists points in z where f is not smooth; the quadrature splits there. Each band of
    variances gets its own rule size (:func:`nodes_per_piece`); bands of large variance are
    also cut at the activation's transition region (:func:`transition_breaks`). With
    ``with_unit`` f is called as f(z, u) with u = z/√var the standardized variable (for Hermite
    weights). Accuracy: ≲1e-12 relative for smooth f and for piecewise-smooth f with its kinks
    given, for variances from 1e-6 to 1e6 when f reaches its asymptotic form (constant or
    polynomial) within |z| ≲ 16 (every built-in activation); oscillating f (sin) at large
    variance needs its closed form.
    """
    var = as_tensor(var)
    shape = var.shape
    s = torch.sqrt(torch.clamp(var.reshape(-1), min=0.0))
    out = torch.empty_like(s)
    with torch.no_grad():  # user callables' autograd derivatives must not build graphs here
        for q, idx in _bands(s):
            s_max = float(s[idx].max())
            if s_max > SPLIT_SCALE:  # large variances: cut at the transitions too
                q = nodes_per_piece(s_max, split=True)
            u, w = segment_rule(unit_breaks(transition_breaks(kinks, s_max), s[idx]), q)
            z = s[idx][:, None] * u
            out[idx] = ((f(z, u) if with_unit else f(z)) * w).sum(dim=1)
    return check_finite(out, "a Gaussian expectation").reshape(shape)


# --------------------------------------------------------------------------------------------
# the kink-split rule in Cholesky coordinates


@dataclass(frozen=True)
class SplitRule:
    """Nodes and weights of the kink-split rule for a batch of t Gaussians N(0, L Lᵀ) in d ≤ 4
    dimensions: ``z`` (t, m, d), ``w`` (t, m) with Σ_m w f(z_m) ≈ ⟨f(z)⟩.

    ``K_inv`` (t, d, d) is set when every kernel of the batch is invertible; then
    :meth:`projection` gives the Gaussian expectations of derivatives by Stein's lemma.
    """

    z: Tensor
    w: Tensor
    K_inv: Tensor | None = None

    def mean(self, values: Tensor) -> Tensor:
        """⟨g⟩ from node values (t, m, *extra) → (t, *extra)."""
        return torch.einsum("tm,tm...->t...", self.w, values)

    def projection(self, values: Tensor, order: int) -> Tensor:
        """⟨∂_β g⟩ (order 1, trailing axis β) or ⟨∂_β1∂_β2 g⟩ (order 2, trailing β1, β2) from
        node values (t, m) of g, by Stein's lemma (book §8.3; 02-ntk.md §0):

            ⟨∂_β g⟩ = ⟨g y_β⟩,    ⟨∂_β1 ∂_β2 g⟩ = ⟨g (y_β1 y_β2 − K^{β1β2})⟩,    y = K⁻¹ z.

        These are the expectations of the *distributional* derivatives: the kink contributions
        of ReLU-like σ are included."""
        if self.K_inv is None:
            raise ValueError("Stein projections need invertible kernels")
        y = torch.einsum("tij,tmj->tmi", self.K_inv, self.z)
        wv = self.w * values
        if order == 1:
            return torch.einsum("tm,tmb->tb", wv, y)
        Ki = self.K_inv[:, None]  # (t, 1, d, d)
        yy = y[..., :, None] * y[..., None, :]
        if order == 2:
            return torch.einsum("tm,tmbc->tbc", wv, yy - Ki)
        if order != 4:
            raise ValueError(f"projection order must be 1, 2 or 4, got {order}")
        # Hermite tensor of order 4: y⁴ − Σ_6 K⁻¹yy + Σ_3 K⁻¹K⁻¹ (all pairings of β1…β4)
        m4 = torch.einsum("tm,tmab,tmcd->tabcd", wv, yy, yy)
        m2 = torch.einsum("tm,tmab->tab", wv, yy)
        m0 = wv.sum(1)
        Kt = self.K_inv
        h = m4.clone()
        for (a, b), (c, d) in (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))):
            # the pairing {ab}{cd}: −K^{ab}⟨y_c y_d⟩ − K^{cd}⟨y_a y_b⟩ + K^{ab}K^{cd}⟨1⟩
            pair = torch.einsum("tab,tcd->tabcd", Kt, Kt)
            term = (
                -torch.einsum("tab,tcd->tabcd", Kt, m2)
                - torch.einsum("tab,tcd->tabcd", m2, Kt)
                + pair * m0[:, None, None, None, None]
            )
            h = h + _to_slots(term, (a, b, c, d))
        return h


def _to_slots(t: Tensor, slots: tuple[int, int, int, int]) -> Tensor:
    """A (t, d, d, d, d) tensor built with axes (a, b, c, d) = slots moved to β1…β4 order."""
    order = [0] + [1 + slots.index(k) for k in range(4)]
    return t.permute(*order)


def cholesky(K: Tensor) -> Tensor:
    """Lower Cholesky factors of a batch of (t, d, d) positive *semi*-definite kernels, exact for
    singular ones: a pivot that round-off makes ≤ 0 (coincident or parallel inputs, an input of
    zero variance) gives a zero column instead of a failure or a jitter. d ≤ 4, so the loop is
    over columns only."""
    d = K.shape[-1]
    L = torch.zeros_like(K)
    for k in range(d):
        pivot = K[..., k, k] - (L[..., k, :k] ** 2).sum(-1)
        lkk = torch.sqrt(torch.clamp(pivot, min=0.0))
        # relative floor: a pivot at round-off level of the diagonal is a zero pivot
        lkk = torch.where(pivot > 1e-14 * K[..., k, k].abs(), lkk, torch.zeros_like(lkk))
        L[..., k, k] = lkk
        if k + 1 < d:
            rest = K[..., k + 1 :, k] - (L[..., k + 1 :, :k] * L[..., k : k + 1, :k]).sum(-1)
            safe = torch.where(lkk > 0, lkk, 1.0)[..., None]
            L[..., k + 1 :, k] = torch.where(lkk[..., None] > 0, rest / safe, 0.0)
    return L


def _split_level(
    L: Tensor, k: int, u: Tensor, kinks: Tensor, shadow_of: Tensor | None, q: int, window: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One coordinate of the kink-split rule: for outer nodes u (t, m, k) the nodes u_k
    (t, m, p·q) and weights of coordinate k, cut where z_k = s_k + L_kk u_k crosses a kink
    (and, if ``shadow_of`` holds break points in u_k, there too). Returns (u_k, w_k, z_k)."""
    shift = (u * L[:, k, :k][:, None, :]).sum(dim=2)  # (t, m)
    lkk = L[:, k, k][:, None, None]
    # a zero pivot (z_k fixed by the outer coordinates): no kink to cut at in u_k
    breaks = torch.where(
        lkk > 0, (kinks - shift[:, :, None]) / torch.where(lkk > 0, lkk, 1.0), 2 * window
    )  # (t, m, kinks)
    if shadow_of is not None:
        breaks = torch.cat([breaks, shadow_of[:, None, :].expand(-1, u.shape[1], -1)], dim=2)
    uk, wk = segment_rule(breaks, q, window)
    return uk, wk, shift[:, :, None] + L[:, k, k][:, None, None] * uk


def _shadows(L: Tensor, kinks: Tensor, window: float) -> Tensor | None:
    """Outer break points u_1 of a 2-D rule where the inner coordinate's kink cuts leave the
    window: u_1 = (κ/s_2 ∓ r T)/ρ (z_2 = s_2(ρ u_1 + r u_2)). For nearly parallel inputs the
    inner kink sweeps the whole window while u_1 moves by only ~r·T, a thin feature the outer
    rule must be cut at."""
    if kinks.numel() == 0:
        return None
    l21, l22 = L[:, 1, 0], L[:, 1, 1]
    ok = l21.abs() > 0
    safe = torch.where(ok, l21, 1.0)[:, None]
    lo = (kinks[None, :] - l22[:, None] * window) / safe
    hi = (kinks[None, :] + l22[:, None] * window) / safe
    return torch.where(ok[:, None], torch.cat([lo, hi], dim=1), 2 * window)


def _build(
    L: Tensor,
    kinks: Tensor,
    q: int,
    factors: Sequence[Fn] | None,
    window: float,
    shadows: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None, int]:
    """Standardized nodes u (t, m, d) and weights (t, m) of the kink-split rule for Cholesky
    factors L (z = L u), level by level; with ``factors`` also the running product Π f_k(z_k)
    (t, m), and nodes where it vanishes for the whole batch are dropped (ReLU below its kink).
    Returns (u, w, product, peak node count held)."""
    t, d, _ = L.shape
    u = torch.zeros((t, 1, 0), dtype=DTYPE)
    wt = torch.ones((t, 1), dtype=DTYPE)
    val = torch.ones((t, 1), dtype=DTYPE) if factors is not None else None
    shadow = _shadows(L, kinks, window) if d == 2 and shadows else None
    peak = 0
    for k in range(d):
        uk, wk, zk = _split_level(L, k, u, kinks, shadow if k == 0 else None, q, window)
        m = u.shape[1] * uk.shape[2]
        u = torch.cat([u[:, :, None, :].expand(-1, -1, uk.shape[2], -1), uk[..., None]], dim=3)
        u = u.reshape(t, m, k + 1)
        wt = (wt[:, :, None] * wk).reshape(t, m)
        peak = max(peak, t * m)
        if val is not None:
            val = (val[:, :, None] * factors[k](zk)).reshape(t, m)
            # nodes where the product vanishes (ReLU below its kink) or that carry no weight
            # (pieces cut at break points outside the window) for the whole batch
            live = ((val != 0) & (wt != 0)).any(dim=0)
            if not live.all():
                u, wt, val = u[:, live], wt[:, live], val[:, live]
    return u, wt, val, peak


def split_rule(
    K: Tensor,
    kinks: Sequence[float],
    q: int,
    *,
    with_inverse: bool = False,
    window: float = WINDOW,
    shadows: bool = True,
) -> SplitRule:
    """The kink-split rule (nodes and weights) for a batch of kernels K (t, d, d), d ≤ 4, with
    ``q`` Gauss–Legendre nodes per piece. ``with_inverse`` stores K⁻¹ for Stein projections;
    ``shadows=False`` skips the shadow cuts of 2-D rules (not needed away from parallel
    inputs)."""
    kk = torch.as_tensor(sorted(kinks), dtype=DTYPE)
    L = cholesky(K)
    u, w, _, _ = _build(L, kk, q, None, window, shadows)
    z = torch.einsum("tij,tmj->tmi", L, u)
    return SplitRule(z=z, w=w, K_inv=torch.linalg.inv(K) if with_inverse else None)


def expect_split(
    factors: Sequence[Fn],
    K: Tensor,
    kinks: Sequence[float],
    q: int,
    *,
    max_points: int,
    window: float = WINDOW,
    smooth_last: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """⟨Π_k f_k(z_k)⟩ for z ~ N(0, K), K a batch (T, d, d), by the kink-split rule, chunked so
    that at most about ``max_points`` nodes are held at once. Cost (pieces·q)^d per kernel;
    exponentially convergent for piecewise-smooth factors.

    ``smooth_last``, the Gaussian smoothing (m, s) ↦ E_u f_d(m + s u) of the last factor in
    closed form, integrates the last Cholesky coordinate exactly: given the outer coordinates,
    z_d = m + L_dd u_d with m = Σ_{j<d} L_dj u_j, so the rule needs only d − 1 levels (cost
    (pieces·q)^{d−1}); ``factors[-1]`` is then unused."""
    T, d, _ = K.shape
    L = cholesky(K)
    kk = torch.as_tensor(sorted(kinks), dtype=DTYPE)
    out = torch.empty(T, dtype=DTYPE)
    if smooth_last is not None and d > 1:
        return _expect_smooth_last(factors, L, kk, q, max_points, window, smooth_last)
    pieces = len(kinks) + 1 + (2 * len(kinks) if d == 2 else 0)
    per_item = (pieces * q) ** d  # an upper bound: pruning removes many nodes
    cap_points = max_memory() // BYTES_PER_NODE
    max_points = min(max_points, cap_points)
    step = max(1, max_points // per_item)
    s0 = 0
    while s0 < T:
        Lc = L[s0 : s0 + step]
        _, wt, val, peak = _build(Lc, kk, q, factors, window)
        node_budget(-(-peak // Lc.shape[0]), f"a {d}-input Gaussian integral")  # one must fit
        out[s0 : s0 + Lc.shape[0]] = (val * wt).sum(dim=1)
        s0 += Lc.shape[0]
        # pruning makes the real size smaller than (pieces·q)^d: grow the chunk to fit the cap
        step = max(1, int(Lc.shape[0] * max_points / max(peak, 1)))
    return out


def _expect_smooth_last(
    factors: Sequence[Fn],
    L: Tensor,
    kinks: Tensor,
    q: int,
    max_points: int,
    window: float,
    smooth_last: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """:func:`expect_split` with the last coordinate integrated by ``smooth_last``: the
    kink-split rule over the leading (d−1)×(d−1) block of L, times E f_d(m + L_dd u_d)."""
    T, d, _ = L.shape
    out = torch.empty(T, dtype=DTYPE)
    pieces = kinks.numel() + 1 + (2 * kinks.numel() if d == 3 else 0)
    step = max(1, min(max_points, max_memory() // BYTES_PER_NODE) // (pieces * q) ** (d - 1))
    s0 = 0
    while s0 < T:
        Lc = L[s0 : s0 + step]
        u, wt, val, peak = _build(Lc[:, : d - 1, : d - 1], kinks, q, factors[: d - 1], window)
        node_budget(-(-peak // Lc.shape[0]), f"a {d}-input Gaussian integral")
        m = torch.einsum("tmj,tj->tm", u, Lc[:, d - 1, : d - 1])
        inner = smooth_last(m, Lc[:, d - 1, d - 1, None].expand_as(m))
        out[s0 : s0 + Lc.shape[0]] = (val * wt * inner).sum(dim=1)
        s0 += Lc.shape[0]
        step = max(1, int(Lc.shape[0] * max_points / max(peak, 1)))
    return out


def homogeneous_smoothing(a_plus: float, a_minus: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The Gaussian smoothing (m, s) ↦ E_u σ(m + s u), u ~ N(0, 1), of the homogeneous
    activation σ(z) = a₊ z (z ≥ 0), a₋ z (z < 0) in closed form:
    a₋ m + (a₊ − a₋)(m Φ(m/s) + s φ(m/s)), and σ(m) at s = 0."""

    def smooth(m: Tensor, s: Tensor) -> Tensor:
        pos = s > 0
        r = m / torch.where(pos, s, 1.0)
        cdf = 0.5 * torch.special.erfc(-r / math.sqrt(2.0))
        pdf = torch.exp(-0.5 * r * r) * _INV_SQRT_2PI
        ramp = torch.where(pos, m * cdf + s * pdf, torch.clamp(m, min=0.0))
        return a_minus * m + (a_plus - a_minus) * ramp

    return smooth
