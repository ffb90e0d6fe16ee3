"""Finite width at initialization: the four-point vertex V^{(ℓ)} and the 1/n kernel correction
K^{{1}(ℓ)} (book §4.2–4.5; theory note 01 §4).

At width n the preactivations of layer ℓ are nearly Gaussian. Through order 1/n (with n_{ℓ−1} the
width of the layer that feeds layer ℓ)

    E[z_{i1;α1} z_{i2;α2}] = δ_{i1 i2} [K_{α1α2} + K^{{1}}_{α1α2}/n_{ℓ−1}]
    E[z_{i1;α1} ⋯ z_{i4;α4}]|_connected
        = (1/n_{ℓ−1}) [δ_{i1i2}δ_{i3i4} V_{(α1α2)(α3α4)} + δ_{i1i3}δ_{i2i4} V_{(α1α3)(α2α4)}
                       + δ_{i1i4}δ_{i2i3} V_{(α1α4)(α2α3)}]

Both follow from the kernel map F (K^{(ℓ+1)} = F(K^{(ℓ)})) by the book's recursions (§4.3),
written here in the derivative form of theory note 01 §4.3: index unordered input pairs p = (a ≤ b),
store V as a symmetric P×P matrix V_{pq} = V_{(ab)(cd)}, J = ∂F/∂K (Jacobian in the symmetric
variables K_p), H = ∂²F/∂K∂K:

    V^{(ℓ+1)}      = C_W² Cov_{K^{(ℓ)}}[σ_aσ_b, σ_cσ_d] + (n_ℓ/n_{ℓ−1}) J V^{(ℓ)} Jᵀ
    K^{{1}(ℓ+1)}   = (n_ℓ/n_{ℓ−1}) [J K^{{1}(ℓ)} + ½ H : V^{(ℓ)}]

with V^{(1)} = K^{{1}(1)} = 0 (the first layer is exactly Gaussian). The Jacobian needs only
first derivatives of σ (Price's theorem and a scaling identity, so kinked activations are
exact): for a ≠ b

    ∂F_ab/∂K_ab = C_W ⟨σ'_a σ'_b⟩,     ∂F_ab/∂K_aa = C_W [⟨z_a σ'_a σ_b⟩ − K_ab ⟨σ'_a σ'_b⟩] / (2 K_aa)

and ∂F_aa/∂K_aa = C_W ⟨z σ' σ⟩/K = χ_∥. H is a one-sided second-order finite difference of these
(steps 1e-4 of the kernel scale: truncation and round-off both ≲1e-8 relative), taken toward
smaller |K_ab| and larger K_aa so that every perturbed 2×2 kernel stays positive semi-definite.
The four-input expectations ⟨σσσσ⟩ come from :func:`pdlt.gaussian4.expect_product`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.activations import Activation
from pdlt.gaussian import expect_pairs, pair_expectation
from pdlt.gaussian4 import PAIR_KMAX, expect_product, multisets
from pdlt.network import MLP, validate_inputs
from pdlt.theory.kernel import kernel_layers

Tensor = torch.Tensor
_DTYPE = torch.float64
_FD_STEP = 1e-4


# --------------------------------------------------------------------------------------------
# input pairs


def input_pairs(N: int) -> tuple[Tensor, Tensor]:
    """Unordered input pairs p = (a ≤ b): ``pairs`` (P, 2) and ``index`` (N, N) with
    ``index[a, b] = index[b, a] = p``; P = N(N+1)/2."""
    a, b = torch.triu_indices(N, N)
    index = torch.empty((N, N), dtype=torch.long)
    index[a, b] = torch.arange(a.shape[0])
    index[b, a] = torch.arange(a.shape[0])
    return torch.stack([a, b], dim=1), index


def pairs_to_tensor(Vp: np.ndarray | Tensor, N: int) -> np.ndarray:
    """(…, P, P) over unordered pairs → (…, N, N, N, N) with V[a, b, c, d] = V_{(ab)(cd)}."""
    _, index = input_pairs(N)
    Vp = np.asarray(Vp)
    idx = index.numpy()
    return Vp[..., idx[:, :, None, None], idx[None, None, :, :]]


# --------------------------------------------------------------------------------------------
# the pieces of the recursions


def _mean_activation(act: Activation, var: Tensor) -> Tensor:
    """⟨σ(z)⟩ for z ~ N(0, var), per input."""
    from pdlt.gaussian import expect

    return expect(act.fn, var, kinks=act.kinks)


def _jacobian_parts(act: Activation, C_W: float, K: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """First derivatives of the kernel map at K, per input pair (theory note 01 §4.3).

    Returns ``(A, Jd, chi)``: A[a, b] = ∂F_ab/∂K_ab = C_W⟨σ'_aσ'_b⟩; Jd[a, b] = ∂F_ab/∂K_aa for
    a ≠ b; chi[a] = ∂F_aa/∂K_aa = χ_∥(K_aa).
    """
    if (1, 1) in act.closed_forms:
        A = C_W * pair_expectation(act, K, (1, 1))
    else:
        A = C_W * expect_pairs(act.d1, None, K, kinks_f=act.kinks, kmax=PAIR_KMAX)
    if act.homogeneous is not None:  # z σ'(z) = σ(z) for σ = a₊z (z≥0), a₋z (z<0)
        D = C_W * pair_expectation(act, K, (0, 0))
    else:
        D = C_W * expect_pairs(
            lambda z: z * act.d1(z), act.fn, K, kinks_f=act.kinks, kinks_g=act.kinks, kmax=PAIR_KMAX
        )  # D[a, b] = C_W ⟨z_a σ'_a σ_b⟩
    d = torch.diagonal(K)
    ok = d > 1e-300
    safe = torch.where(ok, d, 1.0)
    zero = torch.zeros(1, dtype=_DTYPE)
    # limits at a zero-variance input z_a ≡ 0 (e.g. x_a = 0 with C_b = 0)
    s0, s1, s2 = act.fn(zero), act.d1(zero), act.d2(zero)
    # z_a ≡ 0: ∂F_ab/∂K_aa = ½ C_W σ''(0) ⟨σ_b⟩ (Price's theorem at zero variance)
    mean_sigma = _mean_activation(act, d)
    Jd = torch.where(
        ok[:, None], (D - K * A) / (2 * safe[:, None]), 0.5 * C_W * s2 * mean_sigma[None, :]
    )
    chi = torch.where(ok, torch.diagonal(D) / safe, C_W * (s1 * s1 + s0 * s2))
    return A, Jd, chi


def kernel_jacobian(act: Activation, C_W: float, K: Tensor) -> Tensor:
    """J_{pq} = ∂F_p/∂K_q over unordered input pairs (P, P), the Jacobian of the kernel map
    K^{(ℓ)} → K^{(ℓ+1)} in the symmetric variables (theory note 01 §4.3; book §4.3)."""
    return _assemble_jacobian(*_jacobian_parts(act, C_W, K))


def _assemble_jacobian(A: Tensor, Jd: Tensor, chi: Tensor) -> Tensor:
    N = A.shape[0]
    pairs, index = input_pairs(N)
    a, b = pairs[:, 0], pairs[:, 1]
    P = pairs.shape[0]
    J = torch.zeros((P, P), dtype=_DTYPE)
    off = a != b
    p = torch.arange(P)
    J[p[off], p[off]] = A[a[off], b[off]]
    J[p[off], index[a[off], a[off]]] = Jd[a[off], b[off]]
    J[p[off], index[b[off], b[off]]] = Jd[b[off], a[off]]
    J[p[~off], p[~off]] = chi[a[~off]]
    return J


def _one_sided(f0: Tensor, f1: Tensor, f2: Tensor, step: Tensor) -> Tensor:
    """Second-order one-sided difference f'(x) ≈ (−3f(x) + 4f(x+h) − f(x+2h)) / 2h."""
    return (-3 * f0 + 4 * f1 - f2) / (2 * step)


@dataclass(frozen=True)
class _Jet:
    """First derivatives of the kernel map at K (``A``, ``Jd``, ``chi`` of
    :func:`_jacobian_parts`) and the second derivatives ½H:V needs, per input pair."""

    A: Tensor
    Jd: Tensor
    chi: Tensor
    dA_ab: Tensor  # ∂A_ab/∂K_ab
    dA_aa: Tensor  # ∂A_ab/∂K_aa
    dJd_ab: Tensor  # ∂Jd_ab/∂K_ab
    dJd_aa: Tensor  # ∂Jd_ab/∂K_aa
    dJd_bb: Tensor  # ∂Jd_ab/∂K_bb
    dchi: Tensor  # dχ_∥/dK_aa


def _jet(act: Activation, C_W: float, K: Tensor) -> _Jet:
    """The kernel map's first derivatives and, by one-sided finite differences of them, its
    second derivatives — all from ONE call of the pair routines on a 5N-input kernel whose
    blocks are the inputs and four perturbed copies of them:

    * copies d1, d2: K_aa → K_aa + h_a, + 2h_a (entry (copy a, b) is the pair (a, b) with only
      K_aa moved);
    * copies o1, o2: cross-covariance with the originals K_ab + s_ab, + 2s_ab, s_ab toward smaller
      |K_ab| (so every 2×2 block used stays positive semi-definite).

    Pair expectations depend only on their 2×2 block, so the unused blocks need no meaning.
    """
    N = K.shape[0]
    d = torch.diagonal(K)
    kscale = torch.clamp(d.max(), min=1e-300)
    h_d = _FD_STEP * torch.where(d > 0, d, kscale)
    pair_scale = torch.sqrt(torch.clamp(torch.outer(d, d), min=0.0))
    pair_scale = torch.where(pair_scale > 0, pair_scale, kscale)
    eye = torch.eye(N, dtype=torch.bool)
    s = torch.where(eye, 0.0, _FD_STEP * pair_scale * torch.where(K >= 0, -1.0, 1.0))
    blocks = [K, K + s, K + 2 * s]  # cross-covariances of originals with (orig, o1, o2)
    big = torch.empty((5 * N, 5 * N), dtype=_DTYPE)
    big[:] = K.repeat(5, 5)
    for i, shift in enumerate((h_d, 2 * h_d), start=1):  # d-copies
        big[i * N : (i + 1) * N, i * N : (i + 1) * N] = K + torch.diag(shift)
    for j, cross in enumerate(blocks[1:], start=3):  # o-copies
        big[:N, j * N : (j + 1) * N] = cross
        big[j * N : (j + 1) * N, :N] = cross.T
    A, Jd, chi = _jacobian_parts(act, C_W, big)

    def blk(m: Tensor, i: int, j: int) -> Tensor:
        return m[i * N : (i + 1) * N, j * N : (j + 1) * N]

    step_off = torch.where(eye, 1.0, s)
    return _Jet(
        A=blk(A, 0, 0),
        Jd=blk(Jd, 0, 0),
        chi=chi[:N],
        dA_ab=_one_sided(blk(A, 0, 0), blk(A, 0, 3), blk(A, 0, 4), step_off),
        dA_aa=_one_sided(blk(A, 0, 0), blk(A, 1, 0), blk(A, 2, 0), h_d[:, None]),
        dJd_ab=_one_sided(blk(Jd, 0, 0), blk(Jd, 0, 3), blk(Jd, 0, 4), step_off),
        dJd_aa=_one_sided(blk(Jd, 0, 0), blk(Jd, 1, 0), blk(Jd, 2, 0), h_d[:, None]),
        dJd_bb=_one_sided(blk(Jd, 0, 0), blk(Jd, 0, 1), blk(Jd, 0, 2), h_d[None, :]),
        dchi=_one_sided(chi[:N], chi[N : 2 * N], chi[2 * N : 3 * N], h_d),
    )


def half_hessian_contraction(jet: _Jet, Vp: Tensor) -> Tensor:
    """½ H:V per pair, ½ Σ_{q,s} V_{qs} ∂²F_p/∂K_q∂K_s (theory note 01 §4.3), as an (N, N) matrix.

    F_ab depends on (K_aa, K_bb, K_ab) only, so H_p is a 3×3 matrix over the variables
    (aa, bb, ab) for a ≠ b, and the single number dχ_∥/dK for a = b.
    """
    N = jet.A.shape[0]
    _, index = input_pairs(N)
    ar = torch.arange(N)
    # H entries of pair (a, b); symmetrized where two finite-difference routes exist
    H_ab_ab = jet.dA_ab
    H_aa_ab = 0.5 * (jet.dJd_ab + jet.dA_aa)
    H_aa_aa = jet.dJd_aa
    H_aa_bb = 0.5 * (jet.dJd_bb + jet.dJd_bb.T)
    V_aa_bb = Vp[index[ar, ar]][:, index[ar, ar]]  # V_{(aa)(bb)}
    V_ab_ab = Vp[index, index]  # V_{(ab)(ab)}
    V_aa_ab = Vp[index[ar, ar][:, None], index]  # V_{(aa)(ab)}
    V_self = torch.diagonal(V_aa_bb)  # V_{(aa)(aa)}
    term = (
        H_ab_ab * V_ab_ab
        + H_aa_aa * V_self[:, None]
        + H_aa_aa.T * V_self[None, :]
        + 2 * H_aa_ab * V_aa_ab
        + 2 * H_aa_ab.T * V_aa_ab.T
        + 2 * H_aa_bb * V_aa_bb
    )
    out = 0.5 * term
    out[ar, ar] = 0.5 * jet.dchi * V_self
    return out


def four_point_covariance(act: Activation, C_W: float, K: Tensor, *, tol: float = 1e-7) -> Tensor:
    """C_W² Cov_K[σ_aσ_b, σ_cσ_d] = C_W²(⟨σ_aσ_bσ_cσ_d⟩ − ⟨σ_aσ_b⟩⟨σ_cσ_d⟩) over unordered
    pairs (P, P): the fresh-noise term of the V recursion (book §4.3).

    ⟨σσσσ⟩ is computed once per multiset {a, b, c, d} (C(N+3, 4) of them) and scattered.
    The linear activation uses Wick's theorem (exact).
    """
    N = K.shape[0]
    pairs, _ = input_pairs(N)
    a, b = pairs[:, 0], pairs[:, 1]
    c, d = a[None, :], b[None, :]
    a, b = a[:, None], b[:, None]
    if act.homogeneous == (1.0, 1.0):  # Wick: Cov[z_a z_b, z_c z_d] = K_ac K_bd + K_ad K_bc
        return C_W**2 * (K[a, c] * K[b, d] + K[a, d] * K[b, c])
    sets = multisets(N, 4)
    E4 = expect_product(act.fn, K, sets, kinks=act.kinks, tol=tol)
    key = sets @ torch.tensor([N**3, N**2, N, 1])  # sorted multisets, sorted codes
    quad = torch.sort(torch.stack(torch.broadcast_tensors(a, b, c, d), dim=-1), dim=-1).values
    pos = torch.searchsorted(key, quad @ torch.tensor([N**3, N**2, N, 1]))
    S = pair_expectation(act, K, (0, 0))
    return C_W**2 * (E4[pos] - S[a, b] * S[c, d])


# --------------------------------------------------------------------------------------------
# results


def _widths_prev(net: MLP) -> np.ndarray:
    """n_{ℓ−1} for ℓ = 1…L: the width whose inverse sets layer ℓ's finite-width corrections."""
    return np.asarray(net.widths[:-1], dtype=float)


@dataclass(frozen=True, eq=False)
class FourPointVertex:
    """The four-point vertex of every layer (book §4.2–4.5).

    Attributes
    ----------
    V:
        float64 (L, N, N, N, N), ``V[l-1, a, b, c, d]`` = V^{(l)}_{(ab)(cd)} in the book's
        normalization: the connected four-point function of layer l is (1/n_{l−1}) × (δδV + two
        permutations). Symmetric under a↔b, c↔d and (ab)↔(cd), not fully symmetric.
    V_pairs:
        The same as a symmetric (L, P, P) matrix over the unordered pairs ``pairs`` (P, 2).
    K:
        The infinite-width kernel (L, N, N).
    net, x:
        The network and inputs (N, n_0).
    """

    V: np.ndarray
    V_pairs: np.ndarray
    pairs: np.ndarray
    K: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("V", "excess_kurtosis")

    @property
    def widths(self) -> np.ndarray:
        """n_{ℓ−1} for ℓ = 1…L."""
        return _widths_prev(self.net)

    @property
    def normalized(self) -> np.ndarray:
        """V^{(ℓ)}_{(aa)(aa)} / (K^{(ℓ)}_aa)² per layer and input, (L, N): the book's
        dimensionless measure of non-Gaussianity per unit 1/n (§4.3, §5.4); at criticality it
        grows linearly with ℓ (tanh → 2ℓ/3, relu 5(ℓ−1), linear 2(ℓ−1))."""
        N = self.K.shape[1]
        a = np.arange(N)
        Kd = self.K[:, a, a]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(Kd > 0, self.V[:, a, a, a, a] / np.where(Kd > 0, Kd, 1) ** 2, 0.0)

    @property
    def excess_kurtosis(self) -> np.ndarray:
        """Single-neuron excess kurtosis E[z⁴]/E[z²]² − 3 = 3V_{(aa)(aa)}/(n_{ℓ−1}K_aa²) at the
        network's widths, (L, N), leading order in 1/n (theory note 01 §4.1)."""
        return 3 * self.normalized / self.widths[:, None]

    @property
    def effective_depth(self) -> np.ndarray:
        """ℓ/n_{ℓ−1} per layer, (L,): the expansion parameter of the 1/n expansion (§5.4)."""
        return np.arange(1, self.net.depth + 1) / self.widths

    def to_frame(self) -> pd.DataFrame:
        """One row per layer and pair of unordered pairs (p ≤ q): V, and the pairs' inputs."""
        L, P, _ = self.V_pairs.shape
        p, q = np.triu_indices(P)
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(1, L + 1), p.size),
                "a": np.tile(self.pairs[p, 0], L),
                "b": np.tile(self.pairs[p, 1], L),
                "c": np.tile(self.pairs[q, 0], L),
                "d": np.tile(self.pairs[q, 1], L),
                "V": self.V_pairs[:, p, q].reshape(-1),
            }
        )

    def __repr__(self) -> str:
        L, N = self.K.shape[:2]
        return (
            f"FourPointVertex(depth={L}, inputs={N}, "
            f"V^(L)/K²={np.round(self.normalized[-1], 4)}, n={self.widths[-1]:g})"
        )


@dataclass(frozen=True, eq=False)
class KernelCorrection:
    """The 1/n correction to the two-point function (book §4.3, §4.5; the NLO metric).

    Attributes
    ----------
    K1:
        float64 (L, N, N): E[z_{i;α}z_{i;β}] = K + K1/n_{ℓ−1} + O(1/n²) (the theory note's G^{{1}}).
    K:
        The infinite-width kernel (L, N, N).
    V_pairs, pairs:
        The four-point vertex it was computed with (see :class:`FourPointVertex`).
    net, x:
        The network and inputs.
    """

    K1: np.ndarray
    K: np.ndarray
    V_pairs: np.ndarray
    pairs: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("K1",)

    def to_frame(self) -> pd.DataFrame:
        return long_frame({"K": self.K, "K1": self.K1})

    def __repr__(self) -> str:
        L, N, _ = self.K1.shape
        return f"KernelCorrection(depth={L}, inputs={N}, K1^(L)_diag={np.round(np.diag(self.K1[-1]), 6)})"


@dataclass(frozen=True, eq=False)
class Metric:
    """The finite-width two-point function G = K + K1/n_{ℓ−1} at the network's widths.

    Attributes
    ----------
    G, K, K1:
        float64 (L, N, N).
    net, x:
        The network and inputs.
    """

    G: np.ndarray
    K: np.ndarray
    K1: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("G",)

    def to_frame(self) -> pd.DataFrame:
        return long_frame({"G": self.G, "K": self.K, "K1": self.K1})

    def __repr__(self) -> str:
        L, N, _ = self.G.shape
        return f"Metric(depth={L}, inputs={N}, G^(L)_diag={np.round(np.diag(self.G[-1]), 6)})"


# --------------------------------------------------------------------------------------------
# the recursions


@torch.no_grad()
def finite_width_layers(
    net: MLP, x: Tensor, *, correction: bool, tol: float = 1e-7
) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
    """K^{(ℓ)}, V^{(ℓ)} (as P×P) and, if ``correction``, K^{{1}(ℓ)} for ℓ = 1…L (book §4.3)."""
    Ks = kernel_layers(net, x)
    N = x.shape[0]
    P = N * (N + 1) // 2
    _, index = input_pairs(N)
    Vs = [torch.zeros((P, P), dtype=_DTYPE)]
    K1s = [torch.zeros((N, N), dtype=_DTYPE)] if correction else None
    widths = net.widths
    act = net.activation
    for layer in range(2, net.depth + 1):  # step ℓ → ℓ+1 with ℓ = layer − 1
        K, V = Ks[layer - 2], Vs[-1]
        C_W = net.C_W[layer - 1]
        ratio = widths[layer - 1] / widths[layer - 2]  # n_ℓ / n_{ℓ−1}
        jet = _jet(act, C_W, K) if correction else None
        J = _assemble_jacobian(jet.A, jet.Jd, jet.chi) if jet else kernel_jacobian(act, C_W, K)
        Vs.append(four_point_covariance(act, C_W, K, tol=tol) + ratio * J @ V @ J.T)
        if correction:
            pairs, _ = input_pairs(N)
            g1 = K1s[-1][pairs[:, 0], pairs[:, 1]]
            step = J @ g1
            half_hv = half_hessian_contraction(jet, V)
            new = torch.empty((N, N), dtype=_DTYPE)
            new_p = ratio * (step + half_hv[pairs[:, 0], pairs[:, 1]])
            new[pairs[:, 0], pairs[:, 1]] = new_p
            new[pairs[:, 1], pairs[:, 0]] = new_p
            K1s.append(new)
    for name, arrs in (("V", Vs), ("K1", K1s or [])):
        if not all(torch.isfinite(t).all() for t in arrs):
            raise FloatingPointError(
                f"{name} is not finite: the network overflows (smaller C_W or fewer layers)"
            )
    return Ks, Vs, K1s


def four_point_vertex(net: MLP, x: np.ndarray | Tensor, *, tol: float = 1e-7) -> FourPointVertex:
    """The four-point vertex V^{(ℓ)}_{(α1α2)(α3α4)} of every layer (book §4.2–4.3, §4.5).

    Parameters
    ----------
    net:
        The network spec (per-layer C_b, C_W and non-uniform widths are handled: the propagated
        term carries n_ℓ/n_{ℓ−1}).
    x:
        Inputs (N, n_0).
    tol:
        Target relative accuracy of the 3-/4-input Gaussian expectations for smooth σ
        (:func:`pdlt.gaussian4.expect_product`).

    Returns
    -------
    FourPointVertex
        ``.V`` (L, N, N, N, N), ``.V_pairs`` (L, P, P), ``.excess_kurtosis`` (L, N).

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=10, width=100, input_dim=1)
    >>> fw = pdlt.four_point_vertex(net, [[1.0]])
    >>> fw.normalized[-1]        # V/K² at ℓ = 10: 5.5235 (theory note 01 §10 table A)
    """
    xt = validate_inputs(net, x)
    Ks, Vs, _ = finite_width_layers(net, xt, correction=False, tol=tol)
    N = xt.shape[0]
    Vp = torch.stack(Vs).numpy()
    return FourPointVertex(
        V=pairs_to_tensor(Vp, N),
        V_pairs=Vp,
        pairs=input_pairs(N)[0].numpy(),
        K=torch.stack(Ks).numpy(),
        net=net,
        x=xt.numpy(),
    )


def kernel_correction(net: MLP, x: np.ndarray | Tensor, *, tol: float = 1e-7) -> KernelCorrection:
    """The 1/n correction K^{{1}(ℓ)} to the two-point function of every layer (book §4.3, §4.5).

    E[z_{i;α} z_{i;β}] = K_{αβ} + K^{{1}}_{αβ}/n_{ℓ−1} + O(1/n²), from
    K^{{1}(ℓ+1)} = (n_ℓ/n_{ℓ−1})[J K^{{1}(ℓ)} + ½ H:V^{(ℓ)}], K^{{1}(1)} = 0 (theory note 01 §4.3).
    Zero for scale-invariant activations on a single input (§7.1); the off-diagonal part is not
    zero for ReLU at finite angle.

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=10, width=100, input_dim=1)
    >>> pdlt.kernel_correction(net, [[1.0]]).K1[-1]     # −0.10713375 (note 01 §10 table A)
    """
    xt = validate_inputs(net, x)
    Ks, Vs, K1s = finite_width_layers(net, xt, correction=True, tol=tol)
    return KernelCorrection(
        K1=torch.stack(K1s).numpy(),
        K=torch.stack(Ks).numpy(),
        V_pairs=torch.stack(Vs).numpy(),
        pairs=input_pairs(xt.shape[0])[0].numpy(),
        net=net,
        x=xt.numpy(),
    )


def metric(net: MLP, x: np.ndarray | Tensor, *, tol: float = 1e-7) -> Metric:
    """The two-point function through order 1/n, G^{(ℓ)} = K^{(ℓ)} + K^{{1}(ℓ)}/n_{ℓ−1}, at the
    network's actual widths (book §4.3: the metric; non-uniform widths via n_ℓ/n_{ℓ−1} in the
    recursion and n_{ℓ−1} here)."""
    kc = kernel_correction(net, x, tol=tol)
    n = _widths_prev(net)[:, None, None]
    return Metric(G=kc.K + kc.K1 / n, K=kc.K, K1=kc.K1, net=net, x=kc.x)
