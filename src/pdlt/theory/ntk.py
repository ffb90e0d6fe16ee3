"""The neural tangent kernel at initialization (book ch. 7–8).

With the book's per-layer learning rates — λ_b^{(ℓ)} for the biases of layer ℓ and
λ_W^{(ℓ)}/n_{ℓ−1} for its weights (§8.0) — the NTK of layer ℓ is

    Ĥ^{(ℓ)}_{i1 i2; δ1 δ2} = Σ_{μν} λ_{μν} dz^{(ℓ)}_{i1;δ1}/dθ_μ dz^{(ℓ)}_{i2;δ2}/dθ_ν .

Its exact forward equation (§8.1) reads

    Ĥ^{(ℓ+1)}_{i1i2} = δ_{i1i2} [λ_b + (λ_W/n_ℓ) Σ_j σ_{j;δ1} σ_{j;δ2}]
                     + Σ_{j1 j2} W_{i1 j1} W_{i2 j2} σ'_{j1;δ1} σ'_{j2;δ2} Ĥ^{(ℓ)}_{j1 j2} ,

and at infinite width its mean is the *frozen NTK* Θ (§8.1–8.2):

    Θ^{(1)}_{δ1δ2}   = λ_b^{(1)} + λ_W^{(1)} x_{δ1}·x_{δ2} / n_0
    Θ^{(ℓ+1)}_{δ1δ2} = λ_b^{(ℓ+1)} + λ_W^{(ℓ+1)} ⟨σ_{δ1} σ_{δ2}⟩_{K^{(ℓ)}}
                     + C_W^{(ℓ+1)} ⟨σ'_{δ1} σ'_{δ2}⟩_{K^{(ℓ)}} Θ^{(ℓ)}_{δ1δ2} .

This module gives Θ (:func:`ntk`) and its O(1/n) fluctuations D, F, A, B
(:func:`ntk_fluctuations`, §8.3–8.4), as the recursions :data:`NTK_MEAN` and
:data:`FLUCTUATIONS` of the layer walk. Criticality of the NTK and the learning-rate scaling
(ch. 9) are in :mod:`pdlt.theory.ntk_criticality`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments, expect_product, input_pairs
from pdlt.gaussian.orthant import homogeneous_mixed_product
from pdlt.gaussian.rules import nodes_per_piece, split_rule
from pdlt.network import MLP, require_plain, validate_inputs
from pdlt.theory.kernel import KERNEL, relabel_layers, walk_entrywise
from pdlt.theory.layers import (
    LayerState,
    Recursion,
    check_max_memory,
    gram,
    propagate,
    width_ratio,
)
from pdlt.theory.vertex import (
    VERTEX,
    _joint_kernels,
    extended_path,
    pairs_to_tensor,
    residual_jacobian,
)

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------
# the frozen NTK Θ


@dataclass(frozen=True, eq=False)
class NTK:
    """The infinite-width (frozen) NTK of every layer, with the kernel it was computed on.

    Attributes
    ----------
    Theta:
        float64 array (depth, N, N); ``Theta[l-1]`` is Θ^{(l)} over the N inputs, with the
        network's per-layer λ_b, λ_W (book convention: weight rate λ_W/n_{ℓ−1}).
    K:
        float64 array (depth, N, N), the kernel K^{(l)} (book §4.3) it rests on.
    net, x:
        The network spec and the inputs (N, n_0).
    layers:
        The layers ℓ held, in order (all unless ``layers=`` chose some).
    """

    Theta: np.ndarray
    K: np.ndarray
    net: MLP
    x: np.ndarray
    layers: tuple[int, ...] | None = None

    statistics = ("Theta",)

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per layer and unordered input pair (a ≤ b), columns Θ and K."""
        return relabel_layers(long_frame({"Theta": self.Theta, "K": self.K}), self.layers)

    def __repr__(self) -> str:
        L, N, _ = self.Theta.shape
        return f"NTK(depth={L}, inputs={N}, Theta^(L)_diag={np.round(np.diag(self.Theta[-1]), 6)})"


def first_layer_ntk(x: Tensor, lambda_b: float, lambda_W: float) -> Tensor:
    """Θ^{(1)}_{δ1δ2} = λ_b + λ_W x_{δ1}·x_{δ2}/n_0 (book §8.1); exact at any width."""
    return lambda_b + lambda_W * gram(x)


def ntk_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """The frozen-NTK recursion (book §8.2), Θ^{(ℓ)} → Θ^{(ℓ+1)} with ``layer`` = ℓ+1:

    λ_b^{(ℓ+1)} + λ_W^{(ℓ+1)} ⟨σσ⟩_{K^{(ℓ)}} + C_W^{(ℓ+1)} ⟨σ'σ'⟩_{K^{(ℓ)}} Θ^{(ℓ)},

    plus γ² Θ^{(ℓ)} for a residual layer: with z' = b + Wσ(z) + γz the forward equation gains
    γ² Ĥ^{(ℓ)} and the cross terms γ(Wσ'Ĥ + Ĥσ'Wᵀ), whose means vanish (E[W] = 0).
    """
    i = layer - 1
    # in place, three passes over the N² entries: λ_W⟨σσ⟩, + C_W⟨σ'σ'⟩Θ, + λ_b
    theta = torch.mul(m.ss, net.lambda_W[i]).addcmul_(m.dd, prev.Theta, value=net.C_W[i])
    gamma = net.skip[i]
    if gamma != 0.0:  # a residual layer adds γ² Θ (eq. B.3)
        theta.add_(prev.Theta, alpha=gamma**2)
    return {"Theta": theta.add_(net.lambda_b[i])}


NTK_MEAN = Recursion(
    "ntk",
    first=lambda net, g: {"Theta": net.lambda_b[0] + net.lambda_W[0] * g},
    step=ntk_step,
    requires=(KERNEL,),
    entrywise=True,
)


def ntk_layers(net: MLP, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """([K^{(1)}, …, K^{(L)}], [Θ^{(1)}, …, Θ^{(L)}]) as float64 tensors."""
    walk = propagate(net, gram(x), [NTK_MEAN])
    return list(walk.stack("K")), list(walk.stack("Theta"))


def ntk(
    net: MLP,
    x: np.ndarray | Tensor,
    *,
    layers: int | str | Sequence[int] | None = None,
    max_memory: int | None = None,
) -> NTK:
    """The frozen NTK Θ^{(ℓ)}_{δ1δ2} of every layer ℓ = 1…L (book §8.1–8.2).

    Uses the network's per-layer learning rates in the book's convention: λ_b^{(ℓ)} for biases
    and λ_W^{(ℓ)}/n_{ℓ−1} for weights, so each layer adds an O(1) amount. Any activation; closed
    forms where registered, quadrature otherwise.

    Parameters
    ----------
    net:
        The network spec (its ``lambda_b``, ``lambda_W`` set the learning rates).
    x:
        Inputs, (N, n_0) numpy array or torch tensor.
    layers, max_memory:
        Which layers to return and a cap on working memory (blocks of inputs), as in
        :func:`pdlt.kernel`.

    Returns
    -------
    NTK
        ``.Theta`` float64 (len(layers), N, N), by default (L, N, N) with
        ``Theta[l-1] = Θ^{(l)}``; ``.K`` the kernel of the same layers.

    Examples
    --------
    >>> net = pdlt.MLP("relu", depth=5, width=256, input_dim=4, C_W=2.0)
    >>> pdlt.ntk(net, np.ones((1, 4))).Theta[:, 0, 0]      # Θ^{(ℓ)} = 2ℓ (λ's = 1, K* = 2)
    array([ 2.,  4.,  6.,  8., 10.])
    """
    xt = validate_inputs(net, x)
    kept, walk = walk_entrywise(net, xt, [NTK_MEAN], layers, max_memory)
    return NTK(Theta=walk.numpy("Theta"), K=walk.numpy("K"), net=net, x=xt.numpy(), layers=kept)


# --------------------------------------------------------------------------------------------
# O(1/n) fluctuations: D, F, A, B (and the vertex V they need)

MAX_FLUCTUATION_INPUTS = 8  # four-input cubature costs O(N⁴ q⁴); 8 inputs take ~minutes


def fluctuation_inputs(
    net: MLP, x: np.ndarray | Tensor, what: str, *, residual_inputs: int = 0
) -> Tensor:
    """The inputs of an O(1/n) statistic with four-input Gaussian integrals (NTK fluctuations,
    dNTK, ddNTKs, Θ1), validated: at most ``MAX_FLUCTUATION_INPUTS`` inputs, and a plain MLP
    unless ``what`` is derived for residual MLPs on up to ``residual_inputs`` inputs."""
    if net.residual and residual_inputs == 0:
        require_plain(net, what)
    xt = validate_inputs(net, x)
    if xt.shape[0] > MAX_FLUCTUATION_INPUTS:
        raise ValueError(
            f"{what} supports at most {MAX_FLUCTUATION_INPUTS} inputs, got {xt.shape[0]} (its "
            "four-input Gaussian integrals cost O(N⁴)); call it on subsets of the inputs"
        )
    if net.residual and xt.shape[0] > residual_inputs:
        raise NotImplementedError(
            f"{what} of residual MLPs is derived for at most {residual_inputs} input(s) (the "
            f"path recursion of one input), got {xt.shape[0]}; call it on one input at a time "
            "(the multi-input cross terms are not derived)"
        )
    return xt


@dataclass(frozen=True, eq=False)
class NTKFluctuations:
    """The O(1/n) statistics of the NTK at initialization (book §8.3–8.4), every layer.

    All arrays are float64 (depth, N, N, N, N), layer first, each the coefficient of
    1/n_{ℓ−1} in the book's tensor decomposition (§8.3–8.4; i1 … i4 neurons of layer ℓ)::

        E[Ĥ_{i1i2;δ1δ2} z_{i3;δ3} z_{i4;δ4}]_c = [δ_{i1i2}δ_{i3i4} D_{δ1δ2δ3δ4}
                + δ_{i1i3}δ_{i2i4} F_{δ1δ3δ2δ4} + δ_{i1i4}δ_{i2i3} F_{δ1δ4δ2δ3}] / n_{ℓ−1}
        E[Ĥ_{i1i2;δ1δ2} Ĥ_{i3i4;δ3δ4}]_c = [δ_{i1i2}δ_{i3i4} A_{(δ1δ2)(δ3δ4)}
                + δ_{i1i3}δ_{i2i4} B_{δ1δ3δ2δ4} + δ_{i1i4}δ_{i2i3} B_{δ1δ4δ2δ3}] / n_{ℓ−1}

    so D[a,b,c,d]: NTK pair (a,b), preactivation pair (c,d); F[a,b,c,d]: (NTK, z) samples on
    one neuron then on the other; B[a,b,c,d]: NTK pairs (a,c) and (b,d); A[a,b,c,d]: NTK pairs
    (a,b) and (c,d). Single input, i ≠ j: n Var(Ĥ_ii) = A + 2B, n Cov(Ĥ_ii, Ĥ_jj) = A,
    n E[Ĥ_ij²] = B, n Cov(Ĥ_ii, z_j²) = D, n E[Ĥ_ij z_i z_j] = F.

    Attributes
    ----------
    D, F, A, B:
        The NTK–preactivation cross-correlations and the NTK variance.
    V:
        The preactivation four-point vertex V_{(δ1δ2)(δ3δ4)} (book §4.3), which feeds D and A.
    Theta, K:
        (depth, N, N) frozen NTK and kernel.
    net, x:
        Spec and inputs.
    """

    D: np.ndarray
    F: np.ndarray
    A: np.ndarray
    B: np.ndarray
    V: np.ndarray
    Theta: np.ndarray
    K: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("D", "F", "A", "B")

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per layer and index tuple, columns D, F, A, B, V."""
        return long_frame({s: getattr(self, s) for s in ("D", "F", "A", "B", "V")})

    def normalized(self, width: int | None = None) -> dict[str, np.ndarray]:
        """Dimensionless single-input-style ratios per layer and input (diagonal entries):
        ``A/Θ²``, ``B/Θ²``, ``D/(KΘ)``, ``F/(KΘ)``, ``V/K²`` and the relative NTK variance
        ``(A+2B)/Θ²``, each divided by ``width`` (n_{ℓ−1} of the network when None)."""
        n = (
            np.asarray(self.net.widths[:-1], dtype=float)[:, None]
            if width is None
            else float(width)
        )
        idx = np.arange(self.Theta.shape[1])

        def diag(t: np.ndarray) -> np.ndarray:
            return t[:, idx, idx, idx, idx]

        th = self.Theta[:, idx, idx]
        k = self.K[:, idx, idx]
        return {
            "A/Theta^2": diag(self.A) / th**2 / n,
            "B/Theta^2": diag(self.B) / th**2 / n,
            "D/(K Theta)": diag(self.D) / (k * th) / n,
            "F/(K Theta)": diag(self.F) / (k * th) / n,
            "V/K^2": diag(self.V) / k**2 / n,
            "Var(H_ii)/Theta^2": (diag(self.A) + 2 * diag(self.B)) / th**2 / n,
        }

    def __repr__(self) -> str:
        L, N = self.D.shape[:2]
        return f"NTKFluctuations(depth={L}, inputs={N})"


def fluctuation_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """One layer of the coupled D, F, A, B recursions (book §8.3–8.4): statistics of layer ℓ
    (K^{(ℓ)}, Θ^{(ℓ)}, V^{(ℓ)} and D, F, A, B) → layer ℓ+1 = ``layer``.

    With X_{δ1δ2} = λ_W σ_{δ1}σ_{δ2} + C_W Θ_{δ1δ2} σ'_{δ1}σ'_{δ2} and r = n_ℓ/n_{ℓ−1}:

    D' = C_W Cov(X, σσ) + r [(C_W/4) V ⟨∂∂X⟩⟨∂∂σσ⟩ + (C_W²/2) ⟨σ'σ'⟩ D ⟨∂∂σσ⟩]
    F'_{δ1δ3δ2δ4} = C_W² Θ_{δ1δ2} ⟨σ'_{δ1}σ_{δ3}σ'_{δ2}σ_{δ4}⟩
                    + r C_W² F_{δ1β3δ2β4} ⟨∂_{β3}(σ'_{δ1}σ_{δ3})⟩⟨∂_{β4}(σ'_{δ2}σ_{δ4})⟩
    A' = Cov(X, X) + r [¼ V⟨∂∂X⟩⟨∂∂X⟩ + (C_W/2)(⟨σ'σ'⟩ D⟨∂∂X⟩ + mirror) + C_W² ⟨σ'σ'⟩⟨σ'σ'⟩ A]
    B'_{δ1δ3δ2δ4} = C_W² Θ_{δ1δ2}Θ_{δ3δ4} ⟨σ'σ'σ'σ'⟩ + r C_W² ⟨σ'_{δ1}σ'_{δ3}⟩⟨σ'_{δ2}σ'_{δ4}⟩ B
    """
    if net.residual:
        return residual_fluctuation_step(net, layer, prev, m)
    i = layer - 1
    C_W, lam_W = net.C_W[i], net.lambda_W[i]
    r = width_ratio(net, layer)
    t = m.fluctuation_terms
    Theta = prev.Theta
    m_ss, m_dd = m.ss, m.dd
    m_X = lam_W * m_ss + C_W * Theta * m_dd
    # ⟨X_pq σ_r σ_s⟩ and ⟨X_pq X_rs⟩ from the three four-point functions
    Th_pq = Theta[:, :, None, None]
    Th_rs = Theta[None, None, :, :]
    E_Xss = lam_W * t["ssss"] + C_W * Th_pq * t["ddss"]
    E_XX = (
        lam_W**2 * t["ssss"]
        + lam_W * C_W * (Th_pq * t["ddss"] + Th_rs * t["ddss"].permute(2, 3, 0, 1))
        + C_W**2 * Th_pq * Th_rs * t["dddd"]
    )

    def outer(a: Tensor, b: Tensor) -> Tensor:
        return torch.einsum("pq,rs->pqrs", a, b)

    def contract(
        T: Tensor, P: Tensor, Q: Tensor
    ) -> Tensor:  # Σ_β T_{β1β2β3β4} P_{pqβ1β2} Q_{rsβ3β4}
        return torch.einsum("bcde,pqbc,rsde->pqrs", T, P, Q)

    P_ss = t["P_ss"]
    P_X = lam_W * t["P_ss"] + C_W * Theta[:, :, None, None] * t["P_dd"]
    V = pairs_to_tensor(prev.V, m.N)
    D, F, A, B = prev.D, prev.F, prev.A, prev.B
    dD_ss = torch.einsum("pqbc,rsbc->pqrs", D, P_ss)  # Σ_β D_{pqβ3β4} ⟨∂∂σσ⟩_{rs,β3β4}
    dD_X = torch.einsum("pqbc,rsbc->pqrs", D, P_X)
    new_D = C_W * (E_Xss - outer(m_X, m_ss)) + r * (
        C_W / 4 * contract(V, P_X, P_ss) + C_W**2 / 2 * m_dd[:, :, None, None] * dD_ss
    )
    new_A = (
        E_XX
        - outer(m_X, m_X)
        + r
        * (
            contract(V, P_X, P_X) / 4
            + C_W
            / 2
            * (m_dd[:, :, None, None] * dD_X + (m_dd[:, :, None, None] * dD_X).permute(2, 3, 0, 1))
            + C_W**2 * torch.einsum("pq,rs->pqrs", m_dd, m_dd) * A
        )
    )
    # F: g_{ab}(z) = σ'_a σ_b on one neuron; the NTK samples (a, c) are spectators.
    four_F = t["ddss"].permute(0, 2, 1, 3)  # ⟨σ'_a σ_b σ'_c σ_d⟩
    P1 = t["P1"]  # ⟨∂_β(σ'_a σ_b)⟩: (a, b, β)
    new_F = C_W**2 * Theta[:, None, :, None] * four_F + r * C_W**2 * torch.einsum(
        "aecf,abe,cdf->abcd", F, P1, P1
    )
    four_B = t["dddd"]  # ⟨σ'_a σ'_b σ'_c σ'_d⟩
    new_B = C_W**2 * Theta[:, None, :, None] * Theta[None, :, None, :] * four_B + (
        r * C_W**2 * m_dd[:, :, None, None] * m_dd[None, None, :, :] * B
    )
    return {"D": new_D, "F": new_F, "A": new_A, "B": new_B}


# --------------------------------------------------------------------------------------------
# residual networks: each neuron's path through the skips (written for one input; the N-input
# form, below, is the same bookkeeping over input pairs)
#
# With z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γz^{(ℓ)}, differentiating gives dz^{(ℓ+1)}_i/dθ =
# Σ_j (W_ij σ'_j + γδ_ij) dz^{(ℓ)}_j/dθ + (direct), so (N = 1, i ≠ k, u_{k;l} = σ'_l Ĥ_lk)
#
#   Ĥ'_ii = λ_b + (λ_W/n)Σσ² + Σ_jl W_ij W_il σ'_jσ'_l Ĥ_jl + 2γ Σ_l W_il σ'_l Ĥ_li + γ² Ĥ_ii
#   Ĥ'_ik = Σ_jl W_ij W_kl σ'_jσ'_l Ĥ_jl + γ (w_i·u_k + w_k·u_i) + γ² Ĥ_ik .
#
# At leading order neuron i's path z_i^{(1)}, …, z_i^{(ℓ)} is Gaussian (cross-covariances
# g_{mℓ}K^{(m)}, as for the vertex: :mod:`pdlt.theory.vertex`); everything else is O(1/√n).
#
# A, D. Given layer ℓ, Ĥ'_ii = T̂ + γ²Ĥ_ii + (noise of row i, conditional mean 0), with the shared
# T̂ = λ_b + (1/n)Σ_j X_j, X_j = λ_Wσ_j² + C_W σ'_j² Ĥ_jj. So the NTK diagonal has no part of its
# own neuron's path: Ĥ_ii = Θ + (1/n)Σ_j χ_j + noise, each neuron's influence χ on the shared NTK
#
#   χ^{(ℓ+1)} = a χ + b ψ + e(z^{(ℓ)}),   a = γ² + C_W⟨σ'²⟩,  b = ½(λ_W⟨(σ²)''⟩ + C_WΘ⟨(σ'²)''⟩),
#   e = X − ⟨X⟩ with Θ for Ĥ_jj,
#
# beside its influence ψ on the shared kernel (ψ' = (J + γ²)ψ + C_W φ, vertex.py). Then
# A = n Cov(Ĥ_ii, Ĥ_kk) = Var χ and D = n Cov(Ĥ_ii, z_k²) = Cov(χ, ψ) + Cov(χ, z²) =: Ξ + Z, with
#
#   A' = r(a²A + 2abΞ + b²Ψ) + Var e + 2a Cov(χ, e) + 2b Cov(ψ, e)
#   Ξ' = r(a(J+γ²)Ξ + b(J+γ²)Ψ) + C_W(a Cov(χ, φ) + b Cov(ψ, φ)) + (J+γ²)Cov(ψ, e) + C_W Cov(e, φ)
#   Z' = γ²[r(aZ + bX) + K² P_X]        (X = Cov(ψ, z²); Cov(e, z²) = K²⟨e''⟩ by Stein)
#
# where Cov(χ, ·), Cov(ψ, ·) of functions of z^{(ℓ)} are sums over the earlier layers of the path
# of cross-layer covariances of σ², σ'² (χ and ψ are linear in φ(z^{(m)}), φ'(z^{(m)})).
#
# B. b(i, k) = n E[Ĥ_ik² | paths] = β + φ_b(i) + φ_b(k) (additive): averaging Ĥ'_ik² over the two
# rows, n c² Σ S_jl² + γ² C_W(|u_k|² + |u_i|²) + γ⁴ nĤ_ik² (c = C_W/n), and |u_k|² ∋ σ'_k² Θ², so
#
#   B' = β' = C_W²Θ²⟨σ'⁴⟩ + 2γ²C_WΘ²⟨σ'²⟩ + r(a²β + 2a C_W Cov(σ'², φ_b)),
#   φ_b' = r γ² a φ_b + γ² C_W Θ² φ'(z^{(ℓ)}).
#
# F. q(i, k) = n E[Ĥ_ik | paths] is a bilinear form f(i)ᵀ Q f(k) in the path functions
# f = (1, z^{(m)}, s^{(m)} = σσ'(z^{(m)})): with E[w_i | ε_i] = cσε_i/G (ε the new innovation,
# G = C_b + C_W⟨σ²⟩ its variance),
#
#   q' = α ε_iε_k + (γC_WΘ/G)(ε_i s_k + ε_k s_i) + r(γC_W/G)(ε_i μᵀQf(k) + ε_k μᵀQf(i)) + rγ² q,
#   α = C_W²(Θ⟨σ²σ'²⟩ + r μᵀQμ)/G²,   μ_a = E[s^{(ℓ)} f_a],
#
# and F = n E[Ĥ_ik z_i z_k] = νᵀQν, ν_a = E[f_a z^{(ℓ)}]. At γ = 0 all four reduce to the book's
# plain recursions (eqs. 8.x, :func:`fluctuation_step`).
#
# N inputs. The same steps over input tuples (dz'_{i;a}/dθ = Σ_j (W_ij σ'_{j;a} + γδ_ij) dz_{j;a}/dθ
# + direct):
# A, D: χ, ψ, e are vectors over input pairs p = (a, b) (the vertex's layout), a = diag(γ² +
#   C_W⟨σ'_aσ'_b⟩), b_pq = ∂⟨X_p⟩/∂K_q = λ_W⟨∂∂σσ⟩ + C_WΘ_p⟨∂∂σ'σ'⟩ in the symmetric variables
#   (½⟨∂_c²⟩ on the diagonal), so the products above become matrix products (aAaᵀ, aΞbᵀ, …), the
#   path coefficients of χ on φ_ss, φ_dd of each layer are P×P, the cross-layer covariances
#   Cov(x_r(z^{(m)}), y_q(z^{(ℓ)})), x, y ∈ {σσ, σ'σ'}, four-input expectations
#   (:func:`path_slot_covariances`), and Cov(e_p, z_cz_d) = Σ K_ce K_df ⟨∂_e∂_f e_p⟩ (Stein).
# B: b(i, k)_{abcd} = n E[Ĥ_ik;ac Ĥ_ik;bd | paths] = β + φ_R(i) + φ_L(k) with φ_L;abcd = φ_R;cdab:
#   B' = C_W²Θ_acΘ_bd(⟨σ'_aσ'_bσ'_cσ'_d⟩ + (γ²/C_W)(D_ab + D_cd)) + r[a_ab a_cd β
#        + C_W a_cd E[σ'_aσ'_b φ_R] + C_W a_ab E[σ'_cσ'_d φ_L]],   a_ab = γ² + C_W D_ab,
#   φ_R' = rγ² a_cd φ_R + γ²C_WΘ_acΘ_bd φ_dd;cd(z^{(ℓ)}),  D_ab = ⟨σ'_aσ'_b⟩.
# F: q(i, k)_{ac} = n E[Ĥ_ik;ac | paths] = f(i)ᵀQ^{ac}f(k), f = (1, z^{(m)}_e, s^{(m)}_{e1e2} =
#   σ_{e1}σ'_{e2}(z^{(m)})) for every input; E[W_ij | ε_i] = c σ_jᵀG⁻¹ε_i (G the N×N innovation
#   covariance) turns ε/G into ε̃ = G⁻¹ε and s into s_{c'c}: see :func:`_residual_F`.
# On one input each reduces to the recursion above (the same code runs both).


def _path_rule(act: object, path_K: Tensor, path_g: Tensor, K: Tensor) -> tuple[Tensor, ...]:
    """Nodes (u, v) and weights w of the kink-split rule of (z^{(m)}, z^{(ℓ)}) of one path,
    one input, for every earlier layer m: each (h, nodes)."""
    Km = path_K[:, 0, 0]
    cross = path_g * Km
    cov = torch.stack([torch.stack([Km, cross], -1), torch.stack([cross, K.expand_as(Km)], -1)], -2)
    q = nodes_per_piece(float(torch.sqrt(torch.cat([Km, K.reshape(1)]).max())))
    if act.kinks:  # the kink cuts halve the pieces: as many nodes per unit length at q/2
        q = max(32, -(-q // 64) * 32)
    # shadow cuts only for nearly parallel (z^{(m)}, z^{(ℓ)}) (|g|√(K_m/K) → 1 as γ → 1)
    rho = (path_g.abs() * torch.sqrt(Km / K)).max() if Km.numel() else 0.0
    rule = split_rule(cov, act.kinks, q, shadows=bool(rho > 0.9))
    return rule.z[..., 0], rule.z[..., 1], rule.w


def _path_function(act: object, name: str):  # noqa: ANN202
    """The per-neuron functions of the residual path recursions: 1, z, σ², σ'², s = σσ',
    u = σσ'', t = σ'σ'' (σ'' the explicit derivative, zero for ReLU, as the measurement uses)."""
    f0, f1 = act.derivative(0), act.derivative(1)
    f2 = act.derivative(2)
    return {
        "1": torch.ones_like,
        "z": lambda x: x,
        "ss": lambda x: f0(x) ** 2,
        "dd": lambda x: f1(x) ** 2,
        "s": lambda x: f0(x) * f1(x),
        "u": lambda x: f0(x) * f2(x),
        "t": lambda x: f1(x) * f2(x),
    }[name]


def path_expectations(
    act: object, path_K: Tensor, path_g: Tensor, K: Tensor, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Tensor]:
    """E[f(z^{(m)}) g(z^{(ℓ)})] along one path, one input, per earlier layer m (h,), for each
    (f, g) of ``pairs`` (names of :func:`_path_function`; g = "1" gives the marginal ⟨f⟩_m)."""
    u, v, w = _path_rule(act, path_K, path_g, K)
    at_u = {f: _path_function(act, f)(u) for f in {f for f, _ in pairs}}
    at_v = {g: _path_function(act, g)(v) for g in {g for _, g in pairs}}
    return {(f, g): (w * at_u[f] * at_v[g]).sum(dim=1) for f, g in pairs}


def _slot_products(act: object, big: Tensor, idx: Tensor, orders: tuple[int, ...], tol: float):
    """⟨Π_s σ^{(orders[s])}(z_{idx[t, s]})⟩ over the block kernel ``big`` for rows whose only
    repeated indices are within slots (0, 1) and within slots (2, 3) (a pair of one layer):
    the relu family in closed form (truncated moments with σ' slots, by repetition pattern),
    anything else through :func:`pdlt.gaussian.expect_product`."""
    if act.homogeneous is None:
        fns = [act.derivative(o) for o in orders]
        return expect_product(fns, big, idx, kinks=act.kinks, tol=tol)
    a_plus, a_minus = act.homogeneous
    out = torch.empty(idx.shape[0], dtype=torch.float64)
    groups = [(0, 1), (2, 3)][: idx.shape[1] // 2]
    same = [idx[:, i] == idx[:, j] for i, j in groups]
    for pattern in itertools.product((False, True), repeat=len(groups)):
        rows = torch.ones(idx.shape[0], dtype=torch.bool)
        for flag, eq in zip(pattern, same, strict=True):
            rows &= eq if flag else ~eq
        if not bool(rows.any()):
            continue
        cols, mult, powers = [], [], []
        for flag, (i, j) in zip(pattern, groups, strict=True):
            slots = [(i, j)] if flag else [(i,), (j,)]
            for sl in slots:
                cols.append(sl[0])
                mult.append(len(sl))
                powers.append(sum(orders[s] == 0 for s in sl))
        out[rows] = homogeneous_mixed_product(
            a_plus, a_minus, big, idx[rows][:, cols], tuple(mult), tuple(powers)
        )
    return out


def path_slot_covariances(
    act: object, path_K: Tensor, path_g: Tensor, K: Tensor, tol: float
) -> dict[str, Tensor]:
    """Cross-layer covariances of one path over input pairs, per earlier layer m (h, P, P):
    ``xy`` = Cov(x_r(z^{(m)}), y_q(z^{(ℓ)})) for x, y ∈ {s: σ_aσ_b, d: σ'_aσ'_b} (pairs r, q),
    for the χ and φ_b bookkeeping of :func:`_residual_ADB`."""
    h, N = path_K.shape[0], K.shape[0]
    pairs, _ = input_pairs(N)
    P = pairs.shape[0]
    blocks = _joint_kernels(path_K, path_g, K)
    big = torch.block_diag(*blocks)
    base = 2 * N * torch.arange(h)
    bm = base.repeat_interleave(P * P)
    r = torch.arange(P).repeat_interleave(P).repeat(h)
    q = torch.arange(P).repeat(P * h)
    idx4 = torch.stack(
        [bm + pairs[r, 0], bm + pairs[r, 1], bm + N + pairs[q, 0], bm + N + pairs[q, 1]], dim=1
    )
    b2 = base.repeat_interleave(P)
    p2 = torch.arange(P).repeat(h)
    idx_m = torch.stack([b2 + pairs[p2, 0], b2 + pairs[p2, 1]], dim=1)
    idx_l = idx_m + N
    mean_m = {o: _slot_products(act, big, idx_m, (o, o), tol).reshape(h, P) for o in (0, 1)}
    mean_l = {o: _slot_products(act, big, idx_l, (o, o), tol).reshape(h, P) for o in (0, 1)}
    out = {}
    for x, ox in (("s", 0), ("d", 1)):
        for y, oy in (("s", 0), ("d", 1)):
            E = _slot_products(act, big, idx4, (ox, ox, oy, oy), tol).reshape(h, P, P)
            out[x + y] = E - mean_m[ox][:, :, None] * mean_l[oy][:, None, :]
    return out


def _empty_residual(N: int) -> dict[str, Tensor]:
    """Path coefficients of χ and φ_b with no earlier layer on the path."""
    P = N * (N + 1) // 2
    return {
        "path_cs": torch.zeros((0, P, P), dtype=torch.float64),
        "path_cd": torch.zeros((0, P, P), dtype=torch.float64),
        "path_cb": torch.zeros((0,) + (N,) * 4, dtype=torch.float64),
    }


def _residual_first(g: Tensor) -> dict[str, Tensor]:
    """The residual bookkeeping of layer 1 (Gaussian, deterministic NTK): all zero; the F form
    Q over the basis (1, z^{(1)}) (one input)."""
    N = g.shape[0]
    P = N * (N + 1) // 2
    zero = torch.zeros((P, P), dtype=torch.float64)
    return {
        "Ap": zero,
        "Xi": zero,
        "Zc": zero,
        **_empty_residual(N),
        "Fq": torch.zeros((N, N, 1 + N, 1 + N), dtype=torch.float64),
        "path_P1": torch.zeros((0, N, N, N), dtype=torch.float64),
        "path_s1": torch.zeros((0, N, N), dtype=torch.float64),
    }


def residual_fluctuation_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments
) -> dict[str, Tensor]:
    """D, F, A, B of a network with residual layers, layer ℓ → ℓ+1 = ``layer`` (the derivation
    is in the comment above :func:`_path_rule`). The path (its layers' K, g and ψ
    coefficients) is the vertex's (:func:`pdlt.theory.vertex.residual_vertex_step`); this step
    carries χ's and φ_b's coefficients on the same layers (:func:`_residual_ADB`, any N) and
    the forms Q^{ac} of F (:func:`_residual_F`), on N inputs."""
    gamma = net.skip[layer - 1]
    keep = None if gamma == 0.0 else extended_path(prev.path_g, gamma)[1]
    out = _residual_ADB(net, layer, prev, m, keep)
    if keep is None:
        keep = torch.zeros(prev.path_K.shape[0] + 1, dtype=torch.bool)
    return out | _residual_F(net, layer, prev, m, keep)


def _residual_ADB(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, keep: Tensor | None
) -> dict[str, Tensor]:
    """A, B, D of a residual layer ℓ → ℓ+1 on N inputs (derivation above :func:`_path_rule`,
    over input pairs p = (a, b)): χ and ψ are P-vectors, a = diag(γ² + C_W⟨σ'σ'⟩_p),
    b_pq = ∂⟨X_p⟩/∂K_q (the symmetric-variable derivative, as the vertex's J), and the path
    coefficients of χ (on φ_ss, φ_dd of each earlier layer) are P×P matrices; the B form's
    φ_b coefficients are one number per (a, b, c, d) and layer. ``keep``: the layers of the
    path of ℓ+1 (None: the path is cut)."""
    i = layer - 1
    C_W, lam_W, gamma = net.C_W[i], net.lambda_W[i], net.skip[i]
    g2 = gamma * gamma
    r = width_ratio(net, layer)
    t = m.fluctuation_terms
    N = m.N
    pairs, index = input_pairs(N)
    pa, pb = pairs[:, 0], pairs[:, 1]
    P = pairs.shape[0]
    K, Th, dd, ss = m.K, prev.Theta, m.dd, m.ss
    Th_p, dd_p, ss_p = Th[pa, pb], dd[pa, pb], ss[pa, pb]

    def to_pairs(T: Tensor) -> Tensor:  # (N, N, N, N) → (P, P)
        return T[pa[:, None], pb[:, None], pa[None, :], pb[None, :]]

    # symmetric-variable derivative ∂/∂K_q = ½⟨∂_c∂_d⟩ (c = d) or ⟨∂_c∂_d⟩ (c ≠ d)
    half = torch.where(pa == pb, 0.5, 1.0)
    P_X = lam_W * t["P_ss"] + C_W * Th[:, :, None, None] * t["P_dd"]  # ⟨∂∂X⟩ (a, b, β1, β2)
    bmat = to_pairs(P_X) * half[None, :]
    a = g2 + C_W * dd_p  # (P,)
    A_psi = residual_jacobian(net, layer, m)
    cov_ss = to_pairs(t["ssss"]) - torch.outer(ss_p, ss_p)
    cov_ds = to_pairs(t["ddss"]) - torch.outer(dd_p, ss_p)  # Cov(σ'σ'_p, σσ_q)
    cov_dd = to_pairs(t["dddd"]) - torch.outer(dd_p, dd_p)
    cW = C_W * Th_p
    var_e = (
        lam_W**2 * cov_ss
        + lam_W * (cW[:, None] * cov_ds + cov_ds.T * cW[None, :])
        + cW[:, None] * cW[None, :] * cov_dd
    )
    cov_e_phi = lam_W * cov_ss + cW[:, None] * cov_ds  # Cov(e_p, σσ_q)
    h = prev.path_K.shape[0]
    cs, cd, cb, B_psi = prev.path_cs, prev.path_cd, prev.path_cb, prev.path_B
    zero = torch.zeros((P, P), dtype=torch.float64)
    E_R = torch.zeros((N,) * 4, dtype=torch.float64)
    if h:
        Q = path_slot_covariances(m.act, prev.path_K, prev.path_g, K, m.tol)
        y_ps = torch.einsum("mpr,mrq->pq", B_psi, Q["ss"])  # Cov(ψ_p, σσ_q(z^{(ℓ)}))
        y_pd = torch.einsum("mpr,mrq->pq", B_psi, Q["sd"])
        y_cs = torch.einsum("mpr,mrq->pq", cs, Q["ss"]) + torch.einsum("mpr,mrq->pq", cd, Q["ds"])
        y_cd = torch.einsum("mpr,mrq->pq", cs, Q["sd"]) + torch.einsum("mpr,mrq->pq", cd, Q["dd"])
        # E[σ'_aσ'_b(z^{(ℓ)}) φ_R;abcd], φ_R;abcd = Σ_m cb_m;abcd φ_dd;cd(z^{(m)})
        Qdd = Q["dd"][:, index[:, :, None, None], index[None, None, :, :]]  # (m, c, d, a, b)
        E_R = torch.einsum("mabcd,mcdab->abcd", cb, Qdd)
    else:
        y_ps = y_pd = y_cs = y_cd = zero
    cov_psi_e = lam_W * y_ps + y_pd * cW[None, :]  # Cov(ψ_p, e_q(z^{(ℓ)}))
    cov_chi_e = lam_W * y_cs + y_cd * cW[None, :]
    Psi, X = prev.Psi, prev.X
    A, Xi, Z = prev.Ap, prev.Xi, prev.Zc
    aA = a[:, None] * A * a[None, :]
    aXb = a[:, None] * Xi @ bmat.T
    new_A = r * (aA + aXb + aXb.T + bmat @ Psi @ bmat.T) + var_e
    ce = a[:, None] * cov_chi_e + bmat @ cov_psi_e
    new_A = new_A + ce + ce.T
    new_Xi = r * (a[:, None] * Xi + bmat @ Psi) @ A_psi.T + C_W * (a[:, None] * y_cs + bmat @ y_ps)
    new_Xi = new_Xi + cov_psi_e.T @ A_psi.T + C_W * cov_e_phi
    if gamma != 0.0:
        # Cov(e_p, z_c z_d) = Σ_ef K_ce K_df ⟨∂_e∂_f e_p⟩ (Stein)
        KPK = torch.einsum("ce,abef,df->abcd", K, P_X, K)
        new_Z = g2 * (r * (a[:, None] * Z + bmat @ X) + to_pairs(KPK))
    else:
        new_Z = zero
    # B[a,b,c,d] = n E[Ĥ_ik;ac Ĥ_ik;bd] = β + φ_R(i) + φ_L(k), φ_L;abcd = φ_R;cdab
    ThTh = Th[:, None, :, None] * Th[None, :, None, :]  # Θ_ac Θ_bd
    D_ab, D_cd = dd[:, :, None, None], dd[None, None, :, :]
    new_B = C_W**2 * ThTh * t["dddd"] + g2 * C_W * ThTh * (D_ab + D_cd)
    new_B = new_B + r * (
        (g2 + C_W * D_ab) * (g2 + C_W * D_cd) * prev.B
        + C_W * (g2 + C_W * D_cd) * E_R
        + C_W * (g2 + C_W * D_ab) * E_R.permute(2, 3, 0, 1)
    )
    out = {
        "D": pairs_to_tensor(new_Xi + new_Z, N),
        "A": pairs_to_tensor(new_A, N),
        "B": new_B,
        "Ap": new_A,
        "Xi": new_Xi,
        "Zc": new_Z,
    }
    eye = torch.eye(P, dtype=torch.float64)[None]
    if keep is None:
        out |= _empty_residual(N)
    else:
        out["path_cs"] = torch.cat([a[:, None] * cs + bmat @ B_psi, lam_W * eye])[keep]
        out["path_cd"] = torch.cat([a[:, None] * cd, torch.diag(cW)[None]])[keep]
        new_cb = (g2 * C_W * ThTh)[None]
        out["path_cb"] = torch.cat([r * g2 * (g2 + C_W * D_cd) * cb, new_cb])[keep]
    return out


def _mixed_path_products(act: object, path_K: Tensor, path_g: Tensor, K: Tensor, tol: float):
    """E[σ_{c'}σ'_c(z^{(ℓ)}) σ_{e1}σ'_{e2}(z^{(m)})] per earlier layer m of one path,
    (h, c, c', e1, e2): the cross-layer functions μ of the F form."""
    h, N = path_K.shape[0], K.shape[0]
    big = torch.block_diag(*_joint_kernels(path_K, path_g, K))
    grid = torch.cartesian_prod(*[torch.arange(N)] * 4)  # (c, c', e1, e2)
    base = (2 * N * torch.arange(h)).repeat_interleave(grid.shape[0])
    g = grid.repeat(h, 1)
    idx = torch.stack([base + g[:, 2], base + g[:, 3], base + N + g[:, 1], base + N + g[:, 0]], 1)
    return _slot_products(act, big, idx, (0, 1, 0, 1), tol).reshape((h,) + (N,) * 4)


def _residual_F(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, keep: Tensor
) -> dict[str, Tensor]:
    """F^{(ℓ+1)} and the forms Q^{ac} of q(i, k)_{ac} = n E[Ĥ_ik;ac | paths] over the basis
    f = (1, z_path, z^{(ℓ)}, s_path) with s_{e1e2} = σ_{e1}σ'_{e2} (N² per layer); see the
    comment above :func:`_path_rule` (written there for one input) — on N inputs ε̃ = G⁻¹ε replaces ε/G, and
    the s functions, the μ's and α carry input indices:

        q' = ε̃_iᵀα^{ac}ε̃_k + γC_WΘ_ac(ε̃_k·s_{·c}(i) + ε̃_i·s_{·a}(k))
             + rγC_W(f(i)ᵀQ^{ac}μ^{cᵀ}ε̃_k + ε̃_iᵀμ^aQ^{ac}f(k)) + rγ²q,
        α^{ac} = C_W²(Θ_ac⟨σ_{a'}σ'_aσ'_cσ_{c'}⟩ + r μ^aQ^{ac}μ^{cᵀ}),  μ^c_{c'β} = E[σ_{c'}σ'_c f_β],

    and F[a, b, c, d] = n E[Ĥ_ik;ac z_i;b z_k;d] = ν^bᵀQ'^{ac}ν^d, ν^b_β = E[f_β z^{(ℓ+1)}_b]."""
    i = layer - 1
    C_W, C_b, gamma = net.C_W[i], net.C_b[i], net.skip[i]
    r = width_ratio(net, layer)
    t = m.fluctuation_terms
    N, K, Th = m.N, m.K, prev.Theta
    h = prev.path_K.shape[0]
    Km, g = prev.path_K, prev.path_g
    P1 = t["P1"]  # ⟨∂_β(σ'_aσ_b)⟩ (a, b, β)
    S1 = m.local.mean(0, 1)  # ⟨σ_aσ'_b⟩
    G = C_b + C_W * m.ss
    Ginv = torch.linalg.inv(G)
    hN, hN2, N2 = h * N, h * N * N, N * N
    D_old = 1 + hN + N + hN2
    D_full = 1 + hN + 2 * N + hN2 + N2
    zc, zn, sp, sc = 1 + hN, 1 + hN + N, 1 + hN + 2 * N, 1 + hN + 2 * N + hN2  # block starts
    # μ^c over the old basis: (c, c', D_old)
    mu = torch.zeros((N, N, D_old), dtype=torch.float64)
    mu[:, :, 0] = S1.T
    if h:
        mu[:, :, 1:zc] = torch.einsum("m,meb,kcb->kcme", g, Km, P1).reshape(N, N, hN)
        E_s = _mixed_path_products(m.act, Km, g, K, m.tol)  # (m, c, c', e1, e2)
        mu[:, :, zc + N :] = E_s.permute(1, 2, 0, 3, 4).reshape(N, N, hN2)
    mu[:, :, zc : zc + N] = torch.einsum("eb,kcb->kce", K, P1)
    Q = prev.Fq  # (a, c, D_old, D_old)
    old = torch.cat([torch.arange(zn), torch.arange(sp, sp + hN2)])  # old basis → full
    Qe = torch.zeros((N, N, D_full, D_full), dtype=torch.float64)
    Qe[:, :, old[:, None], old[None, :]] = Q
    mue = torch.zeros((N, N, D_full), dtype=torch.float64)
    mue[:, :, old] = mu
    E = torch.zeros((N, D_full), dtype=torch.float64)  # ε̃ = E f
    E[:, zn : zn + N] = Ginv
    E[:, zc : zc + N] = -gamma * Ginv
    four = t["ddss"]  # ⟨σ'_aσ'_cσ_{a'}σ_{c'}⟩ indexed (a, c, a', c')
    muQmu = torch.einsum("axu,acuv,cyv->acxy", mue, Qe, mue)
    alpha = C_W**2 * (Th[:, :, None, None] * four + r * muQmu)
    Qn = torch.einsum("xu,acxy,yv->acuv", E, alpha, E)
    # s_{c'c}(i) ε̃_{k;c'}: the s^{(ℓ)} row of index (c', c) meets ε̃_{c'}
    Ssel = torch.zeros((N, D_full, N), dtype=torch.float64)  # (c, full row, c')
    cc = torch.arange(N)
    for_c = sc + cc[None, :] * N + cc[:, None]  # (c, c') → index of s_{c'c}
    Ssel[cc[:, None], for_c, cc[None, :]] = 1.0
    SE = torch.einsum("cuy,yv->cuv", Ssel, E)  # (c, D, D)
    two = gamma * C_W * Th[:, :, None, None] * SE[None, :, :, :]  # f(i)ᵀ S^c E f(k)
    three = gamma * C_W * Th[:, :, None, None] * SE[:, None].transpose(-1, -2)
    Qn = Qn + two + three
    QmuE = torch.einsum("acuw,cyw,yv->acuv", Qe, mue, E)
    # the mirror ε̃_iᵀμ^aQ^{ac}f(k) is the (k, i) term of QmuE^{ca}, as Q^{ac} = (Q^{ca})ᵀ
    Qn = Qn + r * gamma * C_W * (QmuE + QmuE.permute(1, 0, 3, 2)) + r * gamma**2 * Qe
    # ν^b over the full basis
    nu = torch.zeros((N, D_full), dtype=torch.float64)
    if h:
        nu[:, 1:zc] = (gamma * g[:, None, None] * Km).permute(2, 0, 1).reshape(N, hN)
        P1m = prev.path_P1  # (m, a, b, β)
        s_z = torch.einsum("m,mbq,mxeq->bmex", g, Km, P1m)  # E[σ_eσ'_x(z^{(m)}) z^{(ℓ)}_b]
        nu[:, sp:sc] = gamma * s_z.reshape(N, hN2)
    nu[:, zc:zn] = gamma * K
    nu[:, zn : zn + N] = G + gamma**2 * K
    nu[:, sc:] = gamma * torch.einsum("bq,xeq->bex", K, P1).reshape(N, N2)
    F = torch.einsum("bu,acuv,dv->abcd", nu, Qn, nu)
    # reduce to the basis of layer ℓ+1: (1, z_kept, z^{(ℓ+1)}, s_kept)
    s_means = torch.cat([prev.path_s1, S1[None]])  # (h + 1, e1, e2)
    k = int(keep.sum())
    kept = torch.nonzero(keep).flatten()
    dropped = torch.nonzero(~keep).flatten()
    T = torch.zeros((1 + (k + 1) * N + k * N2, D_full), dtype=torch.float64)
    T[0, 0] = 1.0
    ar, ar2 = torch.arange(N), torch.arange(N2)
    for j_new, j in enumerate(kept.tolist()):  # ≤ depth layers: the form's blocks
        T[1 + j_new * N + ar, 1 + j * N + ar] = 1.0
        T[1 + (k + 1) * N + j_new * N2 + ar2, sp + j * N2 + ar2] = 1.0
    T[1 + k * N + ar, zn + ar] = 1.0
    for j in dropped.tolist():
        T[0, sp + j * N2 + ar2] = s_means[j].reshape(N2)
    Fq = torch.einsum("xu,acuv,yv->acxy", T, Qn, T)
    P1s = torch.cat([prev.path_P1, P1[None]])[keep]
    return {"F": F, "Fq": Fq, "path_P1": P1s, "path_s1": s_means[keep]}


def _zero_fluctuations(net: MLP, g: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((g.shape[0],) * 4, dtype=torch.float64)
    out = {k: zero for k in ("D", "F", "A", "B")}
    if net.residual:
        out |= _residual_first(g)
    return out


FLUCTUATIONS = Recursion(
    "fluctuations",
    first=_zero_fluctuations,
    step=fluctuation_step,
    requires=(VERTEX, NTK_MEAN),
)


def ntk_fluctuations(
    net: MLP, x: np.ndarray | Tensor, *, max_memory: int | None = None
) -> NTKFluctuations:
    """D, F, A, B: the O(1/n) NTK–preactivation correlations and NTK variance (book §8.3–8.4).

    Computed by the coupled layer-to-layer recursions (with the four-point vertex V of
    :func:`pdlt.four_point_vertex`, book §4.3) from A = B = D = F = V = 0 at layer 1, so layer 2
    is exact at O(1/n_1).

    Residual MLPs (``net.skip``): by the per-neuron path recursion derived above
    :func:`residual_fluctuation_step` (each neuron's influence χ on the shared NTK beside its
    influence ψ on the shared kernel, and the path-conditional forms of n E[Ĥ_ik²] and
    n E[Ĥ_ik]); A, B, D, F are then the distinct-neuron moments of the class docstring
    (n Cov(Ĥ_ii, Ĥ_kk), n E[Ĥ_ik²], n Cov(Ĥ_ii, z_k²), n E[Ĥ_ik z_i z_k]), on up to 8 inputs
    (the cross-layer four-input expectations: relu family in closed form, smooth σ by
    cubature; other kinked σ such as ELU by the kinked cubature, measured 6e-4–1e-2 relative
    on four distinct correlated variables, :mod:`pdlt.gaussian.products`). Two-point means and all Stein projections are 1- or 2-D kink-split
    Gauss–Legendre quadratures over one pair of inputs (derivatives of kinked σ enter through
    Stein's lemma, so ReLU is exact); four-point functions over three or four distinct inputs use
    the cubature of :func:`pdlt.gaussian.expect_product` (≲1e-7 smooth σ, ≲1e-6 kinked σ).

    Parameters
    ----------
    net:
        Network spec (its widths enter through r_ℓ = n_ℓ/n_{ℓ−1}; λ's, C's per layer).
    x:
        Inputs, (N, n_0) with N ≤ 8 (cost grows like N⁴; N ≤ 2 is fastest and exact to
        quadrature accuracy for every activation).
    max_memory:
        Cap in bytes on the Gaussian engine's work arrays (default: ``PDLT_MAX_MEMORY``, else
        2 GiB); work that cannot fit raises a ValueError naming the cap.

    Returns
    -------
    NTKFluctuations
        ``.D, .F, .A, .B, .V`` float64 (L, N, N, N, N); see the class for the index structure.

    Examples
    --------
    >>> net = pdlt.MLP("relu", depth=5, width=64, input_dim=4, C_W=2.0)
    >>> fl = pdlt.ntk_fluctuations(net, np.ones((1, 4)))
    >>> fl.A[:, 0, 0, 0, 0]        # 0, 13, 61, 166, 350
    """
    xt = fluctuation_inputs(net, x, "ntk_fluctuations", residual_inputs=MAX_FLUCTUATION_INPUTS)
    N = xt.shape[0]
    with warnings.catch_warnings(record=True) as caught:  # one warning per kind, not per layer
        warnings.simplefilter("always")
        walk = propagate(net, gram(xt), [FLUCTUATIONS], max_memory=check_max_memory(max_memory))
    for message in dict.fromkeys(str(w.message) for w in caught):
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return NTKFluctuations(
        **{k: walk.numpy(k) for k in ("D", "F", "A", "B")},
        V=pairs_to_tensor(walk.numpy("V"), N),
        Theta=walk.numpy("Theta"),
        K=walk.numpy("K"),
        net=net,
        x=xt.numpy(),
    )
