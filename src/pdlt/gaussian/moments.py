"""Everything one layer step needs from the Gaussian engine, computed once per layer.

A step of any recursion of the book (kernel §4.3, four-point vertex and 1/n correction §4.3,
NTK mean eq. 8.50, NTK fluctuations §8.3–8.4, …) from layer ℓ to ℓ+1 asks for Gaussian
expectations under the kernel K = K^{(ℓ)} of layer ℓ. :class:`LayerMoments` holds one kernel
and computes each expectation the first time a step asks for it, then hands the same tensor to
every other step: the kernel map's ⟨σσ⟩ and the NTK's ⟨σσ⟩ are one computation.

All expectations are *C_W-free* Gaussian integrals; steps multiply by the layer's C_W, λ's.
Index conventions: ``ss[a, b] = ⟨σ_a σ_b⟩``; four-point tensors ``ssss[a, b, c, d] =
⟨σ_aσ_bσ_cσ_d⟩``, ``ddss[a, b, c, d] = ⟨σ'_aσ'_bσ_cσ_d⟩``; projections
``P_ss[a, b, c, d] = ⟨∂_c∂_d (σ_aσ_b)⟩`` (Stein, distributional derivatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from pdlt.activations import Activation
from pdlt.gaussian.pairs import expect_pairs, pair_expectation
from pdlt.gaussian.products import expect_product, multisets
from pdlt.gaussian.rules import (
    DTYPE,
    Tensor,
    expect,
    nodes_per_piece,
    split_rule,
)

FD_STEP = 1e-4


def input_pairs(N: int) -> tuple[Tensor, Tensor]:
    """Unordered input pairs p = (a ≤ b): ``pairs`` (P, 2) and ``index`` (N, N) with
    ``index[a, b] = index[b, a] = p``; P = N(N+1)/2."""
    a, b = torch.triu_indices(N, N)
    index = torch.empty((N, N), dtype=torch.long)
    index[a, b] = torch.arange(a.shape[0])
    index[b, a] = torch.arange(a.shape[0])
    return torch.stack([a, b], dim=1), index


def one_sided_difference(f0: Tensor, f1: Tensor, f2: Tensor, step: Tensor) -> Tensor:
    """Second-order one-sided difference f'(x) ≈ (−3f(x) + 4f(x+h) − f(x+2h)) / 2h."""
    return (-3 * f0 + 4 * f1 - f2) / (2 * step)


@dataclass(frozen=True)
class KernelMapDerivatives:
    """First derivatives of the C_W-free kernel map g_ab(K) = ⟨σ_aσ_b⟩_K in the symmetric
    variables (K_aa, K_bb, K_ab), per input pair, and — when asked for — their derivatives
    (``d_*``; the second derivatives of g).

    ``cross[a, b] = ∂g_ab/∂K_ab = ⟨σ'_aσ'_b⟩`` (Price's theorem), ``diag[a, b] = ∂g_ab/∂K_aa``
    for a ≠ b, ``self_[a] = dg_aa/dK_aa`` (χ_∥/C_W).
    """

    cross: Tensor
    diag: Tensor
    self_: Tensor
    d_cross_ab: Tensor | None = None  # ∂cross_ab/∂K_ab
    d_cross_aa: Tensor | None = None  # ∂cross_ab/∂K_aa
    d_diag_ab: Tensor | None = None  # ∂diag_ab/∂K_ab
    d_diag_aa: Tensor | None = None  # ∂diag_ab/∂K_aa
    d_diag_bb: Tensor | None = None  # ∂diag_ab/∂K_bb
    d_self: Tensor | None = None  # d²g_aa/dK_aa²


class LayerMoments:
    """Gaussian expectations under one layer's kernel K (N, N), each computed once on demand.
    The closed-form ⟨σσ⟩, ⟨σ'σ'⟩ are not checked for finiteness here: the layer walk checks
    every field it derives from them, one reduction each.

    Parameters
    ----------
    act:
        The activation σ.
    K:
        float64 (N, N) kernel K^{(ℓ)}.
    tol:
        Relative accuracy of the 3-/4-input cubature (:func:`pdlt.gaussian.expect_product`).
    layer:
        ℓ, for error messages.
    second_order:
        Whether :attr:`derivatives` should carry the kernel map's second derivatives too (one
        computation for both, when a step needs them).
    """

    def __init__(
        self,
        act: Activation,
        K: Tensor,
        *,
        tol: float = 1e-7,
        layer: int = 0,
        second_order: bool = False,
    ) -> None:
        self.act, self.K, self.tol, self.layer = act, K, tol, layer
        self.second_order = second_order
        self.N = K.shape[0]
        self._shared: dict = {}  # the closed forms' intermediates on K (θ, …), shared by ss, dd

    # ---- two-point expectations (N, N) -------------------------------------------------------

    @cached_property
    def ss(self) -> Tensor:
        """⟨σ_a σ_b⟩: the kernel map (book §4.3) and the λ_W term of the NTK (eq. 8.50)."""
        return pair_expectation(self.act, self.K, (0, 0), shared=self._shared, checked=False)

    @cached_property
    def dd(self) -> Tensor:
        """⟨σ'_a σ'_b⟩: χ_⊥ on the diagonal (book §5.1), the NTK's propagation factor."""
        return pair_expectation(self.act, self.K, (1, 1), shared=self._shared, checked=False)

    # ---- derivatives of the kernel map (book §4.3, the J and H of the vertex recursions) ------

    @cached_property
    def derivatives(self) -> KernelMapDerivatives:
        """∂g/∂K from first derivatives of σ only (exact for kinked σ): Price's theorem for
        K_ab and, for K_aa, the scaling identity (a ≠ b)

            ∂g_ab/∂K_aa = [⟨z_a σ'_a σ_b⟩ − K_ab ⟨σ'_a σ'_b⟩] / (2 K_aa),

        ∂g_aa/∂K_aa = ⟨z σ' σ⟩/K (χ_∥/C_W); the limits at a zero-variance input (z ≡ 0) are
        ½σ''(0)⟨σ_b⟩ and σ'(0)² + σ(0)σ''(0). With ``second_order`` the second derivatives
        are included (:attr:`second_derivatives`)."""
        if self.second_order:
            return self.second_derivatives
        return _first_derivatives(self.act, self.K, self.dd, self._zds(self.K, self.ss))

    def _zds(self, K: Tensor, ss: Tensor | None) -> Tensor:
        """⟨z_a σ'_a σ_b⟩ (= ⟨σ_aσ_b⟩ for scale-invariant σ, where z σ'(z) = σ(z))."""
        act = self.act
        if act.homogeneous is not None:
            return ss if ss is not None else pair_expectation(act, K, (0, 0))
        return expect_pairs(
            lambda z: z * act.d1(z), act.fn, K, kinks_f=act.kinks, kinks_g=act.kinks
        )

    @cached_property
    def second_derivatives(self) -> KernelMapDerivatives:
        """The first derivatives and, by one-sided second-order finite differences of them,
        the second derivatives — from ONE call of the pair routines on a 5N-input kernel whose
        blocks are the inputs and four perturbed copies of them (steps 1e-4 of the kernel scale,
        truncation and round-off both ≲1e-8 relative):

        * copies d1, d2: K_aa → K_aa + h_a, + 2h_a (entry (copy a, b) is the pair (a, b) with
          only K_aa moved);
        * copies o1, o2: cross-covariance with the originals K_ab + s_ab, + 2s_ab, s_ab toward
          smaller |K_ab| (so every 2×2 block used stays positive semi-definite).

        Pair expectations depend only on their 2×2 block, so the unused blocks need no meaning.
        """
        K, N = self.K, self.N
        d = torch.diagonal(K)
        kscale = torch.clamp(d.max(), min=1e-300)
        h_d = FD_STEP * torch.where(d > 0, d, kscale)
        pair_scale = torch.sqrt(torch.clamp(torch.outer(d, d), min=0.0))
        pair_scale = torch.where(pair_scale > 0, pair_scale, kscale)
        eye = torch.eye(N, dtype=torch.bool)
        s = torch.where(eye, 0.0, FD_STEP * pair_scale * torch.where(K >= 0, -1.0, 1.0))
        big = K.repeat(5, 5)
        for i, shift in enumerate((h_d, 2 * h_d), start=1):  # d-copies
            big[i * N : (i + 1) * N, i * N : (i + 1) * N] = K + torch.diag(shift)
        for j, cross in enumerate((K + s, K + 2 * s), start=3):  # o-copies
            big[:N, j * N : (j + 1) * N] = cross
            big[j * N : (j + 1) * N, :N] = cross.T
        first = _first_derivatives(
            self.act, big, pair_expectation(self.act, big, (1, 1)), self._zds(big, None)
        )

        def blk(m: Tensor, i: int, j: int) -> Tensor:
            return m[i * N : (i + 1) * N, j * N : (j + 1) * N]

        A, Jd, chi = first.cross, first.diag, first.self_
        step_off = torch.where(eye, 1.0, s)
        return KernelMapDerivatives(
            cross=blk(A, 0, 0),
            diag=blk(Jd, 0, 0),
            self_=chi[:N],
            d_cross_ab=one_sided_difference(blk(A, 0, 0), blk(A, 0, 3), blk(A, 0, 4), step_off),
            d_cross_aa=one_sided_difference(blk(A, 0, 0), blk(A, 1, 0), blk(A, 2, 0), h_d[:, None]),
            d_diag_ab=one_sided_difference(blk(Jd, 0, 0), blk(Jd, 0, 3), blk(Jd, 0, 4), step_off),
            d_diag_aa=one_sided_difference(
                blk(Jd, 0, 0), blk(Jd, 1, 0), blk(Jd, 2, 0), h_d[:, None]
            ),
            d_diag_bb=one_sided_difference(
                blk(Jd, 0, 0), blk(Jd, 0, 1), blk(Jd, 0, 2), h_d[None, :]
            ),
            d_self=one_sided_difference(chi[:N], chi[N : 2 * N], chi[2 * N : 3 * N], h_d),
        )

    # ---- four-point expectations ------------------------------------------------------------

    @cached_property
    def ssss_pairs(self) -> Tensor:
        """⟨σ_aσ_bσ_cσ_d⟩ over unordered pairs (P, P): entry (p, q) for p = (a, b), q = (c, d).
        Computed once per multiset {a, b, c, d} (C(N+3, 4) of them) and scattered; Wick's
        theorem for the linear activation (exact), the truncated-moment recursion for the relu
        family (:mod:`pdlt.gaussian.orthant`, ≲1e-9)."""
        N, K, act = self.N, self.K, self.act
        pairs, _ = input_pairs(N)
        a, b = pairs[:, 0][:, None], pairs[:, 1][:, None]
        c, d = pairs[:, 0][None, :], pairs[:, 1][None, :]
        if act.homogeneous == (1.0, 1.0):
            return K[a, b] * K[c, d] + K[a, c] * K[b, d] + K[a, d] * K[b, c]
        sets = multisets(N, 4)
        # the relu family: truncated moments and orthant probabilities, no quadrature
        E4 = expect_product(
            act.fn, K, sets, kinks=act.kinks, tol=self.tol, homogeneous=act.homogeneous
        )
        code = torch.tensor([N**3, N**2, N, 1])
        key = sets @ code  # sorted multisets → sorted codes
        quad = torch.sort(torch.stack(torch.broadcast_tensors(a, b, c, d), dim=-1), dim=-1).values
        return E4[torch.searchsorted(key, quad @ code)]

    @cached_property
    def fluctuation_terms(self) -> dict[str, Tensor]:
        """What the NTK-fluctuation step needs beyond ⟨σσ⟩, ⟨σ'σ'⟩ (book §8.3–8.4):

        four-point functions ``ssss``, ``ddss`` (σ' in slots 1, 2), ``dddd`` (N, N, N, N) and
        the Stein projections ``P_ss``, ``P_dd`` = ⟨∂_β1∂_β2(σ_pσ_q)⟩, ⟨∂_β1∂_β2(σ'_pσ'_q)⟩
        (N, N, N, N) and ``P1`` = ⟨∂_β(σ'_aσ_b)⟩ (N, N, N). A projection of a function of z_p,
        z_q vanishes unless every β is p or q and needs only their 2×2 block, so all of them,
        and every four-point entry over ≤ 2 distinct inputs, come from the kink-split rule of
        each input and each pair (exact for kinked σ). Entries over 3–4 distinct inputs use
        :func:`pdlt.gaussian.expect_product`.
        """
        return _fluctuation_terms(self)

    @cached_property
    def local(self) -> LocalRules:
        """The 1-D rule of every input and 2-D rule of every pair (:class:`LocalRules`)."""
        return LocalRules(self)


def _first_derivatives(act: Activation, K: Tensor, dd: Tensor, zds: Tensor) -> KernelMapDerivatives:
    d = torch.diagonal(K)
    ok = d > 1e-300
    safe = torch.where(ok, d, 1.0)
    diag = (zds - K * dd) / (2 * safe[:, None])
    self_ = torch.diagonal(zds) / safe
    if not bool(ok.all()):  # limits at a zero-variance input z_a ≡ 0 (x_a = 0 with C_b = 0)
        zero = torch.zeros(1, dtype=DTYPE)
        s0, s1, s2 = act.fn(zero), act.d1(zero), act.d2(zero)
        mean_sigma = expect(act.fn, torch.clamp(d, min=0.0), kinks=act.kinks)
        diag = torch.where(ok[:, None], diag, 0.5 * s2 * mean_sigma)
        self_ = torch.where(ok, self_, s1 * s1 + s0 * s2)
    return KernelMapDerivatives(cross=dd, diag=diag, self_=self_)


class LocalRules:
    """The kink-split rule of every input (1-D) and of every pair of inputs (2-D) of one layer's
    kernel, with the node values of σ and its derivatives: everything that depends on at most
    two inputs — two-point means, Stein projections of any order, four-point functions over ≤ 2
    distinct inputs — is a weighted sum over these nodes (exact for kinked σ through Stein's
    lemma). The projections need an invertible 2×2 block per pair."""

    def __init__(self, m: LayerMoments) -> None:
        act, K, N = m.act, m.K, m.N
        s = torch.sqrt(torch.clamp(torch.diagonal(K), min=0.0))
        if float(s.min()) <= 0.0:
            raise ValueError(
                f"an input has zero variance at layer {m.layer} (K_αα = 0): the O(1/n) NTK "
                "statistics are degenerate there. Use inputs with C_b > 0 or x ≠ 0."
            )
        q = nodes_per_piece(float(s.max()))
        self.act, self.K, self.N, self.tol = act, K, N, m.tol
        ar = torch.arange(N)
        self.single = split_rule(K[ar, ar][:, None, None], act.kinks, q, with_inverse=True)
        ia, ib = torch.triu_indices(N, N, offset=1)
        self.ix = torch.stack([ia, ib], 1)  # (P, 2)
        self.pair = None
        if ia.numel():
            sub = K[self.ix[:, :, None], self.ix[:, None, :]]
            rho = sub[:, 0, 1] / torch.sqrt(sub[:, 0, 0] * sub[:, 1, 1])
            if float((1 - rho * rho).min()) < 1e-12:
                worst = float(rho[torch.argmax(rho.abs())])
                raise ValueError(
                    f"two inputs are (nearly) parallel at layer {m.layer} (correlation "
                    f"{worst:.8f}); the O(1/n) NTK recursions need an invertible kernel. Use "
                    "linearly independent inputs or fewer layers."
                )
            # inputs far from parallel (checked above): no shadow cuts needed
            self.pair = split_rule(sub, act.kinks, q, with_inverse=True, shadows=False)
        self._values: dict[int, tuple[Tensor, Tensor | None]] = {}

    def values(self, order: int) -> tuple[Tensor, Tensor | None]:
        """σ^{(order)} at the nodes: (N, m) single-input and (P, m, 2) pair values."""
        if order not in self._values:
            f = self.act.derivative(order)
            self._values[order] = (
                f(self.single.z[..., 0]),
                f(self.pair.z) if self.pair is not None else None,
            )
        return self._values[order]

    def mean(self, fa: int, fb: int) -> Tensor:
        """⟨σ^{(fa)}(z_a) σ^{(fb)}(z_b)⟩ for all (a, b), (N, N)."""
        N, ix = self.N, self.ix
        out = torch.empty((N, N), dtype=DTYPE)
        (sa, pa), (sb, pb) = self.values(fa), self.values(fb)
        ar = torch.arange(N)
        out[ar, ar] = self.single.mean(sa * sb)
        if self.pair is not None:
            out[ix[:, 0], ix[:, 1]] = self.pair.mean(pa[..., 0] * pb[..., 1])
            out[ix[:, 1], ix[:, 0]] = self.pair.mean(pa[..., 1] * pb[..., 0])
        return out

    def projection(self, fa: int, fb: int, order: int) -> Tensor:
        """⟨∂_β1⋯∂_βk (σ^{(fa)}(z_a) σ^{(fb)}(z_b))⟩ as a dense (N, N, N^k) tensor, k =
        ``order`` ∈ {1, 2, 4}; zero unless every β is a or b (book §4.3's Gaussian projections,
        eq. 4.119's ⟨σσ(zz − K)⟩ for k = 2)."""
        N, ix = self.N, self.ix
        out = torch.zeros((N, N) + (N,) * order, dtype=DTYPE)
        (sa, pa), (sb, pb) = self.values(fa), self.values(fb)
        ar = torch.arange(N)
        out[(ar, ar) + (ar,) * order] = self.single.projection(sa * sb, order).reshape(N, -1)[:, 0]
        if self.pair is not None:
            for first, second in ((0, 1), (1, 0)):
                proj = self.pair.projection(pa[..., first] * pb[..., second], order)  # (P,2,…)
                beta = torch.cartesian_prod(*[torch.arange(2)] * order).reshape(-1, order)
                flat = proj.reshape(proj.shape[0], -1)  # (P, 2^order)
                for c, combo in enumerate(beta):
                    idx = (ix[:, first], ix[:, second]) + tuple(ix[:, int(j)] for j in combo)
                    out[idx] = flat[:, c]
        return out

    def four_point(self, orders: tuple[int, int, int, int]) -> Tensor:
        """⟨σ^{(o1)}_a σ^{(o2)}_b σ^{(o3)}_c σ^{(o4)}_d⟩ for all (a, b, c, d), (N, N, N, N): entries
        over ≤ 2 distinct inputs from the local rules, the rest by
        :func:`pdlt.gaussian.expect_product`, computed once per class of index tuples that the
        symmetry of equal slot functions identifies."""
        N, ix = self.N, self.ix
        out = torch.empty((N,) * 4, dtype=DTYPE)
        vals = [self.values(o) for o in orders]
        ar = torch.arange(N)
        out[ar, ar, ar, ar] = self.single.mean(vals[0][0] * vals[1][0] * vals[2][0] * vals[3][0])
        if self.pair is not None:
            g = [v[1] for v in vals]
            block = torch.einsum("tm,tmi,tmj,tmk,tml->tijkl", self.pair.w, *g)  # (P, 2, 2, 2, 2)
            out[
                ix[:, :, None, None, None],
                ix[:, None, :, None, None],
                ix[:, None, None, :, None],
                ix[:, None, None, None, :],
            ] = block
        if N >= 3:
            index = torch.cartesian_prod(*[torch.arange(N)] * 4)
            distinct = (torch.sort(index, dim=1).values.diff(dim=1) != 0).sum(dim=1) + 1
            many = index[distinct >= 3]
            canon = many.clone()
            for o in set(orders):  # slots with the same function are interchangeable
                slots = [j for j, oj in enumerate(orders) if oj == o]
                canon[:, slots] = torch.sort(many[:, slots], dim=1).values
            uniq, inverse = torch.unique(canon, dim=0, return_inverse=True)
            fns = [self.act.derivative(o) for o in orders]
            vals4 = expect_product(fns, self.K, uniq, kinks=self.act.kinks, tol=self.tol)
            out[many[:, 0], many[:, 1], many[:, 2], many[:, 3]] = vals4[inverse]
        return out


def _fluctuation_terms(m: LayerMoments) -> dict[str, Tensor]:
    loc = m.local
    return {
        "P_ss": loc.projection(0, 0, 2),
        "P_dd": loc.projection(1, 1, 2),
        "P1": loc.projection(1, 0, 1),
        "ssss": loc.four_point((0, 0, 0, 0)),
        "ddss": loc.four_point((1, 1, 0, 0)),
        "dddd": loc.four_point((1, 1, 1, 1)),
    }
