"""The neural tangent kernel at initialization (book ch. 7–9).

With the book's per-layer learning rates — λ_b^{(ℓ)} for the biases of layer ℓ and
λ_W^{(ℓ)}/n_{ℓ−1} for its weights (§7.1, eq. 8.x) — the NTK of layer ℓ is

    Ĥ^{(ℓ)}_{i1 i2; δ1 δ2} = Σ_{μν} λ_{μν} dz^{(ℓ)}_{i1;δ1}/dθ_μ dz^{(ℓ)}_{i2;δ2}/dθ_ν .

Its exact forward equation (eq. 8.12) reads

    Ĥ^{(ℓ+1)}_{i1i2} = δ_{i1i2} [λ_b + (λ_W/n_ℓ) Σ_j σ_{j;δ1} σ_{j;δ2}]
                     + Σ_{j1 j2} W_{i1 j1} W_{i2 j2} σ'_{j1;δ1} σ'_{j2;δ2} Ĥ^{(ℓ)}_{j1 j2} ,

and at infinite width its mean is the *frozen NTK* Θ (§8.1–8.2, eq. 8.47–8.50):

    Θ^{(1)}_{δ1δ2}   = λ_b^{(1)} + λ_W^{(1)} x_{δ1}·x_{δ2} / n_0
    Θ^{(ℓ+1)}_{δ1δ2} = λ_b^{(ℓ+1)} + λ_W^{(ℓ+1)} ⟨σ_{δ1} σ_{δ2}⟩_{K^{(ℓ)}}
                     + C_W^{(ℓ+1)} ⟨σ'_{δ1} σ'_{δ2}⟩_{K^{(ℓ)}} Θ^{(ℓ)}_{δ1δ2} .

This module gives Θ (:func:`ntk`), its O(1/n) fluctuations D, F, A, B (:func:`ntk_fluctuations`),
the NTK criticality diagnosis (:func:`ntk_criticality`, ch. 9) and the learning-rate scaling
that makes the NTK depth independent (:func:`learning_rates`, §9.2–9.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import pair_expectation
from pdlt.network import MLP, validate_inputs
from pdlt.theory.kernel import kernel_layers

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
    """

    Theta: np.ndarray
    K: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("Theta",)

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per layer and unordered input pair (a ≤ b), columns Θ and K."""
        return long_frame({"Theta": self.Theta, "K": self.K})

    def __repr__(self) -> str:
        L, N, _ = self.Theta.shape
        return f"NTK(depth={L}, inputs={N}, Theta^(L)_diag={np.round(np.diag(self.Theta[-1]), 6)})"


def first_layer_ntk(x: Tensor, lambda_b: float, lambda_W: float) -> Tensor:
    """Θ^{(1)}_{δ1δ2} = λ_b + λ_W x_{δ1}·x_{δ2}/n_0 (book eq. 8.23); exact at any width."""
    return lambda_b + lambda_W * (x @ x.T) / x.shape[1]


def ntk_map(net: MLP, K: Tensor, Theta: Tensor, layer: int) -> Tensor:
    """One step of the frozen-NTK recursion (book eq. 8.50), Θ^{(ℓ)} → Θ^{(ℓ+1)}, ``layer = ℓ+1``:

    λ_b^{(ℓ+1)} + λ_W^{(ℓ+1)} ⟨σσ⟩_{K^{(ℓ)}} + C_W^{(ℓ+1)} ⟨σ'σ'⟩_{K^{(ℓ)}} Θ^{(ℓ)}.
    """
    i = layer - 1
    ss = pair_expectation(net.activation, K, (0, 0))
    dd = pair_expectation(net.activation, K, (1, 1))
    return net.lambda_b[i] + net.lambda_W[i] * ss + net.C_W[i] * dd * Theta


def ntk_layers(net: MLP, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """([K^{(1)}, …, K^{(L)}], [Θ^{(1)}, …, Θ^{(L)}]) as float64 tensors."""
    Ks = kernel_layers(net, x)
    Thetas = [first_layer_ntk(x, net.lambda_b[0], net.lambda_W[0])]
    for layer in range(2, net.depth + 1):
        Thetas.append(ntk_map(net, Ks[layer - 2], Thetas[-1], layer))
    return Ks, Thetas


def ntk(net: MLP, x: np.ndarray | Tensor) -> NTK:
    """The frozen NTK Θ^{(ℓ)}_{δ1δ2} of every layer ℓ = 1…L (book §8.1–8.2, eq. 8.50).

    Uses the network's per-layer learning rates in the book's convention: λ_b^{(ℓ)} for biases
    and λ_W^{(ℓ)}/n_{ℓ−1} for weights, so each layer adds an O(1) amount. Any activation; closed
    forms where registered, quadrature otherwise.

    Parameters
    ----------
    net:
        The network spec (its ``lambda_b``, ``lambda_W`` set the learning rates).
    x:
        Inputs, (N, n_0) numpy array or torch tensor.

    Returns
    -------
    NTK
        ``.Theta`` float64 (L, N, N) with ``Theta[l-1] = Θ^{(l)}``; ``.K`` the kernel.

    Examples
    --------
    >>> net = pdlt.MLP("relu", depth=5, width=256, input_dim=4, C_W=2.0)
    >>> pdlt.ntk(net, np.ones((1, 4))).Theta[:, 0, 0]      # Θ^{(ℓ)} = 2ℓ (λ's = 1, K* = 2)
    array([ 2.,  4.,  6.,  8., 10.])
    """
    xt = validate_inputs(net, x)
    Ks, Thetas = ntk_layers(net, xt)
    Theta = torch.stack(Thetas)
    if not torch.isfinite(Theta).all():
        raise FloatingPointError(
            "the NTK overflowed: the gradients explode with this depth and C_W "
            "(try a critical C_W, fewer layers or smaller learning rates)"
        )
    return NTK(Theta=Theta.numpy(), K=torch.stack(Ks).numpy(), net=net, x=xt.numpy())
