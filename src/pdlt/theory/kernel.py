"""The infinite-width kernel K^{(ℓ)} (book §4.1–4.3).

At infinite width the preactivations of every layer are Gaussian, independent across neurons,
with covariance δ_ij K^{(ℓ)}_{αβ} over the inputs. The first layer is exact at any width,

    K^{(1)}_{αβ} = C_b^{(1)} + C_W^{(1)} (1/n_0) Σ_j x_{j;α} x_{j;β}             (§4.1)

and each layer follows from the last by the kernel map

    K^{(ℓ+1)}_{αβ} = C_b^{(ℓ+1)} + C_W^{(ℓ+1)} ⟨σ(z_α) σ(z_β)⟩_{K^{(ℓ)}}       (§4.3)

A residual layer z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γ z^{(ℓ)} adds γ² K^{(ℓ)} (book eq. B.11, ξ = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments
from pdlt.network import MLP, validate_inputs
from pdlt.theory.layers import LayerState, Recursion, gram, propagate

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class Kernel:
    """The infinite-width kernel of every layer.

    Attributes
    ----------
    K:
        float64 array (depth, N, N); ``K[l-1]`` is K^{(l)} over the N inputs.
    net:
        The network it was computed for.
    x:
        The inputs, float64 array (N, n_0).
    """

    K: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("K",)

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per layer and unordered input pair (a ≤ b)."""
        return long_frame({"K": self.K})

    def __repr__(self) -> str:
        L, N, _ = self.K.shape
        return f"Kernel(depth={L}, inputs={N}, K^(L)_diag={np.round(np.diag(self.K[-1]), 6)})"


def first_layer_kernel(x: Tensor, C_b: float, C_W: float) -> Tensor:
    """K^{(1)}_{αβ} = C_b + C_W x_α·x_β / n_0 (book §4.1); exact at any width."""
    return C_b + C_W * gram(x)


def kernel_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """The kernel map K^{(ℓ)} → K^{(ℓ+1)} (book §4.3), ``layer`` = ℓ+1:
    K^{(ℓ+1)}_{αβ} = C_b^{(ℓ+1)} + C_W^{(ℓ+1)} ⟨σ(z_α) σ(z_β)⟩_{K^{(ℓ)}} + γ² K^{(ℓ)}_{αβ},
    the last term for a residual layer (γ = ``net.skip[ℓ]``, book eq. B.11 with ξ = 1)."""
    i = layer - 1
    K = net.C_b[i] + net.C_W[i] * m.ss
    gamma = net.skip[i]
    return {"K": K + gamma**2 * prev.K if gamma != 0.0 else K}


KERNEL = Recursion(
    "kernel",
    first=lambda net, g: {"K": net.C_b[0] + net.C_W[0] * g},
    step=kernel_step,
)


def kernel_layers(net: MLP, x: Tensor) -> list[Tensor]:
    """[K^{(1)}, …, K^{(L)}] as float64 tensors."""
    return list(propagate(net, gram(x), [KERNEL]).stack("K"))


def kernel(net: MLP, x: np.ndarray | Tensor) -> Kernel:
    """The infinite-width kernel K^{(ℓ)}_{αβ} of every layer ℓ = 1…L (book §4.1–4.3).

    Parameters
    ----------
    net:
        The network spec.
    x:
        Inputs, (N, n_0) numpy array or torch tensor.

    Returns
    -------
    Kernel
        ``.K`` is a float64 array (L, N, N) with ``K[l-1] = K^{(l)}``.

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=10, width=256, input_dim=3)
    >>> pdlt.kernel(net, np.eye(3)).K.shape
    (10, 3, 3)
    """
    xt = validate_inputs(net, x)
    walk = propagate(net, gram(xt), [KERNEL])
    return Kernel(K=walk.numpy("K"), net=net, x=xt.numpy())
