"""Finite width at initialization: the four-point vertex V^{(ℓ)} and the 1/n kernel correction
K^{{1}(ℓ)} (book §4.2–4.5).

At width n the preactivations of layer ℓ are nearly Gaussian. Through order 1/n (with n_{ℓ−1} the
width of the layer that feeds layer ℓ)

    E[z_{i1;α1} z_{i2;α2}] = δ_{i1 i2} [K_{α1α2} + K^{{1}}_{α1α2}/n_{ℓ−1}]
    E[z_{i1;α1} ⋯ z_{i4;α4}]|_connected
        = (1/n_{ℓ−1}) [δ_{i1i2}δ_{i3i4} V_{(α1α2)(α3α4)} + δ_{i1i3}δ_{i2i4} V_{(α1α3)(α2α4)}
                       + δ_{i1i4}δ_{i2i3} V_{(α1α4)(α2α3)}]

Both follow from the kernel map F (K^{(ℓ+1)} = F(K^{(ℓ)})) by the book's recursions (§4.3),
written here in derivative form: index unordered input pairs p = (a ≤ b), store V as a
symmetric P×P matrix V_{pq} = V_{(ab)(cd)}, J = ∂F/∂K (the Jacobian in the symmetric variables
K_p), H = ∂²F/∂K∂K:

    V^{(ℓ+1)}      = C_W² Cov_{K^{(ℓ)}}[σ_aσ_b, σ_cσ_d] + (n_ℓ/n_{ℓ−1}) J V^{(ℓ)} Jᵀ
    K^{{1}(ℓ+1)}   = (n_ℓ/n_{ℓ−1}) [J K^{{1}(ℓ)} + ½ H : V^{(ℓ)}]

with V^{(1)} = K^{{1}(1)} = 0 (the first layer is exactly Gaussian). This is the book's
(C_W²/4) V ⟨∂∂(σσ)⟩⟨∂∂(σσ)⟩ form, since J_{(ab),(cd)} = (C_W/2)(2 − δ_cd)⟨∂_c∂_d(σ_aσ_b)⟩ by
Stein's lemma; J needs only first derivatives of σ (:class:`~pdlt.gaussian.LayerMoments`), so
kinked activations are exact. The steps are :data:`VERTEX` and :data:`CORRECTION` of the layer
walk (:mod:`pdlt.theory.layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments, input_pairs
from pdlt.gaussian.moments import KernelMapDerivatives
from pdlt.network import MLP, validate_inputs
from pdlt.theory.kernel import KERNEL
from pdlt.theory.layers import (
    LayerState,
    Recursion,
    check_max_memory,
    check_tol,
    gram,
    propagate,
    width_ratio,
)

Tensor = torch.Tensor
_DTYPE = torch.float64


def pairs_to_tensor(Vp: np.ndarray | Tensor, N: int) -> np.ndarray | Tensor:
    """(…, P, P) over unordered pairs → (…, N, N, N, N) with V[a, b, c, d] = V_{(ab)(cd)}
    (a numpy array for numpy input, a tensor for a tensor)."""
    _, index = input_pairs(N)
    if isinstance(Vp, Tensor):
        return Vp[..., index[:, :, None, None], index[None, None, :, :]]
    idx = index.numpy()
    return np.asarray(Vp)[..., idx[:, :, None, None], idx[None, None, :, :]]


# --------------------------------------------------------------------------------------------
# the steps


def kernel_jacobian(d: KernelMapDerivatives, C_W: float) -> Tensor:
    """J_{pq} = ∂F_p/∂K_q over unordered input pairs (P, P): the Jacobian of the kernel map
    K^{(ℓ)} → K^{(ℓ+1)} in the symmetric variables (book §4.3). F_ab depends on K_aa, K_bb, K_ab
    only, so each row has at most three entries."""
    N = d.cross.shape[0]
    pairs, index = input_pairs(N)
    a, b = pairs[:, 0], pairs[:, 1]
    P = pairs.shape[0]
    J = torch.zeros((P, P), dtype=_DTYPE)
    off = a != b
    p = torch.arange(P)
    J[p[off], p[off]] = d.cross[a[off], b[off]]
    J[p[off], index[a[off], a[off]]] = d.diag[a[off], b[off]]
    J[p[off], index[b[off], b[off]]] = d.diag[b[off], a[off]]
    J[p[~off], p[~off]] = d.self_[a[~off]]
    return C_W * J


def half_hessian_contraction(d: KernelMapDerivatives, C_W: float, Vp: Tensor) -> Tensor:
    """½ H:V per pair, ½ Σ_{q,s} V_{qs} ∂²F_p/∂K_q∂K_s (book §4.3), as an (N, N) matrix.

    F_ab depends on (K_aa, K_bb, K_ab) only, so H_p is a 3×3 matrix over the variables
    (aa, bb, ab) for a ≠ b, and the single number d²F_aa/dK_aa² for a = b.
    """
    N = d.cross.shape[0]
    _, index = input_pairs(N)
    ar = torch.arange(N)
    # H entries of pair (a, b); symmetrized where two finite-difference routes exist
    H_ab_ab = d.d_cross_ab
    H_aa_ab = 0.5 * (d.d_diag_ab + d.d_cross_aa)
    H_aa_aa = d.d_diag_aa
    H_aa_bb = 0.5 * (d.d_diag_bb + d.d_diag_bb.T)
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
    out[ar, ar] = 0.5 * d.d_self * V_self
    return C_W * out


def gaussian_pair_covariance(K: Tensor) -> Tensor:
    """M_{(ab)(cd)} = K_ac K_bd + K_ad K_bc over unordered pairs (P, P): Cov(z_a z_b, z_c z_d)
    of one Gaussian neuron with covariance K."""
    pairs, _ = input_pairs(K.shape[0])
    a, b = pairs[:, 0], pairs[:, 1]
    return K[a[:, None], a[None, :]] * K[b[:, None], b[None, :]] + (
        K[a[:, None], b[None, :]] * K[b[:, None], a[None, :]]
    )


def residual_jacobian(net: MLP, layer: int, m: LayerMoments) -> Tensor:
    """J + γ²·1 (P, P): the Jacobian of the residual kernel map F(K) + γ²K (book eq. B.11;
    γ = 0 for a plain layer)."""
    J = kernel_jacobian(m.derivatives, net.C_W[layer - 1])
    gamma = net.skip[layer - 1]
    if gamma != 0.0:
        J = J + gamma**2 * torch.eye(J.shape[0], dtype=J.dtype)
    return J


def vertex_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """V^{(ℓ+1)} = C_W² Cov_K[σ_aσ_b, σ_cσ_d] + (n_ℓ/n_{ℓ−1}) J V^{(ℓ)} Jᵀ (book §4.3).

    A residual layer, z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γ z^{(ℓ)} (book eqs. B.24–B.25 with ξ = 1):
    J → J + γ²·1, and the fresh term gains the correlation of the skip path γ² z_a z_b with the
    new metric C_W σ_c σ_d of the same neuron, γ² C_W [Cov_K(z_az_b, σ_cσ_d) + (ab ↔ cd)]
    = γ² (M Jᵀ + J M) with M = Cov_K(z_az_b, z_cz_d) (Stein's lemma, Cov_K(z_az_b, f) =
    Σ_ef K_ae K_bf ⟨∂_e∂_f f⟩, in the symmetric variables of J).
    """
    C_W = net.C_W[layer - 1]
    pairs, _ = input_pairs(m.N)
    ss = m.ss[pairs[:, 0], pairs[:, 1]]
    fresh = C_W**2 * (m.ssss_pairs - torch.outer(ss, ss))
    gamma = net.skip[layer - 1]
    if gamma != 0.0:
        J0 = kernel_jacobian(m.derivatives, C_W)
        M = gaussian_pair_covariance(m.K)
        fresh = fresh + gamma**2 * (M @ J0.T + J0 @ M)
    J = residual_jacobian(net, layer, m)
    return {"V": fresh + width_ratio(net, layer) * J @ prev.V @ J.T}


def correction_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """K^{{1}(ℓ+1)} = (n_ℓ/n_{ℓ−1}) [J K^{{1}(ℓ)} + ½ H:V^{(ℓ)}] (book §4.3); a residual layer
    has J + γ²·1 (its γ²K term is linear, so H is unchanged; book eq. B.8)."""
    C_W = net.C_W[layer - 1]
    pairs, index = input_pairs(m.N)
    J = residual_jacobian(net, layer, m)
    step = (J @ prev.K1[pairs[:, 0], pairs[:, 1]])[index]
    return {
        "K1": width_ratio(net, layer)
        * (step + half_hessian_contraction(m.derivatives, C_W, prev.V))
    }


def _is_odd(act: object) -> bool:
    """σ(−z) = −σ(z) on a grid (linear, tanh, sin, erf …)."""
    z = torch.linspace(0.01, 6.0, 64, dtype=_DTYPE)
    return bool(torch.allclose(act(-z), -act(z), rtol=1e-10, atol=1e-12))


def check_residual_vertex(net: MLP) -> None:
    """The residual V recursion (J + γ², fresh term + γ²(MJᵀ + JM)) closes on V only when a
    neuron's own history enters E[f(z^{(ℓ+1)}) | z^{(ℓ)}] through z^{(ℓ)2} alone; for a non-odd σ
    (ReLU, GELU, …) the skip path carries sign information the recursion misses, and Monte Carlo
    shows V/K² growing faster than it predicts (ReLU, γ = 0.5, n = 128: ×1.6 by layer 6).
    NotImplementedError there rather than a wrong number."""
    if net.residual and not _is_odd(net.activation):
        raise NotImplementedError(
            f"the four-point vertex of a residual MLP is derived here for odd activations "
            f"(linear, tanh, …) only; {net.activation!r} is not odd: its skip path carries "
            "single-neuron history that V alone does not close on (see "
            "pdlt.theory.vertex.check_residual_vertex). The kernel and the NTK mean of residual "
            "networks are available for any activation."
        )


def _zeros_pairs(net: MLP, g: Tensor) -> dict[str, Tensor]:
    P = g.shape[0] * (g.shape[0] + 1) // 2
    return {"V": torch.zeros((P, P), dtype=_DTYPE)}


VERTEX = Recursion("vertex", first=_zeros_pairs, step=vertex_step, requires=(KERNEL,))
CORRECTION = Recursion(
    "correction",
    first=lambda net, g: {"K1": torch.zeros_like(g)},
    step=correction_step,
    requires=(VERTEX,),
    second_order=True,
)


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
        network's widths, (L, N), leading order in 1/n (book §4.1)."""
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
        float64 (L, N, N): E[z_{i;α}z_{i;β}] = K + K1/n_{ℓ−1} + O(1/n²) (the book's NLO metric G^{{1}}).
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


def four_point_vertex(
    net: MLP, x: np.ndarray | Tensor, *, tol: float = 1e-7, max_memory: int | None = None
) -> FourPointVertex:
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
        (:func:`pdlt.gaussian.expect_product`), in (0, 1).
    max_memory:
        Cap in bytes on the Gaussian engine's work arrays (default: the environment variable
        ``PDLT_MAX_MEMORY``, else 2 GiB). Work that cannot fit under it (many inputs at a very
        large variance) raises a ValueError that names the cap.

    Returns
    -------
    FourPointVertex
        ``.V`` (L, N, N, N, N), ``.V_pairs`` (L, P, P), ``.excess_kurtosis`` (L, N).

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=10, width=100, input_dim=1)
    >>> fw = pdlt.four_point_vertex(net, [[1.0]])
    >>> fw.normalized[-1]        # V/K² at ℓ = 10: 5.5235
    """
    check_residual_vertex(net)
    xt = validate_inputs(net, x)
    tol, max_memory = check_tol(tol), check_max_memory(max_memory)
    walk = propagate(net, gram(xt), [VERTEX], tol=tol, max_memory=max_memory)
    N = xt.shape[0]
    Vp = walk.numpy("V")
    return FourPointVertex(
        V=pairs_to_tensor(Vp, N),
        V_pairs=Vp,
        pairs=input_pairs(N)[0].numpy(),
        K=walk.numpy("K"),
        net=net,
        x=xt.numpy(),
    )


def kernel_correction(
    net: MLP, x: np.ndarray | Tensor, *, tol: float = 1e-7, max_memory: int | None = None
) -> KernelCorrection:
    """The 1/n correction K^{{1}(ℓ)} to the two-point function of every layer (book §4.3, §4.5).

    E[z_{i;α} z_{i;β}] = K_{αβ} + K^{{1}}_{αβ}/n_{ℓ−1} + O(1/n²), from
    K^{{1}(ℓ+1)} = (n_ℓ/n_{ℓ−1})[J K^{{1}(ℓ)} + ½ H:V^{(ℓ)}], K^{{1}(1)} = 0 (book §4.3).
    Zero for scale-invariant activations on a single input (§7.1); the off-diagonal part is not
    zero for ReLU at finite angle.

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=10, width=100, input_dim=1)
    >>> pdlt.kernel_correction(net, [[1.0]]).K1[-1]     # −0.10713375
    """
    check_residual_vertex(net)
    xt = validate_inputs(net, x)
    tol, max_memory = check_tol(tol), check_max_memory(max_memory)
    walk = propagate(net, gram(xt), [CORRECTION], tol=tol, max_memory=max_memory)
    return KernelCorrection(
        K1=walk.numpy("K1"),
        K=walk.numpy("K"),
        V_pairs=walk.numpy("V"),
        pairs=input_pairs(xt.shape[0])[0].numpy(),
        net=net,
        x=xt.numpy(),
    )


def metric(
    net: MLP, x: np.ndarray | Tensor, *, tol: float = 1e-7, max_memory: int | None = None
) -> Metric:
    """The two-point function through order 1/n, G^{(ℓ)} = K^{(ℓ)} + K^{{1}(ℓ)}/n_{ℓ−1}, at the
    network's actual widths (book §4.3: the metric; non-uniform widths via n_ℓ/n_{ℓ−1} in the
    recursion and n_{ℓ−1} here)."""
    kc = kernel_correction(net, x, tol=tol, max_memory=max_memory)
    n = _widths_prev(net)[:, None, None]
    return Metric(G=kc.K + kc.K1 / n, K=kc.K, K1=kc.K1, net=net, x=kc.x)
