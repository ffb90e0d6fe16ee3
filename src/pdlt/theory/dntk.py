"""Representation learning at O(1/n): the dNTK statistics P, Q and the 1/n correction to the NTK
mean (book ch. 11, §9.0's expansion of the NTK mean).

The dNTK (book eq. 11.8)

    dĤ_{i0i1i2;δ0δ1δ2} = Σ λ_{μ1ν1} λ_{μ2ν2} (d²z_{i0;δ0}/dθ_μ1 dθ_μ2)(dz_{i1;δ1}/dθ_ν1)(dz_{i2;δ2}/dθ_ν2)

makes the NTK move during training: one step of gradient descent on the loss changes the NTK by
ΔĤ_{i1i2;δ1δ2} = −η Σ_{j,α̃} (dĤ_{i1i2j;δ1δ2α̃} + dĤ_{i2i1j;δ2δ1α̃}) ε_{j;α̃} + O(η²). Its mean vanishes;
its correlation with one preactivation is O(1/n) (book eq. 11.45):

    E[dĤ_{i0i1i2;δ0δ1δ2} z_{i3;δ3}] = (1/n_{ℓ−1}) [δ_{i0i3}δ_{i1i2} P_{δ0δ1δ2δ3}
                                       + δ_{i0i1}δ_{i2i3} Q_{δ0δ1δ2δ3} + δ_{i0i2}δ_{i1i3} Q_{δ0δ2δ1δ3}]

with P, Q following layer to layer (book eq. 11.49, 11.52; index conventions as in the
measurement, :func:`pdlt.empirical_dntk`): with r = n_ℓ/n_{ℓ−1}, ⟨·⟩ at K^{(ℓ)}, Θ = Θ^{(ℓ)},

    P' = C_W² Θ_{δ0δ1}Θ_{δ0δ2} ⟨σ''_{δ0}σ'_{δ1}σ'_{δ2}σ_{δ3}⟩
         + r C_W² ⟨σ'_{δ1}σ'_{δ2}⟩ [⟨σ''_{δ0}σ_{δ3}⟩ B_{δ0δ0δ1δ2} + Σ_β P_{δ0δ1δ2β} ⟨∂_β(σ'_{δ0}σ_{δ3})⟩]
    Q' = (λ_W/C_W) F'_{δ0δ1δ2δ3} + C_W² Θ_{δ0δ1}Θ_{δ0δ2} ⟨σ''_{δ0}σ'_{δ1}σ'_{δ2}σ_{δ3}⟩
         + r C_W² [Θ_{δ0δ1} Σ_{ββ'} F_{δ0βδ2β'} ⟨∂_β(σ''_{δ0}σ'_{δ1})⟩⟨∂_β'(σ'_{δ2}σ_{δ3})⟩
                   + ⟨σ'_{δ0}σ'_{δ1}⟩ Σ_β Q_{δ0δ1δ2β} ⟨∂_β(σ'_{δ2}σ_{δ3})⟩]

(F' the layer-(ℓ+1) value of the NTK–preactivation correlation, B the NTK variance of
:func:`pdlt.ntk_fluctuations`). σ'' is the explicit chain-rule derivative (zero for ReLU); the
projections ⟨∂·⟩ are Stein's (kinks included).

The NTK mean at O(1/n), E[Ĥ] = Θ + Θ1/n_{ℓ−1}: the book gives the expansion (eq. 9.3) but not
the recursion of its coefficient (§∞.2, footnote 7). pdlt derives it by the same expansion —
it is the second-order Taylor expansion of ⟨X⟩_{K+ΔĜ} plus the NTK–metric correlations:

    Θ1' = r [C_W ⟨σ'σ'⟩ Θ1 + ½ Σ G1_{β1β2} ⟨∂∂X⟩ + ⅛ Σ V ⟨∂⁴X⟩
             + (C_W/2) Σ D_{δ1δ2β1β2} ⟨∂β1∂β2(σ'σ')⟩ + C_W Σ F_{δ1β1δ2β2} ⟨∂β1∂β2(σ'_{δ1}σ'_{δ2})⟩],

X_{δ1δ2} = λ_W σ_{δ1}σ_{δ2} + C_W Θ_{δ1δ2} σ'_{δ1}σ'_{δ2}, G1 = K1 the metric correction. Checked
against real networks in ``tests/test_dntk_theory.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments
from pdlt.network import MLP
from pdlt.theory.layers import LayerState, Recursion, gram, propagate, width_ratio
from pdlt.theory.ntk import FLUCTUATIONS, fluctuation_inputs
from pdlt.theory.vertex import CORRECTION, pairs_to_tensor

Tensor = torch.Tensor


def dntk_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, cur: LayerState
) -> dict[str, Tensor]:
    """P, Q of layer ℓ+1 = ``layer`` (book eq. 11.49, 11.52)."""
    i = layer - 1
    C_W, lam_W = net.C_W[i], net.lambda_W[i]
    r = width_ratio(net, layer)
    loc = m.local
    Th = prev.Theta
    four = loc.four_point((2, 1, 1, 0))  # ⟨σ''_a σ'_b σ'_c σ_d⟩
    p_sd = loc.projection(1, 0, 1)  # ⟨∂_β(σ'_a σ_d)⟩: (a, d, β)
    p_2d = loc.projection(2, 1, 1)  # ⟨∂_β(σ''_a σ'_b)⟩: (a, b, β)
    s2s = loc.mean(2, 0)  # ⟨σ''_a σ_d⟩
    local = C_W**2 * Th[:, :, None, None] * Th[:, None, :, None] * four
    B_aa = torch.diagonal(prev.B, dim1=0, dim2=1).permute(2, 0, 1)  # B[a, a, b, c] → (a, b, c)
    new_P = local + r * C_W**2 * m.dd[None, :, :, None] * (
        s2s[:, None, None, :] * B_aa[..., None] + torch.einsum("abce,ade->abcd", prev.P, p_sd)
    )
    F_term = torch.einsum("aecf,abe,cdf->abcd", prev.F, p_2d, p_sd)
    Q_term = torch.einsum("abce,cde->abcd", prev.Q, p_sd)
    new_Q = (
        lam_W / C_W * cur.F
        + local
        + r * C_W**2 * (Th[:, :, None, None] * F_term + m.dd[:, :, None, None] * Q_term)
    )
    return {"P": new_P, "Q": new_Q}


def ntk_correction_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments
) -> dict[str, Tensor]:
    """Θ1 of layer ℓ+1 = ``layer``: the coefficient of 1/n_ℓ in E[Ĥ^{(ℓ+1)}] (pdlt's derivation,
    module docstring)."""
    i = layer - 1
    C_W, lam_W = net.C_W[i], net.lambda_W[i]
    loc = m.local
    Th = prev.Theta
    N = m.N
    V = pairs_to_tensor(prev.V, N)
    P_dd = m.fluctuation_terms["P_dd"]
    P_X = lam_W * m.fluctuation_terms["P_ss"] + C_W * Th[:, :, None, None] * P_dd
    P4_X = lam_W * loc.projection(0, 0, 4) + C_W * Th[:, :, None, None, None, None] * (
        loc.projection(1, 1, 4)
    )
    new = (
        C_W * m.dd * prev.Theta1
        + 0.5 * torch.einsum("bc,pqbc->pq", prev.K1, P_X)
        + 0.125 * torch.einsum("bcde,pqbcde->pq", V, P4_X)
        + 0.5 * C_W * torch.einsum("pqbc,pqbc->pq", prev.D, P_dd)
        + C_W * torch.einsum("pbqc,pqbc->pq", prev.F, P_dd)
    )
    return {"Theta1": width_ratio(net, layer) * new}


def _zeros4(net: MLP, g: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((g.shape[0],) * 4, dtype=torch.float64)
    return {"P": zero, "Q": zero}


DNTK = Recursion(
    "dntk", first=_zeros4, step=dntk_step, requires=(FLUCTUATIONS,), reads_current=True
)
NTK_CORRECTION = Recursion(
    "ntk_correction",
    first=lambda net, g: {"Theta1": torch.zeros_like(g)},
    step=ntk_correction_step,
    requires=(FLUCTUATIONS, CORRECTION),
)


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, eq=False)
class DNTKStatistics:
    """The dNTK–preactivation correlations of every layer (book §11.2–11.3).

    Attributes
    ----------
    P, Q:
        float64 (depth, N, N, N, N), coefficients of 1/n_{ℓ−1}: ``P[l-1, a, b, c, d]`` =
        n·E[dĤ_{ijj;abc} z_{i;d}], ``Q[l-1, a, b, c, d]`` = n·E[dĤ_{iij;abc} z_{j;d}] (i ≠ j neurons of
        layer l; a is the sample of the twice-differentiated output). Zero at layer 1.
    Theta, K:
        (depth, N, N) frozen NTK and kernel.
    B, F:
        The NTK fluctuations they rest on (:class:`pdlt.theory.ntk.NTKFluctuations` layout).
    net, x:
        Spec and inputs.
    """

    P: np.ndarray
    Q: np.ndarray
    Theta: np.ndarray
    K: np.ndarray
    B: np.ndarray
    F: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("P", "Q")

    def normalized(self, width: int | None = None) -> dict[str, np.ndarray]:
        """P/(nΘ²) and Q/(nΘ²) on the diagonal (a = b = c = d), per layer and input, with n the
        network's n_{ℓ−1} (or ``width``): the book's dimensionless measures (§11.3)."""
        n = np.asarray(self.net.widths[:-1], float)[:, None] if width is None else float(width)
        idx = np.arange(self.Theta.shape[1])
        th2 = self.Theta[:, idx, idx] ** 2
        return {
            "P/Theta^2": self.P[:, idx, idx, idx, idx] / th2 / n,
            "Q/Theta^2": self.Q[:, idx, idx, idx, idx] / th2 / n,
        }

    def ntk_change(self, learning_rate: float) -> np.ndarray:
        """The mean change of the output-layer NTK in the first step of full-batch gradient
        descent on the MSE loss ½Σ(z − y)² over the inputs x as training set, at O(η) and O(1/n)
        (book §11.1: ΔĤ = −η Σ_j (dĤ_{i1i2j} + dĤ_{i2i1j}) ε_j, ε = z − y, E[dĤ] = 0):

            E[ΔĤ_{ii;δ1δ2}] = −(η/n_{L−1}) Σ_α̃ [P_{δ1δ2α̃α̃} + n_L Q_{δ1δ2α̃α̃} + Q_{δ1α̃δ2α̃}
                                                + (δ1 ↔ δ2)],

        independent of the targets; off-diagonal neurons do not move on average. (N, N).
        Representation learning in one number: it vanishes like 1/n."""
        eta = float(learning_rate)
        P, Q = self.P[-1], self.Q[-1]
        n_L, n = self.net.output_dim, self.net.widths[-2]
        inner = np.einsum("xyaa->xy", P) + n_L * np.einsum("xyaa->xy", Q) + np.einsum("xaya->xy", Q)
        return -eta / n * (inner + inner.T)

    def to_frame(self) -> pd.DataFrame:
        return long_frame({"P": self.P, "Q": self.Q})

    def __repr__(self) -> str:
        L, N = self.P.shape[:2]
        return f"DNTKStatistics(depth={L}, inputs={N})"


@dataclass(frozen=True, eq=False)
class NTKCorrection:
    """The NTK mean through O(1/n): E[Ĥ^{(ℓ)}_{i1i2}] = δ_{i1i2}[Θ + Θ1/n_{ℓ−1}] + O(1/n²).

    Attributes
    ----------
    Theta1:
        float64 (depth, N, N); zero at layers 1 and 2 (the first layer is deterministic, the
        second's mean is exact at any width).
    Theta, K, K1:
        Frozen NTK, kernel and kernel correction (depth, N, N).
    net, x:
        Spec and inputs.
    """

    Theta1: np.ndarray
    Theta: np.ndarray
    K: np.ndarray
    K1: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("Theta1",)

    @property
    def mean(self) -> np.ndarray:
        """Θ + Θ1/n_{ℓ−1} at the network's widths, (depth, N, N)."""
        n = np.asarray(self.net.widths[:-1], float)[:, None, None]
        return self.Theta + self.Theta1 / n

    def to_frame(self) -> pd.DataFrame:
        return long_frame({"Theta": self.Theta, "Theta1": self.Theta1})

    def __repr__(self) -> str:
        L, N, _ = self.Theta1.shape
        return f"NTKCorrection(depth={L}, inputs={N}, Theta1^(L)_diag={np.round(np.diag(self.Theta1[-1]), 6)})"


def dntk(net: MLP, x: np.ndarray | Tensor) -> DNTKStatistics:
    """The dNTK statistics P and Q of every layer (book §11.2–11.3, eq. 11.49, 11.52).

    Parameters
    ----------
    net:
        Network spec (per-layer C_b, C_W, λ_b, λ_W; non-uniform widths through r = n_ℓ/n_{ℓ−1}).
    x:
        Inputs (N, n_0), N ≤ 8, linearly independent enough that every layer's kernel is
        invertible.

    Returns
    -------
    DNTKStatistics
        ``.P``, ``.Q`` float64 (L, N, N, N, N); measure them with
        ``pdlt.measure(net, x, M, statistics=("dntk",))`` and pair with :func:`pdlt.compare`.

    Examples
    --------
    >>> d = pdlt.dntk(pdlt.MLP("tanh", 5, 100, 4, C_W=1.0), np.ones((1, 4)))
    >>> d.P[1:, 0, 0, 0, 0]        # −0.3827, −0.9252, −1.6758, −2.6952
    """
    xt = fluctuation_inputs(net, x, "dntk")
    walk = propagate(net, gram(xt), [DNTK])
    return DNTKStatistics(
        P=walk.numpy("P"),
        Q=walk.numpy("Q"),
        Theta=walk.numpy("Theta"),
        K=walk.numpy("K"),
        B=walk.numpy("B"),
        F=walk.numpy("F"),
        net=net,
        x=xt.numpy(),
    )


def ntk_correction(net: MLP, x: np.ndarray | Tensor) -> NTKCorrection:
    """The 1/n correction Θ1 to the NTK mean of every layer: E[Ĥ] = Θ + Θ1/n_{ℓ−1} + O(1/n²)
    (book eq. 9.3; the recursion is pdlt's, see :mod:`pdlt.theory.dntk`).

    Examples
    --------
    >>> c = pdlt.ntk_correction(pdlt.MLP("tanh", 5, 100, 4, C_W=1.0), np.ones((1, 4)))
    >>> c.Theta1[:, 0, 0]        # 0, 0, 0.003773, 0.026621, 0.072117
    """
    xt = fluctuation_inputs(net, x, "ntk_correction")
    walk = propagate(net, gram(xt), [NTK_CORRECTION])
    return NTKCorrection(
        Theta1=walk.numpy("Theta1"),
        Theta=walk.numpy("Theta"),
        K=walk.numpy("K"),
        K1=walk.numpy("K1"),
        net=net,
        x=xt.numpy(),
    )
