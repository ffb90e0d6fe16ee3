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
from pdlt.gaussian.rules import DTYPE, Tensor, expect, nodes_per_piece, split_rule

_FD_STEP = 1e-4


def input_pairs(N: int) -> tuple[Tensor, Tensor]:
    """Unordered input pairs p = (a ≤ b): ``pairs`` (P, 2) and ``index`` (N, N) with
    ``index[a, b] = index[b, a] = p``; P = N(N+1)/2."""
    a, b = torch.triu_indices(N, N)
    index = torch.empty((N, N), dtype=torch.long)
    index[a, b] = torch.arange(a.shape[0])
    index[b, a] = torch.arange(a.shape[0])
    return torch.stack([a, b], dim=1), index


def _one_sided(f0: Tensor, f1: Tensor, f2: Tensor, step: Tensor) -> Tensor:
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

    # ---- two-point expectations (N, N) -------------------------------------------------------

    @cached_property
    def ss(self) -> Tensor:
        """⟨σ_a σ_b⟩: the kernel map (book §4.3) and the λ_W term of the NTK (eq. 8.50)."""
        return pair_expectation(self.act, self.K, (0, 0))

    @cached_property
    def dd(self) -> Tensor:
        """⟨σ'_a σ'_b⟩: χ_⊥ on the diagonal (book §5.1), the NTK's propagation factor."""
        return pair_expectation(self.act, self.K, (1, 1))

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
        h_d = _FD_STEP * torch.where(d > 0, d, kscale)
        pair_scale = torch.sqrt(torch.clamp(torch.outer(d, d), min=0.0))
        pair_scale = torch.where(pair_scale > 0, pair_scale, kscale)
        eye = torch.eye(N, dtype=torch.bool)
        s = torch.where(eye, 0.0, _FD_STEP * pair_scale * torch.where(K >= 0, -1.0, 1.0))
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
            d_cross_ab=_one_sided(blk(A, 0, 0), blk(A, 0, 3), blk(A, 0, 4), step_off),
            d_cross_aa=_one_sided(blk(A, 0, 0), blk(A, 1, 0), blk(A, 2, 0), h_d[:, None]),
            d_diag_ab=_one_sided(blk(Jd, 0, 0), blk(Jd, 0, 3), blk(Jd, 0, 4), step_off),
            d_diag_aa=_one_sided(blk(Jd, 0, 0), blk(Jd, 1, 0), blk(Jd, 2, 0), h_d[:, None]),
            d_diag_bb=_one_sided(blk(Jd, 0, 0), blk(Jd, 0, 1), blk(Jd, 0, 2), h_d[None, :]),
            d_self=_one_sided(chi[:N], chi[N : 2 * N], chi[2 * N : 3 * N], h_d),
        )

    # ---- four-point expectations ------------------------------------------------------------

    @cached_property
    def ssss_pairs(self) -> Tensor:
        """⟨σ_aσ_bσ_cσ_d⟩ over unordered pairs (P, P): entry (p, q) for p = (a, b), q = (c, d).
        Computed once per multiset {a, b, c, d} (C(N+3, 4) of them) and scattered; Wick's
        theorem for the linear activation (exact)."""
        N, K, act = self.N, self.K, self.act
        pairs, _ = input_pairs(N)
        a, b = pairs[:, 0][:, None], pairs[:, 1][:, None]
        c, d = pairs[:, 0][None, :], pairs[:, 1][None, :]
        if act.homogeneous == (1.0, 1.0):
            return K[a, b] * K[c, d] + K[a, c] * K[b, d] + K[a, d] * K[b, c]
        sets = multisets(N, 4)
        E4 = expect_product(act.fn, K, sets, kinks=act.kinks, tol=self.tol)
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


def _first_derivatives(act: Activation, K: Tensor, dd: Tensor, zds: Tensor) -> KernelMapDerivatives:
    d = torch.diagonal(K)
    ok = d > 1e-300
    safe = torch.where(ok, d, 1.0)
    zero = torch.zeros(1, dtype=DTYPE)
    s0, s1, s2 = act.fn(zero), act.d1(zero), act.d2(zero)
    mean_sigma = expect(act.fn, torch.clamp(d, min=0.0), kinks=act.kinks)
    diag = torch.where(ok[:, None], (zds - K * dd) / (2 * safe[:, None]), 0.5 * s2 * mean_sigma)
    self_ = torch.where(ok, torch.diagonal(zds) / safe, s1 * s1 + s0 * s2)
    return KernelMapDerivatives(cross=dd, diag=diag, self_=self_)


def _fluctuation_terms(m: LayerMoments) -> dict[str, Tensor]:
    act, K, N = m.act, m.K, m.N
    s = torch.sqrt(torch.clamp(torch.diagonal(K), min=0.0))
    if float(s.min()) <= 0.0:
        raise ValueError(
            f"ntk_fluctuations: an input has zero variance at layer {m.layer} (K_αα = 0); its "
            "fluctuations are degenerate. Use inputs with C_b > 0 or x ≠ 0."
        )
    q = nodes_per_piece(float(s.max()))
    P4 = torch.zeros((N,) * 4, dtype=DTYPE)
    out = {"P_ss": P4, "P_dd": P4.clone(), "P1": torch.zeros((N,) * 3, dtype=DTYPE)}
    four = {key: torch.empty((N,) * 4, dtype=DTYPE) for key in ("ssss", "ddss", "dddd")}
    # single inputs: 1-D rules
    ar = torch.arange(N)
    rule = split_rule(K[ar, ar][:, None, None], act.kinks, q, with_inverse=True)
    sv, dv = act(rule.z[..., 0]), act.d1(rule.z[..., 0])
    for key, v in (("P_ss", sv * sv), ("P_dd", dv * dv)):
        out[key][ar, ar, ar, ar] = rule.projection(v, 2)[:, 0, 0]
    out["P1"][ar, ar, ar] = rule.projection(dv * sv, 1)[:, 0]
    for key in four:
        g = [sv if c == "s" else dv for c in key]
        four[key][ar, ar, ar, ar] = rule.mean(g[0] * g[1] * g[2] * g[3])
    # pairs a < b: 2-D rules
    ia, ib = torch.triu_indices(N, N, offset=1)
    if ia.numel():
        sub = K[torch.stack([ia, ib], 1)[:, :, None], torch.stack([ia, ib], 1)[:, None, :]]
        rho = sub[:, 0, 1] / torch.sqrt(sub[:, 0, 0] * sub[:, 1, 1])
        if float((1 - rho * rho).min()) < 1e-12:
            worst = float(rho[torch.argmax(rho.abs())])
            raise ValueError(
                f"ntk_fluctuations: two inputs are (nearly) parallel at layer {m.layer} "
                f"(correlation {worst:.8f}); the fluctuation recursions need an invertible "
                "kernel. Use linearly independent inputs or fewer layers."
            )
        # inputs far from parallel (checked above): no shadow cuts needed
        rule = split_rule(sub, act.kinks, q, with_inverse=True, shadows=False)
        sv, dv = act(rule.z), act.d1(rule.z)  # (P, m, 2)
        ix = torch.stack([ia, ib], 1)  # (P, 2)
        for key, v in (("P_ss", sv[..., 0] * sv[..., 1]), ("P_dd", dv[..., 0] * dv[..., 1])):
            proj = rule.projection(v, 2)  # (P, 2, 2) over (β1, β2) ∈ {a, b}²
            for i in range(2):
                for j in range(2):
                    out[key][ia, ib, ix[:, i], ix[:, j]] = proj[:, i, j]
                    out[key][ib, ia, ix[:, i], ix[:, j]] = proj[:, i, j]
        for first, second in ((0, 1), (1, 0)):
            proj = rule.projection(dv[..., first] * sv[..., second], 1)  # (P, 2)
            for i in range(2):
                out["P1"][ix[:, first], ix[:, second], ix[:, i]] = proj[:, i]
        # four-point entries over the two inputs of each pair: every slot a or b
        for key in four:
            g = [sv if c == "s" else dv for c in key]
            block = torch.einsum("tm,tmi,tmj,tmk,tml->tijkl", rule.w, *g)  # (P, 2, 2, 2, 2)
            i, j, k, l_ = (
                ix[:, :, None, None, None],
                ix[:, None, :, None, None],
                ix[:, None, None, :, None],
                ix[:, None, None, None, :],
            )
            four[key][i, j, k, l_] = block
    if N >= 3:
        index = torch.cartesian_prod(*[torch.arange(N)] * 4)
        distinct = (torch.sort(index, dim=1).values.diff(dim=1) != 0).sum(dim=1) + 1
        many = index[distinct >= 3]
        f = {"s": act.fn, "d": act.d1}
        for key in four:
            if key == "ddss":  # symmetric within slots (1, 2) and within (3, 4)
                canon = torch.cat(
                    [torch.sort(many[:, :2], 1).values, torch.sort(many[:, 2:], 1).values], 1
                )
            else:  # fully symmetric
                canon = torch.sort(many, dim=1).values
            uniq, inverse = torch.unique(canon, dim=0, return_inverse=True)
            vals = expect_product([f[c] for c in key], K, uniq, kinks=act.kinks, tol=m.tol)
            four[key][many[:, 0], many[:, 1], many[:, 2], many[:, 3]] = vals[inverse]
    out.update(four)
    return out
