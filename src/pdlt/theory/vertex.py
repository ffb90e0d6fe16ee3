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

A network with residual layers (z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γz^{(ℓ)}, book App. B) needs more
than V: each neuron's own path through the skips correlates its earlier contributions to the
shared metrics with its later preactivations, through every Hermite order of σσ (the book's
eqs. B.24–B.26 keep the second only, exact for linear σ, nearly so for tanh near K* = 0, and
too small by ~40% at ℓ = 8 for ReLU at γ = 0.5, as Monte Carlo confirms). The path recursion
(:func:`residual_vertex_step`, :func:`residual_correction_step`) carries Ψ, X and the layers
of the current path in the state, and collapses to the book's recursion under its closure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments, expect_product, input_pairs
from pdlt.gaussian.moments import FD_STEP, KernelMapDerivatives, one_sided_difference
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
    """V^{(ℓ+1)} = C_W² Cov_K[σ_aσ_b, σ_cσ_d] + (n_ℓ/n_{ℓ−1}) J V^{(ℓ)} Jᵀ (book §4.3); a
    network with residual layers goes through :func:`residual_vertex_step`."""
    if net.residual:
        return residual_vertex_step(net, layer, prev, m)
    C_W = net.C_W[layer - 1]
    pairs, _ = input_pairs(m.N)
    ss = m.ss[pairs[:, 0], pairs[:, 1]]
    fresh = C_W**2 * (m.ssss_pairs - torch.outer(ss, ss))
    J = residual_jacobian(net, layer, m)
    return {"V": fresh + width_ratio(net, layer) * J @ prev.V @ J.T}


def correction_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """K^{{1}(ℓ+1)} = (n_ℓ/n_{ℓ−1}) [J K^{{1}(ℓ)} + ½ H:V^{(ℓ)}] (book §4.3); a network with
    residual layers goes through :func:`residual_correction_step`."""
    if net.residual:
        return residual_correction_step(net, layer, prev, m)
    C_W = net.C_W[layer - 1]
    pairs, index = input_pairs(m.N)
    J = residual_jacobian(net, layer, m)
    step = (J @ prev.K1[pairs[:, 0], pairs[:, 1]])[index]
    return {
        "K1": width_ratio(net, layer)
        * (step + half_hessian_contraction(m.derivatives, C_W, prev.V))
    }


# --------------------------------------------------------------------------------------------
# residual networks: each neuron's path through the skips
#
# At leading order neuron i of a residual stretch has a path z_i^{(1)}, …, z_i^{(ℓ)} that is a
# Gaussian process over (layer, input), Cov(z^{(m)}_a, z^{(ℓ)}_b) = g_{mℓ} K^{(m)}_ab with
# g_{mℓ} = γ_{m+1}⋯γ_ℓ (a plain layer cuts the path). Neurons interact at O(1/n) only through
# the shared metrics; neuron i's own influence on the layer-ℓ kernel is the vector (over pairs)
#
#     ψ^{(1)} = 0,   ψ^{(ℓ+1)} = (J + γ²) ψ^{(ℓ)} + C_W φ(z^{(ℓ)}),   φ_p = σ_aσ_b − ⟨σ_aσ_b⟩_K,
#
# K̂^{(ℓ)} − K^{(ℓ)} = (1/n) Σ_i ψ_i^{(ℓ)}, a function of neuron i's own path. For two distinct
# neurons i ≠ k, n Cov(f(z_i), g(z_k)) = Df Ψ Dgᵀ + Dg·Cov(ψ, f) + Df·Cov(ψ, g) with
# Ψ = Var ψ and Df_p = ∂⟨f⟩_K/∂K_p. In a plain MLP Cov(ψ, f(z)) = 0 (neuron i of layer ℓ+1 is
# fresh) and V = Ψ; through a skip it is not, and for a non-odd σ (ReLU, GELU) it is not
# captured by V: σσ(z^{(m)}) and σσ(z^{(ℓ)}) of one path correlate through every Hermite order,
# the first (sign information) included. The book's residual recursion (eqs. B.24–B.26) is the
# closure that keeps only the second order, Cov(ψ, σσ) → X Jᵀ/C_W; under it the steps below
# collapse exactly to V^{(ℓ+1)} = (J+γ²)V(J+γ²)ᵀ + C_W²Cov(σσ, σσ) + γ²(MJᵀ + JM).

_PATH_CUTOFF = 1e-13  # |g_{mℓ}| below which an earlier layer's correlation with ℓ is dropped


def _joint_kernels(path_K: Tensor, path_g: Tensor, K: Tensor) -> Tensor:
    """The joint covariance of (z^{(m)}, z^{(ℓ)}) of one path for every earlier layer m:
    (h, 2N, 2N) with blocks K^{(m)}, g_{mℓ}K^{(m)}, K^{(ℓ)}."""
    h, N = path_K.shape[0], K.shape[0]
    out = torch.empty((h, 2 * N, 2 * N), dtype=_DTYPE)
    cross = path_g[:, None, None] * path_K
    out[:, :N, :N] = path_K
    out[:, :N, N:] = cross
    out[:, N:, :N] = cross.transpose(1, 2)
    out[:, N:, N:] = K
    return out


def path_pair_expectations(
    act: object, blocks: Tensor, block: Tensor, p: Tensor, q: Tensor, *, tol: float
) -> Tensor:
    """E[σ(u_a)σ(u_b)σ(v_c)σ(v_d)] for (u, v) ~ N(0, blocks[block]) (each (2N, 2N)), pair
    p = (a, b) of u and q = (c, d) of v, per row: (T,). Up to four distinct variables, through
    the one engine (:func:`pdlt.gaussian.expect_product`; Wick's theorem for linear σ)."""
    N = blocks.shape[1] // 2
    pairs, _ = input_pairs(N)
    base = 2 * N * block
    idx = torch.stack(
        [base + pairs[p, 0], base + pairs[p, 1], base + N + pairs[q, 0], base + N + pairs[q, 1]],
        dim=1,
    )
    big = torch.block_diag(*blocks) if blocks.shape[0] else torch.zeros((0, 0), dtype=_DTYPE)
    if act.homogeneous == (1.0, 1.0):
        a, b, c, d = idx.unbind(1)
        return big[a, b] * big[c, d] + big[a, c] * big[b, d] + big[a, d] * big[b, c]
    # the relu family in closed form (truncated moments, pdlt.gaussian.orthant)
    return expect_product(act.fn, big, idx, kinks=act.kinks, tol=tol, homogeneous=act.homogeneous)


def path_covariance(
    act: object, path_K: Tensor, path_g: Tensor, path_ss: Tensor, K: Tensor, ss: Tensor, tol: float
) -> Tensor:
    """Q_m = Cov(σ_aσ_b(z^{(m)}), σ_cσ_d(z^{(ℓ)})) along one path, (h, P, P), for every
    earlier layer m of the path (path covariance g_{mℓ}K^{(m)}); ``path_ss``, ``ss`` are the
    layers' ⟨σσ⟩ over pairs."""
    h, P = path_K.shape[0], ss.shape[0]
    blocks = _joint_kernels(path_K, path_g, K)
    block = torch.arange(h).repeat_interleave(P * P)
    p = torch.arange(P).repeat_interleave(P).repeat(h)
    q = torch.arange(P).repeat(P * h)
    E = path_pair_expectations(act, blocks, block, p, q, tol=tol).reshape(h, P, P)
    return E - path_ss[:, :, None] * ss[None, None, :]


def path_response(
    act: object,
    path_K: Tensor,
    path_g: Tensor,
    path_B: Tensor,
    K: Tensor,
    tol: float,
) -> Tensor:
    """R_q = Σ_m Σ_{p,r} (B_m)_{pr} ∂/∂S_p E[σσ_r(z^{(m)}) σσ_q(z^{(ℓ)})], (P,): the layer-ℓ
    derivative (Price's theorem: the derivative in the innovation covariance S = K^{(ℓ)} −
    g²K^{(m)}, with the cross block and K^{(m)} fixed) of the cross-layer four-point function,
    contracted with the influence matrices B_m (ψ^{(ℓ)} = Σ_m B_m φ(z^{(m)})).

    One directional derivative per (m, r), along Δ = Σ_i λ_i u_iu_iᵀ (the symmetric N×N matrix
    with entries (B_m)_{pr} at p, by its eigenvectors): along each u_iu_iᵀ a second-order
    one-sided difference with steps h, 2h, h = 1e-4 of the kernel scale (moments.FD_STEP),
    which keeps every perturbed kernel positive semi-definite even where S is singular (there,
    for kinked σ, E has a t^{3/2} term along the singular direction and the derivative is good to
    ~√h ≈ 1 %; elsewhere to ~1e-6)."""
    h, N, P = path_K.shape[0], K.shape[0], path_B.shape[1]
    _, index = input_pairs(N)
    lam, U = torch.linalg.eigh(path_B.transpose(1, 2)[:, :, index])  # (h, P, N), (h, P, N, N)
    dirs = U.transpose(-1, -2)[..., :, None] * U.transpose(-1, -2)[..., None, :]  # (h,P,N,N,N)
    step = FD_STEP * float(torch.diagonal(K).max().clamp(min=1e-300))
    base = _joint_kernels(path_K, path_g, K)  # (h, 2N, 2N)
    blocks = base[:, None, None, None].repeat(1, P, N, 3, 1, 1)  # (h, P_r, dir, k, 2N, 2N)
    for k in (1, 2):
        blocks[:, :, :, k, N:, N:] += k * step * dirs
    nb = h * P * N * 3
    block = torch.arange(nb).repeat_interleave(P)
    r = torch.arange(P).repeat_interleave(N * 3 * P).repeat(h)
    q = torch.arange(P).repeat(nb)
    E = path_pair_expectations(act, blocks.reshape(nb, 2 * N, 2 * N), block, r, q, tol=tol)
    E = E.reshape(h, P, N, 3, P)
    dE = one_sided_difference(
        E[:, :, :, 0], E[:, :, :, 1], E[:, :, :, 2], step
    )  # (h, P_r, dir, P_q)
    return torch.einsum("hri,hriq->q", lam, dE)


def extended_path(path_g: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """The path of layer ℓ+1 through a residual step γ: (g_{m,ℓ+1} for the layers m of the
    path of layer ℓ and m = ℓ, the mask of those kept, |g| > cutoff). Every recursion that
    carries per-layer path coefficients drops the same layers."""
    g = torch.cat([path_g * gamma, torch.tensor([gamma], dtype=_DTYPE)])
    return g, g.abs() > _PATH_CUTOFF


def _empty_path(N: int) -> dict[str, Tensor]:
    P = N * (N + 1) // 2
    return {
        "path_K": torch.zeros((0, N, N), dtype=_DTYPE),
        "path_g": torch.zeros((0,), dtype=_DTYPE),
        "path_B": torch.zeros((0, P, P), dtype=_DTYPE),
        "path_ss": torch.zeros((0, P), dtype=_DTYPE),
    }


def residual_vertex_update(
    Psi: Tensor,
    X: Tensor,
    Y: Tensor,
    A: Tensor,
    J: Tensor,
    M: Tensor,
    fresh: Tensor,
    gamma: float,
    r: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """One residual step of the path bookkeeping (layer ℓ → ℓ+1), (Ψ', X', V'):

        Ψ^{(ℓ+1)} = r A Ψ Aᵀ + C_W² Cov_K(σσ, σσ) + A Ỹ + Ỹᵀ Aᵀ,       A = J + γ²
        X^{(ℓ+1)} = γ² (r A X + J M)
        V^{(ℓ+1)} = Ψ^{(ℓ+1)} + X^{(ℓ+1)} + X^{(ℓ+1)ᵀ}

    with Ψ = Var ψ, X_pq = Cov(ψ_p, z_qz_q), Ỹ_pq = C_W Cov(ψ_p, σσ_q) at layer ℓ, ``fresh`` =
    C_W² Cov_K(σσ, σσ), M = Cov_K(zz, zz), r = n_ℓ/n_{ℓ−1}. V = Ψ + X + Xᵀ is the connected
    four-point function of two distinct neurons, n Cov(z_{i;a}z_{i;b}, z_{k;c}z_{k;d}).
    C_W Cov(σσ, zz) = J M by Stein's lemma."""
    Psi_new = fresh + r * A @ Psi @ A.T + A @ Y + Y.T @ A.T
    if gamma == 0.0:
        X_new = torch.zeros_like(X)
    else:
        X_new = gamma**2 * (r * A @ X + J @ M)
    return Psi_new, X_new, Psi_new + X_new + X_new.T


def residual_vertex_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments
) -> dict[str, Tensor]:
    """V^{(ℓ+1)} of a network with residual layers, for any σ (see the comment above
    :func:`residual_vertex_update`): Ỹ = C_W Σ_m B_m Q_m from the layers of the current path
    (ψ^{(ℓ)} = Σ_m B_m φ(z^{(m)}), B_m = Π (J + γ²) C_W), each Q_m a cross-layer four-point
    function (:func:`path_covariance`); O(L²) such expectations, the path kept in the state.
    A plain layer (γ = 0) cuts the path."""
    C_W, gamma, r = net.C_W[layer - 1], net.skip[layer - 1], width_ratio(net, layer)
    pairs, _ = input_pairs(m.N)
    P = pairs.shape[0]
    ss = m.ss[pairs[:, 0], pairs[:, 1]]
    fresh = C_W**2 * (m.ssss_pairs - torch.outer(ss, ss))
    J = kernel_jacobian(m.derivatives, C_W)
    A = J + gamma**2 * torch.eye(P, dtype=_DTYPE)
    Y = torch.zeros((P, P), dtype=_DTYPE)
    if prev.path_K.shape[0]:
        Q = path_covariance(m.act, prev.path_K, prev.path_g, prev.path_ss, m.K, ss, m.tol)
        Y = C_W * torch.einsum("mpr,mrq->pq", prev.path_B, Q)
    M = gaussian_pair_covariance(m.K)
    Psi, X, V = residual_vertex_update(prev.Psi, prev.X, Y, A, J, M, fresh, gamma, r)
    if gamma == 0.0:
        path = _empty_path(m.N)
    else:
        g, keep = extended_path(prev.path_g, gamma)
        path = {
            "path_K": torch.cat([prev.path_K, m.K[None]])[keep],
            "path_g": g[keep],
            "path_B": torch.cat([A @ prev.path_B, C_W * torch.eye(P, dtype=_DTYPE)[None]])[keep],
            "path_ss": torch.cat([prev.path_ss, ss[None]])[keep],
        }
    return {"V": V, "Psi": Psi, "X": X, **path}


def residual_correction_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments
) -> dict[str, Tensor]:
    """K^{{1}(ℓ+1)} of a network with residual layers, for any σ:

        K^{{1}(ℓ+1)} = r [(J + γ²) K^{{1}(ℓ)} + ½ H:Ψ^{(ℓ)}] + C_W Σ_p Cov(ψ_p, D_p σσ(z^{(ℓ)}))

    E[σσ(z_i)] at O(1/n) has the shared part D⟨σσ⟩·K1 + ½H:Ψ and the self part: neuron i's own
    earlier σσ moved the variances of its own later steps, Cov(ψ, D_pσσ) with D_p h the
    pointwise ∂_a∂_b h (½∂_a² on the diagonal), Σ_m B_m Cov(φ(z^{(m)}), D_pσσ(z^{(ℓ)})) — by
    Price's theorem the derivative of the cross-layer four-point function in the layer-ℓ
    innovation covariance (:func:`path_response`). Under the second-order closure the self
    part is H:X and the step is the book's r[(J+γ²)K1 + ½H:V]."""
    C_W, r = net.C_W[layer - 1], width_ratio(net, layer)
    pairs, index = input_pairs(m.N)
    A = residual_jacobian(net, layer, m)
    K1 = (A @ prev.K1[pairs[:, 0], pairs[:, 1]])[index]
    out = r * (K1 + half_hessian_contraction(m.derivatives, C_W, prev.Psi))
    if prev.path_K.shape[0]:
        J = kernel_jacobian(m.derivatives, C_W)
        dE = path_response(m.act, prev.path_K, prev.path_g, prev.path_B, m.K, m.tol)
        # Cov(φ_r, D_p h) = ∂_p E[σσ_r h] − ⟨σσ_r⟩ D_p⟨h⟩, and C_W D_p⟨σσ_q⟩ = J_qp
        mean = torch.einsum("mr,qp,mpr->q", prev.path_ss, J, prev.path_B) / C_W
        out = out + C_W * (dE - mean)[index]
    return {"K1": out}


def _first_vertex(net: MLP, g: Tensor) -> dict[str, Tensor]:
    P = g.shape[0] * (g.shape[0] + 1) // 2
    out = {"V": torch.zeros((P, P), dtype=_DTYPE)}
    if net.residual:
        out |= {"Psi": torch.zeros((P, P), dtype=_DTYPE), "X": torch.zeros((P, P), dtype=_DTYPE)}
        out |= _empty_path(g.shape[0])
    return out


VERTEX = Recursion("vertex", first=_first_vertex, step=vertex_step, requires=(KERNEL,))
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
