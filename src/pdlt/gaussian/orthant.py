"""Gaussian expectations of products of homogeneous (relu-family) activations in closed form.

For σ(z) = a₊ z (z ≥ 0), a₋ z (z < 0) — relu, leaky relu, the linear map — a product over a
tuple of inputs with multiplicities m_r is Π_r z_r^{m_r} (b_r + c_r 1{z_r > 0}) with
b_r = a₋^{m_r}, c_r = a₊^{m_r} − a₋^{m_r}; expanded over the subsets S of inputs that carry
the indicator, every term is a *truncated moment*

    F(k, S; Σ) = E[ Π_r z_r^{k_r} 1{z_S > 0} ],        z ~ N(0, Σ),  d ≤ 4 inputs.

Stein's lemma E[z_i g(z)] = Σ_j Σ_ij E[∂_j g(z)], applied to g = z^{k−e_i} 1{z_S > 0}, gives the
recursion (Kan & Robotti 2017, "On moments of folded and truncated multivariate normal
distributions", at truncation point 0, where every conditional mean stays 0)

    F(k, S) = Σ_j Σ_ij k'_j F(k' − e_j, S)
              + Σ_{j ∈ S, k'_j = 0} Σ_ij φ_j(0) F(k'_{−j}, S∖j; Σ | z_j = 0),     k' = k − e_i,

where φ_j(0) = 1/√(2π Σ_jj) and Σ | z_j = 0 is the Schur complement. It ends at orthant
probabilities P(z_S > 0), closed for |S| ≤ 3 (Sheppard: 1/4 + asin ρ/2π; 1/8 + Σ asin ρ/4π)
and for |S| = 4 a 1-D integral (Plackett's reduction, :func:`orthant_probability`). Every
coefficient Σ_ij φ_j(0) is bounded by √(Σ_ii/2π) and every P by 1, so no term is large and
nothing cancels catastrophically; all operations are batched over tuples (no loop over them).

Accuracy (tests/test_orthant.py): ≲1e-12 relative against the Wick/arc-cosine closed forms,
and ≲1e-9 against high-order kink-split quadrature on generic, nearly parallel (cosine 0.999)
and deep-network kernels, and on singular ones (linearly dependent inputs: regularized and
extrapolated, see :func:`homogeneous_product`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from pdlt.gaussian.rules import DTYPE, Tensor, cholesky

_TWO_PI = 2.0 * math.pi
# pieces in v (τ = 1 − v²) of the 4-D orthant path integral, by the smallest eigenvalue λ of
# the correlation matrix: the integrand's singularities lie at v ~ i√λ, so the rule is graded
# toward v = 0 down to that scale. Measured with 10 nodes per piece against 40 on finer pieces
# (tests/test_orthant.py): ≲4e-11 absolute for λ ≥ 1e-4, ≲2e-9 below (round-off in the
# conditional covariances of a nearly singular R).
_V_TIERS = (
    (1e-2, (0.0, 0.1, 0.35, 1.0)),
    (1e-4, (0.0, 5e-3, 0.025, 0.1, 0.35, 1.0)),
    (0.0, (0.0, 1e-5, 1e-4, 1e-3, 5e-3, 0.025, 0.1, 0.35, 1.0)),
)
ORTHANT_NODES = 10  # Gauss–Legendre nodes per piece
DEGENERATE = 1e-10  # Cholesky pivot / diagonal below which a sub-kernel counts as singular
REGULARIZE = 1e-9  # relative diagonal shift of singular sub-kernels (then extrapolated to 0)


@lru_cache(maxsize=8)
def _path_rule(edges: tuple[float, ...], q: int) -> tuple[Tensor, Tensor]:
    """Nodes v and weights of ∫_0^1 dτ, τ = 1 − v²: Gauss–Legendre in v on the pieces
    ``edges``."""
    x, w = np.polynomial.legendre.leggauss(q)
    v, wv = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        half = (hi - lo) / 2
        vv = lo + half * (x + 1)
        v.append(vv)
        wv.append(half * w * 2 * vv)  # dτ = 2v dv
    v, wv = np.concatenate(v), np.concatenate(wv)
    return torch.as_tensor(v, dtype=DTYPE), torch.as_tensor(wv, dtype=DTYPE)


def _correlation(S: Tensor) -> Tensor:
    """Correlation matrices of a batch of covariances; a zero-variance coordinate gets
    correlation 0 with the others (the limit of independent noise, the convention the
    recursion's terms share)."""
    d = torch.sqrt(torch.clamp(torch.diagonal(S, dim1=-2, dim2=-1), min=0.0))
    safe = torch.where(d > 0, d, 1.0)
    R = S / (safe[..., :, None] * safe[..., None, :])
    R = torch.where((d[..., :, None] > 0) & (d[..., None, :] > 0), R, 0.0)
    return torch.clamp(R, -1.0, 1.0)


_PAIRS4 = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))


def _orthant4(R: Tensor, q: int = ORTHANT_NODES) -> Tensor:
    """P(z > 0) for z ~ N(0, R), R (t, 4, 4) correlation matrices: :func:`_orthant4_path`
    with the pieces of each tuple's tier of smallest eigenvalue (``_V_TIERS``)."""
    lam = torch.linalg.eigvalsh(R)[:, 0]
    out = torch.empty(R.shape[0], dtype=DTYPE)
    todo = torch.ones(R.shape[0], dtype=torch.bool)
    for lo, edges in _V_TIERS:
        sel = todo & (lam >= lo) if lo > 0 else todo
        if bool(sel.any()):
            out[sel] = _orthant4_path(R[sel], *_path_rule(edges, q))
        todo &= ~sel
    return out


def _orthant4_path(R: Tensor, v: Tensor, wv: Tensor) -> Tensor:
    """P(z > 0) for z ~ N(0, R), R (t, 4, 4) correlation matrices (Plackett 1954): along
    R(τ) = I + τ(R − I),

        P_4(R) = 1/16 + ∫_0^1 Σ_{i<j} R_ij ∂P/∂ρ_ij(R(τ)) dτ,
        ∂P/∂ρ_ij = φ_2(0, 0; τR_ij) · P(z_k > 0, z_l > 0 | z_i = z_j = 0),

    the conditional a 2-D orthant probability 1/4 + asin(ρ_kl|ij)/2π; its constant part
    integrates to asin(R_ij)/8π. R(τ) is positive definite for τ < 1, so the integrand is
    smooth on [0, 1); its singularities (R singular, |R_ij| → 1) lie beyond τ = 1 and are of
    square-root type, smoothed by τ = 1 − v² and resolved by pieces graded toward v = 0
    (measured ≲1e-11 absolute down to smallest eigenvalues 1e-9 of R)."""
    tau = (1 - v * v)[:, None]  # (m, 1)
    s2 = (v * v)[:, None]
    t2 = tau * tau
    idx = torch.tensor(_PAIRS4)
    i, j, k, l = idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]
    r = R[:, i, j]  # (t, 6)
    r_ik, r_il, r_jk, r_jl = R[:, i, k], R[:, i, l], R[:, j, k], R[:, j, l]
    a = r.abs()[:, None, :]
    # the conditional covariance of (z_k, z_l) given z_i = z_j = 0 under R(τ), times
    # det = 1 − τ²r² = ((1 − |r|) + v²|r|)(1 + τ|r|) (no cancellation as |r| → 1); the
    # coefficients are per tuple (t, 1, 6), the nodes broadcast along m; in-place below
    # because this is the hot loop of the relu vertex (t·m·6 ≈ 10⁶ entries per layer)
    det = torch.addcmul(1 - a, s2, a).mul_(torch.addcmul(torch.ones_like(a), tau, a))
    c_kk = t2 * torch.addcmul(
        (r_ik**2 + r_jk**2)[:, None, :], tau, (-2 * r * r_ik * r_jk)[:, None, :]
    )
    c_kk.neg_().add_(det)
    c_ll = t2 * torch.addcmul(
        (r_il**2 + r_jl**2)[:, None, :], tau, (-2 * r * r_il * r_jl)[:, None, :]
    )
    c_ll.neg_().add_(det)
    y = (-r * (r_ik * r_jl + r_jk * r_il))[:, None, :]
    c_kl = t2 * torch.addcmul((r_ik * r_il + r_jk * r_jl)[:, None, :], tau, y)
    c_kl = torch.addcmul(c_kl.neg_(), tau * R[:, k, l][:, None, :], det)
    # c_kk, c_ll > 0 for τ < 1 (R(τ) ⪰ (1 − τ) I); singular R is regularized by the caller
    rho = c_kl.mul_(c_kk.mul_(c_ll).clamp_(min=1e-300).rsqrt_()).clamp_(-1.0, 1.0)
    f = rho.asin_().mul_(det.rsqrt_())
    integral = torch.einsum("tmp,m,tp->t", f, wv, r)
    return 1.0 / 16 + torch.asin(r).sum(dim=1) / (8 * math.pi) + integral / (4 * math.pi**2)


def orthant_probability(S: Tensor) -> Tensor:
    """P(z > 0) for z ~ N(0, S), S a batch (t, d, d) of covariances, d ≤ 4: closed forms for
    d ≤ 3 (Sheppard), a graded 1-D Gauss–Legendre integral for d = 4 (:func:`_orthant4`;
    ≲4e-11 absolute when the correlation matrix's smallest eigenvalue is ≥ 1e-4, ≲2e-9 down
    to 1e-8; an exactly singular 4×4 S loses accuracy (5e-7 measured for rank 1) — the
    caller :func:`homogeneous_product` regularizes those)."""
    t, d = S.shape[0], S.shape[-1]
    if d == 0:
        return torch.ones(t, dtype=DTYPE)
    if d == 1:
        return torch.full((t,), 0.5, dtype=DTYPE)
    R = _correlation(S)
    if d == 4:
        return _orthant4(R)
    iu = torch.triu_indices(d, d, offset=1)
    s = torch.asin(R[:, iu[0], iu[1]]).sum(dim=1)
    return 0.5**d + s / (math.pi * 2 ** (d - 1))


def _condition(S: Tensor, j: int) -> Tensor:
    """The covariance of the other coordinates given z_j = 0 (Schur complement), (t, d−1, d−1);
    a zero-variance z_j conditions nothing."""
    keep = [c for c in range(S.shape[-1]) if c != j]
    sjj = S[:, j, j]
    safe = torch.where(sjj > 0, sjj, 1.0)
    col = S[:, keep, j]
    out = S[:, keep][:, :, keep] - torch.where(
        (sjj > 0)[:, None, None], col[:, :, None] * col[:, None, :] / safe[:, None, None], 0.0
    )
    return out


class _Truncated:
    """The recursion F(k, S) over one batch of covariances, memoized per (conditioned set,
    exponents, truncation set)."""

    def __init__(self, S: Tensor) -> None:
        self.d = S.shape[-1]
        self.cov = {(): S}  # conditioned labels (sorted) → covariance over the remaining labels
        self.memo: dict[tuple, Tensor] = {}

    def covariance(self, cond: tuple[int, ...]) -> Tensor:
        if cond not in self.cov:
            # condition on the last label given the rest (any order gives the same matrix)
            prev = cond[:-1]
            S = self.covariance(prev)
            labels = [c for c in range(self.d) if c not in prev]
            self.cov[cond] = _condition(S, labels.index(cond[-1]))
        return self.cov[cond]

    def __call__(self, cond: tuple[int, ...], k: tuple[int, ...], trunc: frozenset[int]) -> Tensor:
        """E[Π z_r^{k_r} 1{z_trunc > 0} | z_cond = 0] (the densities of the conditioned
        coordinates at 0 are in the callers' coefficients); k indexed by the original labels,
        0 for conditioned ones."""
        key = (cond, k, trunc)
        if key in self.memo:
            return self.memo[key]
        labels = [c for c in range(self.d) if c not in cond]
        S = self.covariance(cond)
        pos = {c: n for n, c in enumerate(labels)}
        powered = [c for c in labels if k[c] > 0]
        if not powered:
            sel = [pos[c] for c in sorted(trunc)]
            out = orthant_probability(S[:, sel][:, :, sel])
        else:
            # prefer an untruncated coordinate: its own j = i term then vanishes
            i = max(powered, key=lambda c: (c not in trunc, k[c]))
            kp = list(k)
            kp[i] -= 1
            out = torch.zeros(S.shape[0], dtype=DTYPE)
            for j in labels:
                sij = S[:, pos[i], pos[j]]
                if kp[j] > 0:
                    km = list(kp)
                    km[j] -= 1
                    out = out + kp[j] * sij * self(cond, tuple(km), trunc)
                elif j in trunc:
                    sjj = S[:, pos[j], pos[j]]
                    coef = torch.where(
                        sjj > 0, sij / torch.sqrt(_TWO_PI * torch.where(sjj > 0, sjj, 1.0)), 0.0
                    )
                    sub = self(tuple(sorted(cond + (j,))), tuple(kp), trunc - {j})
                    out = out + coef * sub
        self.memo[key] = out
        return out


def truncated_moment(S: Tensor, k: tuple[int, ...], trunc: frozenset[int] | set[int]) -> Tensor:
    """E[Π_r z_r^{k_r} 1{z_r > 0 for r in trunc}] for z ~ N(0, S), S (t, d, d), d ≤ 4."""
    return _Truncated(S)((), tuple(k), frozenset(trunc))


def homogeneous_product(
    a_plus: float, a_minus: float, K: Tensor, inputs: Tensor, mult: tuple[int, ...]
) -> Tensor:
    """⟨Π_r σ(z_{inputs[t, r]})^{mult[r]}⟩_K for σ(z) = a₊ z (z ≥ 0), a₋ z (z < 0): the
    expansion over indicator subsets into :func:`truncated_moment` terms (module docstring).
    ``inputs`` (t, d) distinct inputs per tuple, ``mult`` their multiplicities (d ≤ 4).

    Sub-kernels singular to round-off (:func:`degenerate`: exactly parallel or linearly
    dependent inputs), where conditional correlations are 0/0, are evaluated at
    S + ε diag(S) and S + 2ε diag(S), ε = ``REGULARIZE``, and extrapolated linearly to ε = 0
    (the remainder is O(ε^{3/2}) — the arc-cosine-type terms of nearly parallel inputs — ≲1e-13;
    checked against exact identities and a sphere average in tests/test_orthant.py)."""
    S = K[inputs[:, :, None], inputs[:, None, :]]
    bad = degenerate(S)
    out = _homogeneous(a_plus, a_minus, S, mult)
    if bool(bad.any()):
        Sb = S[bad]
        D = torch.diag_embed(torch.diagonal(Sb, dim1=-2, dim2=-1))
        e1 = _homogeneous(a_plus, a_minus, Sb + REGULARIZE * D, mult)
        e2 = _homogeneous(a_plus, a_minus, Sb + 2 * REGULARIZE * D, mult)
        out[bad] = 2 * e1 - e2
    return out


def _homogeneous(
    a_plus: float,
    a_minus: float,
    S: Tensor,
    mult: tuple[int, ...],
    powers: tuple[int, ...] | None = None,
) -> Tensor:
    d = S.shape[-1]
    rec = _Truncated(S)
    b = [a_minus**m for m in mult]
    c = [a_plus**m - a_minus**m for m in mult]
    k = tuple(mult) if powers is None else tuple(powers)
    out = torch.zeros(S.shape[0], dtype=DTYPE)
    for mask in range(2**d):
        subset = frozenset(r for r in range(d) if mask >> r & 1)
        coef = math.prod(c[r] if r in subset else b[r] for r in range(d))
        if coef != 0.0:
            out = out + coef * rec((), k, subset)
    return out


def homogeneous_mixed_product(
    a_plus: float,
    a_minus: float,
    K: Tensor,
    inputs: Tensor,
    mult: tuple[int, ...],
    powers: tuple[int, ...],
) -> Tensor:
    """⟨Π_r σ(z_r)^{powers[r]} σ'(z_r)^{mult[r] − powers[r]}⟩_K for the relu family: σ and σ'
    are both a± on either side of 0, so a variable with ``mult[r]`` slots of which
    ``powers[r]`` hold σ is z_r^{powers[r]} (b_r + c_r 1{z_r > 0}) with the coefficients of
    :func:`homogeneous_product` (whose special case powers = mult this is); singular
    sub-kernels regularized and extrapolated the same way."""
    S = K[inputs[:, :, None], inputs[:, None, :]]
    bad = degenerate(S)
    out = _homogeneous(a_plus, a_minus, S, mult, powers)
    if bool(bad.any()):
        Sb = S[bad]
        D = torch.diag_embed(torch.diagonal(Sb, dim1=-2, dim2=-1))
        e1 = _homogeneous(a_plus, a_minus, Sb + REGULARIZE * D, mult, powers)
        e2 = _homogeneous(a_plus, a_minus, Sb + 2 * REGULARIZE * D, mult, powers)
        out[bad] = 2 * e1 - e2
    return out


def degenerate(S: Tensor) -> Tensor:
    """Covariances (t, d, d) singular to round-off: a Cholesky pivot ≤ ``DEGENERATE`` of its
    diagonal entry. (t,) bool."""
    L = cholesky(S)
    piv = torch.diagonal(L, dim1=-2, dim2=-1) ** 2
    diag = torch.diagonal(S, dim1=-2, dim2=-1)
    return (piv <= DEGENERATE * diag).any(dim=1)
