"""Gaussian expectations of products of up to four functions over up to four inputs.

The finite-width recursions need, for index tuples (α1, …, αk) of inputs, k ≤ 4,

    ⟨f_1(z_{α1}) f_2(z_{α2}) ⋯ f_k(z_{αk})⟩_K,        z ~ N(0, K)

(book §4.2–4.3: ⟨σσσσ⟩_K for the four-point vertex V; the NTK recursions of ch. 8 need
⟨σ'σ'σσ⟩_K and friends). :func:`expect_product` computes them for a whole batch of tuples at
once. Such an expectation depends only on the d ≤ k *distinct* inputs of a tuple, so tuples are
grouped by their pattern of repeated indices (at most 15 patterns for k = 4), and each group
goes down its own rung of a ladder:

* d = 1: a 1-D expectation of the product, composite Gauss–Legendre split at the kinks
  (:func:`pdlt.gaussian.expect`, ≲1e-12).
* d = 2: the product splits as F(z_a) G(z_b); :func:`pdlt.gaussian.expect_pairs` (Mehler series
  with a certified bound, 2-D quadrature where it cannot certify, ≲1e-12) for smooth functions,
  the kink-split rule (:mod:`pdlt.gaussian.rules`) for kinked ones.
* d = 3, 4: a nested tensor-product rule in the Cholesky coordinates of the tuple's d×d
  sub-kernel, z = L u with L lower triangular (:func:`pdlt.gaussian.rules.cholesky`, exact for
  singular sub-kernels: a zero pivot gives a zero column). z_i depends on u_1…u_i only, so the
  outer d − 1 coordinates run over a (d−1)-dimensional product grid (its negligible corners
  dropped, cached per rule combination) and the last one is a 1-D sum per outer node: f_d alone
  is evaluated on the full grid. Cost O(T q^d) for T tuples and q nodes per dimension, with no
  d-dimensional node list built per tuple (building those cost ~80 % of the time before).

Accuracy of the d = 3, 4 rung (measured, see ``tests/test_vertex_gaussian.py``): smooth
functions go through a tensor product of per-direction 1-D rules (Gauss–Hermite for
small-variance directions, the trapezoidal rule — exponentially convergent for integrands analytic
in a strip — for the others, :func:`direction_rules`), to the relative accuracy ``tol`` (default
1e-7; measured ≤ 4e-8 for tanh, ≤ 1.2e-8 for sin against its closed form, for kernel entries up
to 2). *Kinked* functions (relu family, elu, selu, user kinks) go through iterated composite
Gauss–Legendre in Cholesky coordinates split at every kink (:func:`pdlt.gaussian.rules.expect_split`),
exponentially convergent as well. With ``smooth`` (the relu family, whose Gaussian smoothing
E σ(m + s u) has a closed form) the last coordinate is integrated exactly and q = 24 nodes per
piece are used: measured ≲1e-8 relative for ⟨relu⁴⟩ on generic correlated kernels (stated
bound ``KINKED_ERROR`` = 1e-6). Without it (elu, selu, user kinks) the default (2·12)^4 rule
gives 5e-7 on block-diagonal kernels but was measured 6e-4–1e-2 relative on generic correlated
4×4 kernels (q = 16: ~1e-4, q = 24: ~1e-8): pass ``split_nodes`` for more. With
``homogeneous`` (the relu family) no quadrature is used at all: truncated moments and orthant
probabilities (:mod:`pdlt.gaussian.orthant`, ≲1e-9, singular sub-kernels included).

Speed (issue 11): an even integrand (odd σ in all four slots: tanh, erf, sin) is summed over
half the outer grid; Gauss–Hermite counts sit on a short ladder so that tuples share rules and
cached grids; where the outer grid is large the inner 1-D sums come from a fine table
(:func:`_inner_table`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

from pdlt.gaussian.orthant import homogeneous_product
from pdlt.gaussian.pairs import expect_pairs
from pdlt.gaussian.rules import DTYPE as _DTYPE
from pdlt.gaussian.rules import (
    SPLIT_SCALE,
    cholesky,
    expect,
    expect_split,
    node_budget,
    transition_breaks,
)

Tensor = torch.Tensor
Fn = Callable[[Tensor], Tensor]

DEFAULT_NODES = {3: 40, 4: 20}  # caps of the nodes per direction
SPLIT_NODES = {2: 24, 3: 16, 4: 12}  # Gauss–Legendre nodes per piece, kinked route
# ... and with the last coordinate in closed form (``smooth``): one level fewer makes more nodes
# per piece affordable; measured for ⟨relu⁴⟩ on generic correlated 4×4 kernels: q = 12, 16, 24
# give relative errors ~1e-2, ~1e-4, ~1e-8 (4-level q = 12 is no better than 3-level q = 12)
SMOOTH_SPLIT_NODES = 24
DEFAULT_TOL = 1e-7
_GH_LADDER = (2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)
# Mehler orders for the 2-input route: pairs the series cannot certify to 1e-12 at this order
# (nearly parallel inputs) fall back to 2-D quadrature inside expect_pairs, so a lower order
# costs speed there but never accuracy.
PAIR_KMAX = 96
_MAX_POINTS = 300_000  # tuples × nodes evaluated at once: ~10 MB temporaries stay in cache
# (measured 1.6× faster than 3·10⁶ for tanh on 1 thread)
_MAX_SPLIT_POINTS = 1_000_000  # the same for the kink-split route (~15 doubles per node)
KINKED_ERROR = 1e-6  # stated relative error of the kinked d = 3, 4 route (measured 5e-7)


@lru_cache(maxsize=512)
def _rule_1d(code: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D rule for u ~ N(0, 1): ``code > 0`` is Gauss–Hermite with ``code`` nodes,
    ``code < 0`` the trapezoidal rule with step 4/(−code) on |u| ≤ T(tol)."""
    if code > 0:
        x, w = np.polynomial.hermite_e.hermegauss(code)
        return x, w / math.sqrt(2 * math.pi)
    h = 4.0 / -code
    T = _window(tol)
    x = h * np.arange(-math.floor(T / h), math.floor(T / h) + 1)
    return x, h * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _window(tol: float) -> float:
    """Half-width T of the trapezoidal window: the Gaussian mass beyond is below tol."""
    return math.sqrt(2 * math.log(1 / tol)) + 1.5


@lru_cache(maxsize=1024)  # (d−1)-dimensional grids: ≲ 10⁵ nodes
def _product_grid(codes: tuple[int, ...], tol: float, half: bool = False) -> tuple[Tensor, Tensor]:
    """Tensor product of the 1-D rules ``codes``: nodes (m, d), weights (m,). With ``half``
    (an integrand even under u → −u) only the nodes with u_1 ≥ 0, those with u_1 > 0 at
    double weight: every rule is symmetric, so this is the same sum at half the cost."""
    rules = [_rule_1d(c, tol) for c in codes]
    weights = rules[0][1]
    for _, w in rules[1:]:
        weights = np.multiply.outer(weights, w)
    weights = weights.reshape(-1)
    # drop the corners of the tensor grid: nodes whose product weight is below tol·1e-4 of the
    # largest lie outside a ball of Gaussian mass 1 − O(tol·1e-4·#nodes·w_max) — about half
    # of a 4-D grid, for an error far below tol
    keep = weights > tol * 1e-4 * weights.max()
    sizes = [len(x) for x, _ in rules]
    if half:  # every 1-D rule is symmetric: u_1 ≥ 0 is the upper half of the first axis
        first = np.repeat(rules[0][0], weights.size // sizes[0])
        keep &= first >= 0
        weights = np.where(first > 0, 2 * weights, weights)
    flat = np.nonzero(keep)[0]
    nodes = np.stack(
        [x[i] for (x, _), i in zip(rules, np.unravel_index(flat, sizes), strict=True)], axis=1
    )
    return torch.as_tensor(nodes, dtype=_DTYPE), torch.as_tensor(weights[flat], dtype=_DTYPE)


def even_product(fns: Sequence[Fn]) -> bool:
    """Whether Π_j f_j(−z_j) = Π_j f_j(z_j): every f_j odd or even (checked on 401 points of
    [−20, 20]; tanh, erf, sin are odd) with an even number of odd ones."""
    z = torch.linspace(-20.0, 20.0, 401, dtype=_DTYPE) * (1 + 1 / math.pi)
    odd = 0
    with torch.no_grad():
        for f in fns:
            a, b = f(z), f(-z)
            scale = 1e-14 * torch.clamp(a.abs(), min=1e-300)
            if bool(((b + a).abs() <= scale).all()):
                odd += 1
            elif not bool(((b - a).abs() <= scale).all()):
                return False
    return odd % 2 == 0


def direction_rules(L: Tensor, q_max: int, tol: float, *, kinked: bool) -> Tensor:
    """The 1-D rule for each eigen-direction j of a sub-kernel K_sub = L Lᵀ (codes as in
    :func:`_rule_1d`), whichever of two is cheaper for an integrand analytic in a strip:

    * Gauss–Hermite: a function of z = √λ u needs a number of nodes growing ∝ λ (measured for
      ⟨tanh⁴⟩ at 1e-8 relative: 6 + 80λ nodes); we use (6 + 80λ)·ln(1/tol)/ln(1e8).
    * trapezoidal: for σ analytic in |Im z| < π/2 (tanh's poles; sigmoid, swish, softplus lie
      further out, entire functions have no limit), the integrand is analytic in u_j for
      |Im u_j| < a_j = (π/2)/max_i |L_ij|. On that strip the Gaussian grows by e^{a²/2} and
      four σ's by at most ~e^5 (sin: cosh(π/2)⁴), so the trapezoidal error is
      ≲ exp(a²/2 + 5 − 2πa/h); we take a ≤ π and h = 2πa/(ln(1/tol) + a²/2 + 5), at most π·sqrt(2/(ln(1/tol) + 10))
      (the aliasing error of a Gaussian times a quartic, e^{−2π²/h²}(2π/h)⁴, below tol).

    Kinked functions converge only algebraically whatever the rule: ``q_max`` Gauss–Hermite
    nodes in every direction.
    """
    lam = (L * L).sum(dim=1)  # the eigenvalues: column norms² of L = Q Λ^{1/2}
    if kinked:
        return torch.full_like(lam, q_max, dtype=torch.long)
    log_tol = math.log(1 / tol)
    q_gh = torch.ceil((6 + 80 * lam) * log_tol / math.log(1e8)).to(torch.long)
    # rounded up to a short ladder (more nodes, never fewer): fewer distinct rule
    # combinations means fewer, larger batches and cached grids
    ladder = torch.tensor(_GH_LADDER)
    q_gh = torch.where(
        q_gh <= ladder[-1], ladder[torch.searchsorted(ladder, q_gh.clamp(max=ladder[-1]))], q_gh
    )
    reach = L.abs().amax(dim=1)
    # 0.85 of the strip: keeps |σ| bounded (tanh blows up at the poles themselves)
    a = torch.clamp(0.85 * (math.pi / 2) / torch.clamp(reach, min=1e-300), max=math.pi)
    # steps in quarters: code −c means h = 4/c
    c = torch.ceil(4 * (log_tol + a * a / 2 + 5) / (2 * math.pi * a))
    # aliasing of the Gaussian times polynomial growth: e^{−2π²/h²}(2π/h)^4 < tol needs
    # h ≤ π·sqrt(2/(ln(1/tol) + 10))
    c_min = math.ceil(4 * math.sqrt((log_tol + 10) / 2) / math.pi)
    c = torch.clamp(c, min=c_min).to(torch.long)
    T = _window(tol)
    n_trap = 2 * torch.floor(T * c / 4) + 1
    return torch.where(n_trap < q_gh, -c, torch.clamp(q_gh, max=q_max))


def _unique_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for small-integer (T, k) rows, by
    one integer key per row (torch's row-wise unique sorts lexicographically and was ~1 s
    of a 50-layer vertex)."""
    lo = rows.amin(dim=0)
    span = rows.amax(dim=0) - lo + 1
    mult = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), span.flip(0)[:-1]]), 0).flip(0)
    keys, inverse = torch.unique((rows - lo) @ mult, return_inverse=True)
    # decode the sorted keys back to rows (lexicographic order, as torch.unique(dim=0))
    out = lo + (keys[:, None] // mult) % span
    return out, inverse


def _patterns(index: Tensor) -> Tensor:
    """Canonical repetition pattern of each tuple: slot j → rank of the first slot with the same
    input (e.g. (5, 3, 5, 7) → (0, 1, 0, 2)). Returns (T, k) long."""
    T, k = index.shape
    eq = index[:, :, None] == index[:, None, :]  # (T, k, k)
    first = torch.argmax(eq.to(torch.int8), dim=2)  # first slot j' ≤ j with the same input
    # rank of each first-occurrence slot among the first occurrences
    is_first = first == torch.arange(k)[None, :]
    rank = torch.cumsum(is_first.to(torch.long), dim=1) - 1
    return torch.gather(rank, 1, first)


def _product(fns: Sequence[Fn], slots: Sequence[int]) -> Fn:
    """z ↦ Π_{j in slots} f_j(z)."""
    chosen = [fns[j] for j in slots]

    def f(z: Tensor) -> Tensor:
        out = chosen[0](z)
        for g in chosen[1:]:
            out = out * g(z)
        return out

    return f


def _expect_kinked(
    fns: Sequence[Fn],
    K: Tensor,
    inputs: Tensor,
    pattern: tuple[int, ...],
    kinks: Sequence[float],
    q: int,
    tol: float,
    smooth: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """⟨Π_j f_j(z_{inputs[t, pattern[j]]})⟩ for kinked functions: the kink-split rule over each
    tuple's d×d sub-kernel on the window of Gaussian mass 1 − tol (exponentially convergent,
    cost (pieces·q)^d per tuple). With ``smooth`` (the closed-form Gaussian smoothing of the one
    function in every slot) an input that occurs once is put last and its coordinate is
    integrated exactly (cost (pieces·q)^{d−1})."""
    d = inputs.shape[1]
    groups = [[j for j, p in enumerate(pattern) if p == r] for r in range(d)]
    single = [r for r in range(d) if len(groups[r]) == 1]
    last = None
    if smooth is not None and single:
        order = [r for r in range(d) if r != single[-1]] + [single[-1]]
        groups, inputs, last = [groups[r] for r in order], inputs[:, order], smooth
    factors = [_product(fns, g) for g in groups]
    sub = K[inputs[:, :, None], inputs[:, None, :]]
    return expect_split(
        factors,
        sub,
        kinks,
        q,
        max_points=_MAX_SPLIT_POINTS,
        window=_window(tol),
        smooth_last=last,
    )


def _expect_cubature(
    fns: Sequence[Fn],
    K: Tensor,
    inputs: Tensor,
    pattern: tuple[int, ...],
    q_max: int,
    kinked: bool,
    tol: float,
) -> Tensor:
    """⟨Π_j f_j(z_{inputs[t, pattern[j]]})⟩ for d = inputs.shape[1] distinct inputs: a tensor
    product of 1-D rules in the Cholesky coordinates of each tuple's sub-kernel (z = L u, L lower
    triangular), with the rule of each coordinate set by its column of L
    (:func:`direction_rules`).

    The triangular L makes the rule nested: z_1 depends on u_1 only, z_2 on (u_1, u_2), …, so
    f_i(z_i) is evaluated on the i-dimensional sub-grid alone and the sums run innermost first,
    ⟨…⟩ = Σ_{u1} w f_1 Σ_{u2} w f_2 ⋯ Σ_{ud} w f_d. No d-dimensional node list is built (the
    grid is a broadcast), and only the innermost factor is evaluated on the full grid."""
    T, d = inputs.shape
    groups = [[j for j, p in enumerate(pattern) if p == r] for r in range(d)]
    factors = [_product(fns, g) for g in groups]
    half = even_product(fns)  # an even integrand: half the outer grid
    sub = K[inputs[:, :, None], inputs[:, None, :]]  # (T, d, d)
    L = cholesky(sub)
    codes = direction_rules(L, q_max, tol, kinked=kinked)
    out = torch.empty(T, dtype=_DTYPE)
    ucodes, inverse = _unique_rows(codes)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=ucodes.shape[0]).tolist()
    s0 = 0
    for cv, n_rows in zip(ucodes.tolist(), counts, strict=True):
        rows = order[s0 : s0 + n_rows]
        s0 += n_rows
        m_out = _product_grid(tuple(cv[:-1]), tol, half)[1].shape[0]
        m = m_out * _rule_1d(cv[-1], tol)[0].shape[0]
        # the nested sum holds ~3 float64 per full-grid node, a quarter of BYTES_PER_NODE
        budget = node_budget(-(-m // 4), f"a {d}-input Gaussian integral (tanh-like cubature)")
        # chunks sized to keep temporaries in cache; the inner table (:func:`_inner_table`)
        # holds ~_STENCIL values per outer node instead of one per full-grid node
        per_tuple = m_out * _STENCIL if m_out > _TABLE_GAIN * 1000 and m > 16 * m_out else m
        step = max(1, min(_MAX_POINTS // per_tuple, budget))
        for s in range(0, n_rows, step):
            out[rows[s : s + step]] = _nested_sum(
                factors, L[rows[s : s + step]], tuple(cv), tol, half
            )
    return out


@lru_cache(maxsize=512)
def _rule_tensor(code: int, tol: float) -> tuple[Tensor, Tensor]:
    x, w = _rule_1d(code, tol)
    return torch.as_tensor(x, dtype=_DTYPE), torch.as_tensor(w, dtype=_DTYPE)


def _nested_sum(
    factors: Sequence[Fn], L: Tensor, codes: tuple[int, ...], tol: float, half: bool = False
) -> Tensor:
    """Σ_u w(u) Π_i f_i((L u)_i) for lower-triangular L (t, d, d) and the tensor product of the
    1-D rules ``codes``, nested: the outer d − 1 coordinates run over their product grid with
    its negligible corners dropped (:func:`_product_grid`), and for each outer node the last
    coordinate, on which z_d alone depends, is a 1-D sum Σ_{u_d} w f_d(shift + L_dd u_d) — so
    f_1…f_{d−1} are evaluated on the (d−1)-dimensional grid only, f_d on the full one."""
    d = L.shape[1]
    u, w = _product_grid(codes[:-1], tol, half)  # (m, d−1), (m,)
    x, wx = _rule_tensor(codes[-1], tol)
    z = torch.einsum("mj,tkj->tkm", u, L[:, :, : d - 1])  # (t, d, m): all but L_dd u_d
    outer = factors[0](z[:, 0])
    for i in range(1, d - 1):
        outer = outer * factors[i](z[:, i])
    shift = z[:, d - 1]  # (t, m), contiguous
    s = L[:, d - 1, d - 1]
    inner = None
    if x.shape[0] >= _TABLE_MIN_Q and shift.shape[1] > _TABLE_GAIN * (_table_cells(shift) + 5):
        inner = _inner_table(factors[d - 1], shift, s, x, wx)
    if inner is None:
        inner = factors[d - 1](shift[..., None] + s[:, None, None] * x) @ wx
    return (outer * inner) @ w


# The inner 1-D sums g(μ) = Σ_x w f(μ + s x) of the nested rule, at the outer nodes' shifts μ:
# where there are many more outer nodes than cells of a fine μ grid, g is tabulated on that
# grid and interpolated by local polynomials (a 6-point stencil, spacing _TABLE_STEP in z):
# for f analytic in |Im z| < π/2 (tanh's poles; sigmoid, swish, gelu, erf lie further out)
# the error is ≲ 0.02·Δ⁶ max|f⁽⁶⁾| (measured ≲2e-11 of max|g| for tanh at Δ = 0.02; the
# tuple's expectation moves by ≲4e-12 relative), and every chunk is checked a posteriori
# against the direct sum at sample nodes (falling back to the direct sum above 1e-10 of max|g|).
_TABLE_STEP = 0.02
_STENCIL = 6
# the table pays (measured: −25 % at the first tanh layer, q ≈ 25) where the inner rule is long
# and the outer nodes outnumber the table's points several times
_TABLE_GAIN = 12
_TABLE_MIN_Q = 16
_TABLE_CHECK = 1e-10


def _table_cells(shift: Tensor) -> int:
    span = float((shift.amax(dim=1) - shift.amin(dim=1)).max())
    return math.ceil(span / _TABLE_STEP) + 1


@lru_cache(maxsize=1)
def _stencil_matrix() -> Tensor:
    """Values at the stencil points p = −2…3 → coefficients of the interpolating polynomial in
    θ = (μ − μ_0)/Δ, μ_0 the cell's left point (Vandermonde inverse)."""
    p = torch.arange(-2, _STENCIL - 2, dtype=_DTYPE)
    V = p[:, None] ** torch.arange(_STENCIL, dtype=_DTYPE)[None, :]
    return torch.linalg.inv(V)  # coefficients = V⁻¹ values


def _inner_table(f: Fn, shift: Tensor, s: Tensor, x: Tensor, wx: Tensor) -> Tensor | None:
    """Σ_x w f(μ + s x) at every μ = shift[t, m] by a table on a μ grid and local degree-5
    interpolation; None if the a-posteriori check fails."""
    t, m = shift.shape
    lo = shift.amin(dim=1)
    n = _table_cells(shift)
    k = torch.arange(-2, n + _STENCIL - 2, dtype=_DTYPE)  # grid points with the stencil's margin
    mu = lo[:, None] + _TABLE_STEP * k  # (t, n + 5)
    G = f(mu[..., None] + s[:, None, None] * x) @ wx  # (t, n + 5)
    coef = G.unfold(1, _STENCIL, 1) @ _stencil_matrix().T  # (t, n, 6): cell i uses points i−2…i+3
    pos = (shift - lo[:, None]).mul_(1 / _TABLE_STEP)
    cell = pos.floor().clamp_(0, n - 1)
    theta = pos.sub_(cell).reshape(-1)
    cells = coef.shape[1]
    flat = cell.to(torch.long).add_(cells * torch.arange(t)[:, None]).reshape(-1)
    c = coef.reshape(t * cells, _STENCIL).index_select(0, flat)  # (t·m, 6) contiguous rows
    out = c[:, _STENCIL - 1].clone()
    for j in range(_STENCIL - 2, -1, -1):  # Horner
        out = torch.addcmul(c[:, j], out, theta)
    out = out.reshape(t, m)
    # a posteriori: the direct sum at a spread of outer nodes
    probe = torch.linspace(0, m - 1, min(m, 64)).round().to(torch.long)
    direct = f(shift[:, probe, None] + s[:, None, None] * x) @ wx
    scale = float(G.abs().max())
    if float((out[:, probe] - direct).abs().max()) > _TABLE_CHECK * max(scale, 1e-300):
        return None
    return out


def expect_product(
    fns: Fn | Sequence[Fn],
    K: Tensor | np.ndarray,
    index: Tensor | np.ndarray,
    *,
    kinks: Sequence[float] = (),
    nodes: dict[int, int] | None = None,
    tol: float = DEFAULT_TOL,
    split_nodes: dict[int, int] | None = None,
    smooth: Callable[[Tensor, Tensor], Tensor] | None = None,
    homogeneous: tuple[float, float] | None = None,
) -> Tensor:
    """⟨f_1(z_{α1}) ⋯ f_k(z_{αk})⟩_K for every row (α1…αk) of ``index`` (book §4.2–4.3).

    Parameters
    ----------
    fns:
        One elementwise torch function per slot (k = 1…4), or a single function used in every
        slot (then k is ``index.shape[1]``).
    K:
        (N, N) symmetric positive semi-definite kernel over the inputs.
    index:
        (T, k) integer array of input indices; rows may repeat inputs (``(a, a, b, b)``).
    kinks:
        Points where any of the functions is not smooth; every route splits its integrals there.
    nodes:
        Caps on the Gauss–Hermite nodes per direction for 3 and 4 distinct inputs, default
        ``{3: 40, 4: 20}`` (smooth functions).
    tol:
        Target relative error of the 3-/4-input route for smooth functions (default 1e-7);
        sets the trapezoidal step and window (:func:`direction_rules`).
    split_nodes:
        Gauss–Legendre nodes per piece of the kinked route, default ``{2: 24, 3: 16, 4: 12}``.
    smooth:
        Optional closed-form Gaussian smoothing (m, s) ↦ E_u f(m + s u), u ~ N(0, 1), of a
        single kinked function ``fns`` used in every slot (e.g.
        :func:`pdlt.gaussian.rules.homogeneous_smoothing` for the relu family). The kinked
        route for 3 and 4 distinct inputs then integrates one coordinate exactly.
    homogeneous:
        Optional (a₊, a₋) when the single function ``fns`` is σ(z) = a₊ z (z ≥ 0), a₋ z (z < 0)
        (the relu family): every tuple then goes through the truncated-moment
        recursion with orthant probabilities (:mod:`pdlt.gaussian.orthant`, ≲1e-9, no
        quadrature; exact also for singular sub-kernels, where the kink-split rule is not).

    Returns
    -------
    Tensor
        float64 (T,), in the order of the rows of ``index``.

    Examples
    --------
    >>> K = torch.tensor([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])
    >>> expect_product(torch.tanh, K, [[0, 1, 1, 2]])      # ⟨tanh z_0 tanh² z_1 tanh z_2⟩
    """
    K = torch.as_tensor(K, dtype=_DTYPE)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (N, N) matrix, got shape {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ValueError("K contains NaN or inf")
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
    if idx.ndim != 2 or not 1 <= idx.shape[1] <= 4:
        raise ValueError(f"index must have shape (T, k) with 1 ≤ k ≤ 4, got {tuple(idx.shape)}")
    k = idx.shape[1]
    if (smooth is not None or homogeneous is not None) and not callable(fns):
        raise ValueError("smooth and homogeneous need a single function fns, used in every slot")
    if callable(fns):
        fns = [fns] * k
    fns = list(fns)
    if len(fns) != k:
        raise ValueError(f"got {len(fns)} functions for index tuples of length {k}")
    if idx.numel() and (idx.min() < 0 or idx.max() >= K.shape[0]):
        raise ValueError(f"index entries must lie in 0…{K.shape[0] - 1}")
    q = {**DEFAULT_NODES, **(nodes or {})}
    q_split = {**SPLIT_NODES, **(split_nodes or {})}
    out = torch.empty(idx.shape[0], dtype=_DTYPE)
    if idx.shape[0] == 0:
        return out
    pats = _patterns(idx)
    for pat in _unique_rows(pats)[0]:
        rows = torch.nonzero((pats == pat).all(dim=1)).squeeze(1)
        pattern = tuple(int(p) for p in pat)
        d = max(pattern) + 1
        first = [pattern.index(r) for r in range(d)]
        inputs = idx[rows][:, first]  # (t, d) distinct inputs in order of first appearance
        groups = [[j for j, p in enumerate(pattern) if p == r] for r in range(d)]
        if homogeneous is not None:
            out[rows] = homogeneous_product(*homogeneous, K, inputs, tuple(len(g) for g in groups))
        elif d == 1:
            diag = torch.diagonal(K)[inputs[:, 0]]
            out[rows] = expect(_product(fns, groups[0]), diag, kinks=tuple(kinks))
        elif d == 2 and kinks:
            # kinked pairs: the kink-split rule at (2·24)² nodes per pair is ~10× cheaper than
            # expect_pairs' fallback for the nearly parallel pairs deep networks produce
            out[rows] = _expect_kinked(fns, K, inputs, pattern, kinks, q_split[2], tol)
        elif d == 2:
            F, G = _product(fns, groups[0]), _product(fns, groups[1])
            full = expect_pairs(F, G, K, kinks_f=tuple(kinks), kinks_g=tuple(kinks), kmax=PAIR_KMAX)
            out[rows] = full[inputs[:, 0], inputs[:, 1]]
        else:
            s_max = float(torch.sqrt(torch.clamp(torch.diagonal(K)[inputs], min=0.0)).max())
            if kinks or (d == 3 and s_max > SPLIT_SCALE):
                # three inputs at large variance: the kink-split rule cut at the transition
                # region keeps the node count bounded (the cubature's trapezoidal step shrinks
                # ∝ 1/√K, its node count grows ∝ K^{d/2}); four stay on the cubature, whose
                # size the memory cap bounds (node_budget)
                cuts = transition_breaks(tuple(kinks), s_max)
                sm = smooth if kinks else None  # cuts at transitions: f must be the kinked one
                qd = max(q_split[d], SMOOTH_SPLIT_NODES) if sm is not None else q_split[d]
                out[rows] = _expect_kinked(fns, K, inputs, pattern, cuts, qd, tol, sm)
            else:
                out[rows] = _expect_cubature(fns, K, inputs, pattern, q[d], False, tol)
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            "a Gaussian expectation of a product is not finite; the functions overflow under "
            "the Gaussian (smaller C_W or fewer layers?)"
        )
    return out


def multisets(N: int, k: int = 4) -> Tensor:
    """All multisets of k inputs from N as sorted rows (a1 ≤ … ≤ ak): (C(N+k−1, k), k) long."""
    rows = torch.combinations(torch.arange(N), r=k, with_replacement=True)
    return rows.reshape(-1, k)
