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

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments
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
from pdlt.theory.residual_ntk import _residual_first, residual_fluctuation_step
from pdlt.theory.vertex import (
    VERTEX,
    pairs_to_tensor,
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
