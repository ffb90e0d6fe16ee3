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
  with a certified bound, 2-D quadrature with kink splitting where it cannot certify, ≲1e-12).
* d = 3, 4: tensor-product Gauss–Hermite after the eigen-decomposition K_sub = Q Λ Qᵀ of the
  tuple's d×d sub-kernel, z = Q Λ^{1/2} u with u ~ N(0, I_d). Eigen-decomposition (rather than
  Cholesky) makes singular sub-kernels (coincident or parallel inputs) harmless. Cost
  O(T q^d) for T tuples and q nodes per dimension.

Accuracy of the d = 3, 4 rung (measured, see ``tests/test_vertex_gaussian.py``): exact for
polynomials of degree < 2q; for smooth activations the error falls exponentially in √q at a rate
set by the distance of σ's complex singularities from the real axis in units of √K (tanh: poles
at ±iπ/2). With the default q (32 for d = 3, 18 for d = 4) and kernel entries ≲ 1, ⟨tanh⁴⟩-type
products are accurate to ≲1e-9 relative and entire functions (sin, erf, gelu) to ≲1e-12. For
*kinked* functions (relu family, elu, selu, user kinks) Gauss–Hermite converges only
algebraically across the kink hyperplanes: the measured error of ⟨relu(z_a)relu(z_b)relu(z_c)
relu(z_d)⟩ is ≲2e-4 relative at the default q. A :class:`RuntimeWarning` says so when that route
is taken for kinked functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

from pdlt.gaussian import expect, expect_pairs

Tensor = torch.Tensor
Fn = Callable[[Tensor], Tensor]

_DTYPE = torch.float64
DEFAULT_NODES = {3: 40, 4: 20}  # caps of the nodes per direction
DEFAULT_TOL = 1e-7
# Mehler orders for the 2-input route: pairs the series cannot certify to 1e-12 at this order
# (nearly parallel inputs) fall back to 2-D quadrature inside expect_pairs, so a lower order
# costs speed there but never accuracy.
PAIR_KMAX = 96
_MAX_POINTS = 3_000_000  # tuples × nodes evaluated at once (bounds memory to ~100 MB)
KINKED_ERROR = 2e-4  # measured relative error of the d = 3, 4 route for kinked functions


@lru_cache(maxsize=512)
def _rule_1d(code: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D rule for u ~ N(0, 1): ``code > 0`` is Gauss–Hermite with ``code`` nodes,
    ``code < 0`` the trapezoidal rule with step 1/(−code) on |u| ≤ T(tol)."""
    if code > 0:
        x, w = np.polynomial.hermite_e.hermegauss(code)
        return x, w / math.sqrt(2 * math.pi)
    h = 1.0 / -code
    T = _window(tol)
    x = h * np.arange(-math.floor(T / h), math.floor(T / h) + 1)
    return x, h * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _window(tol: float) -> float:
    """Half-width T of the trapezoidal window: the Gaussian mass beyond is below tol."""
    return math.sqrt(2 * math.log(1 / tol)) + 0.5


@lru_cache(maxsize=256)
def _product_grid(codes: tuple[int, ...], tol: float) -> tuple[Tensor, Tensor]:
    """Tensor product of the 1-D rules ``codes``: nodes (m, d), weights (m,)."""
    rules = [_rule_1d(c, tol) for c in codes]
    grids = np.meshgrid(*[x for x, _ in rules], indexing="ij")
    wgrids = np.meshgrid(*[w for _, w in rules], indexing="ij")
    nodes = np.stack([g.reshape(-1) for g in grids], axis=1)
    weights = np.prod(np.stack([g.reshape(-1) for g in wgrids], axis=1), axis=1)
    keep = weights > 1e-300
    return torch.as_tensor(nodes[keep], dtype=_DTYPE), torch.as_tensor(weights[keep], dtype=_DTYPE)


def direction_rules(L: Tensor, q_max: int, tol: float, *, kinked: bool) -> Tensor:
    """The 1-D rule for each eigen-direction j of a sub-kernel K_sub = L Lᵀ (codes as in
    :func:`_rule_1d`), whichever of two is cheaper for an integrand analytic in a strip:

    * Gauss–Hermite: a function of z = √λ u needs a number of nodes growing ∝ λ (measured for
      ⟨tanh⁴⟩ at 1e-8 relative: 6 + 80λ nodes); we use (6 + 80λ)·ln(1/tol)/ln(1e8).
    * trapezoidal: for σ analytic in |Im z| < π/2 (tanh's poles; sigmoid, swish, softplus lie
      further out, entire functions have no limit), the integrand is analytic in u_j for
      |Im u_j| < a_j = (π/2)/max_i |L_ij|. On that strip the Gaussian grows by e^{a²/2} and
      four σ's by at most ~e^5 (sin: cosh(π/2)⁴), so the trapezoidal error is
      ≲ exp(a²/2 + 5 − 2πa/h); we take a ≤ π and h = min(1, 2πa/(ln(1/tol) + a²/2 + 5)).

    Kinked functions converge only algebraically whatever the rule: ``q_max`` Gauss–Hermite
    nodes in every direction.
    """
    lam = (L * L).sum(dim=1)  # the eigenvalues: column norms² of L = Q Λ^{1/2}
    if kinked:
        return torch.full_like(lam, q_max, dtype=torch.long)
    log_tol = math.log(1 / tol)
    q_gh = torch.ceil((6 + 80 * lam) * log_tol / math.log(1e8)).to(torch.long)
    reach = L.abs().amax(dim=1)
    a = torch.clamp((math.pi / 2) / torch.clamp(reach, min=1e-300), max=math.pi)
    inv_h = torch.ceil((log_tol + a * a / 2 + 5) / (2 * math.pi * a))
    inv_h = torch.clamp(inv_h, min=1).to(torch.long)
    T = _window(tol)
    n_trap = 2 * torch.floor(T * inv_h) + 1
    # q_max caps Gauss–Hermite only where the trapezoidal rule is not cheaper anyway
    return torch.where(n_trap < q_gh, -inv_h, torch.clamp(q_gh, max=q_max))


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


def _expect_cubature(
    fns: Sequence[Fn],
    K: Tensor,
    inputs: Tensor,
    pattern: tuple[int, ...],
    q_max: int,
    kinked: bool,
    tol: float,
) -> Tensor:
    """⟨Π_j f_j(z_{inputs[t, pattern[j]]})⟩ for d = inputs.shape[1] distinct inputs, by
    tensor-product Gauss–Hermite in the eigenbasis of each tuple's sub-kernel, with the node
    count of each direction set by its eigenvalue (:func:`nodes_per_direction`)."""
    T, d = inputs.shape
    groups = [[j for j, p in enumerate(pattern) if p == r] for r in range(d)]
    factors = [_product(fns, g) for g in groups]
    sub = K[inputs[:, :, None], inputs[:, None, :]]  # (T, d, d)
    lam, Q = torch.linalg.eigh(sub)
    L = Q * torch.sqrt(torch.clamp(lam, min=0.0))[:, None, :]
    codes = direction_rules(L, q_max, tol, kinked=kinked)
    out = torch.empty(T, dtype=_DTYPE)
    for cv in torch.unique(codes, dim=0):
        rows = torch.nonzero((codes == cv).all(dim=1)).squeeze(1)
        u, w = _product_grid(tuple(int(c) for c in cv), tol)
        step = max(1, _MAX_POINTS // u.shape[0])
        for s in range(0, rows.shape[0], step):
            r = rows[s : s + step]
            z = torch.einsum("tij,mj->tmi", L[r], u)  # (t, m, d)
            val = factors[0](z[..., 0])
            for i in range(1, d):
                val = val * factors[i](z[..., i])
            out[r] = val @ w
    return out


def expect_product(
    fns: Fn | Sequence[Fn],
    K: Tensor | np.ndarray,
    index: Tensor | np.ndarray,
    *,
    kinks: Sequence[float] = (),
    nodes: dict[int, int] | None = None,
    tol: float = DEFAULT_TOL,
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
        Points where any of the functions is not smooth; the 1- and 2-input routes split there,
        and the 3-/4-input route warns that its accuracy is algebraic (~2e-4) for them.
    nodes:
        Caps on the Gauss–Hermite nodes per direction for 3 and 4 distinct inputs (and the
        count used for kinked functions), default ``{3: 40, 4: 20}``.
    tol:
        Target relative error of the 3-/4-input route for smooth functions (default 1e-7);
        sets the trapezoidal step and window (:func:`direction_rules`).

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
    if callable(fns):
        fns = [fns] * k
    fns = list(fns)
    if len(fns) != k:
        raise ValueError(f"got {len(fns)} functions for index tuples of length {k}")
    if idx.numel() and (idx.min() < 0 or idx.max() >= K.shape[0]):
        raise ValueError(f"index entries must lie in 0…{K.shape[0] - 1}")
    q = {**DEFAULT_NODES, **(nodes or {})}
    out = torch.empty(idx.shape[0], dtype=_DTYPE)
    if idx.shape[0] == 0:
        return out
    pats = _patterns(idx)
    for pat in torch.unique(pats, dim=0):
        rows = torch.nonzero((pats == pat).all(dim=1)).squeeze(1)
        pattern = tuple(int(p) for p in pat)
        d = max(pattern) + 1
        first = [pattern.index(r) for r in range(d)]
        inputs = idx[rows][:, first]  # (t, d) distinct inputs in order of first appearance
        groups = [[j for j, p in enumerate(pattern) if p == r] for r in range(d)]
        if d == 1:
            diag = torch.diagonal(K)[inputs[:, 0]]
            out[rows] = expect(_product(fns, groups[0]), diag, kinks=tuple(kinks))
        elif d == 2:
            F, G = _product(fns, groups[0]), _product(fns, groups[1])
            full = expect_pairs(
                F, G, K, kinks_f=tuple(kinks), kinks_g=tuple(kinks), kmax=PAIR_KMAX
            )
            out[rows] = full[inputs[:, 0], inputs[:, 1]]
        else:
            if kinks:
                warnings.warn(
                    f"⟨f⋯f⟩ over {d} distinct inputs of a kinked function uses Gauss–Hermite "
                    f"cubature, accurate only to ~{KINKED_ERROR:g} relative",
                    RuntimeWarning,
                    stacklevel=2,
                )
            out[rows] = _expect_cubature(fns, K, inputs, pattern, q[d], bool(kinks), tol)
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
