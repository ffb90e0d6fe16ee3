"""Deep linear networks, exact at any finite width (book ch. 3; theory note 01 §5).

For σ(z) = z every layer is conditionally Gaussian given the previous one with covariance the
stochastic metric Ĝ^{(ℓ+1)} = C_b + (C_W/n_ℓ) Σ_j z^{(ℓ)}_j z^{(ℓ)}_j, so the moments of Ĝ obey
closed recursions with no truncation in 1/n:

    G^{(ℓ+1)}_{ab}     = C_b + C_W G^{(ℓ)}_{ab}                                           (3.14)
    T^{(ℓ+1)}_{abcd}   = C_b² + C_b C_W (G_ab + G_cd) + C_W² [T_abcd + (T_acbd + T_adbc)/n_ℓ]

with T_{abcd} ≡ E[Ĝ_ab Ĝ_cd], T^{(1)} = K^{(1)}_ab K^{(1)}_cd, and
E[z_{i1;a} z_{i2;b} z_{i3;c} z_{i4;d}] = δ12δ34 T_abcd + δ13δ24 T_acbd + δ14δ23 T_adbc (3.21–3.25).
Single input, the 2m-point function E[z^{2m}] = (2m−1)!! E[Ĝ^m] with
E[Ĝ'^m] = Σ_k C(m,k) C_b^{m−k} C_W^k E[Ĝ^k] E[X^k], X = χ²_n/n, E[X^k] = Π_{j<k}(1 + 2j/n)
(3.44–3.57: with C_b = 0 this is the book's Π(1 + 2/n)(1 + 4/n)⋯ product).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.network import MLP, validate_inputs
from pdlt.theory.kernel import first_layer_kernel


def _require_linear(net: MLP) -> None:
    if net.activation.homogeneous != (1.0, 1.0):
        raise ValueError(
            f"deep-linear results need activation='linear', got {net.activation!r}; "
            "use pdlt.four_point_vertex for other activations"
        )


@dataclass(frozen=True, eq=False)
class DeepLinear:
    """Exact finite-width statistics of a deep linear network (book ch. 3).

    Attributes
    ----------
    G:
        (L, N, N) the exact two-point function (no 1/n correction: K1 ≡ 0).
    T:
        (L, N, N, N, N) T_abcd = E[Ĝ_ab Ĝ_cd] = E[z_{i;a} z_{i;b} z_{j;c} z_{j;d}] (i ≠ j).
    V:
        (L, N, N, N, N) n_{ℓ−1}(T_abcd − G_ab G_cd): the exact connected four-point function in the
        book's V normalization (leading order: the V recursion; beyond: all orders in 1/n).
    net, x:
        The network and inputs.
    """

    G: np.ndarray
    T: np.ndarray
    V: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("G", "V", "excess_kurtosis")

    @property
    def excess_kurtosis(self) -> np.ndarray:
        """E[z⁴]/E[z²]² − 3 = 3(T_aaaa − G_aa²)/G_aa², exact, (L, N)."""
        a = np.arange(self.G.shape[1])
        g = self.G[:, a, a]
        return 3 * (self.T[:, a, a, a, a] - g**2) / g**2

    def to_frame(self) -> pd.DataFrame:
        return long_frame({"G": self.G})


def deep_linear(net: MLP, x: np.ndarray | torch.Tensor) -> DeepLinear:
    """Exact two- and four-point functions of a deep linear network at any width (book eq.
    3.14–3.28, multi-input form of theory note 01 §5, with biases)."""
    _require_linear(net)
    xt = validate_inputs(net, x)
    K = first_layer_kernel(xt, net.C_b[0], net.C_W[0]).numpy()
    G, T = [K], [np.einsum("ab,cd->abcd", K, K)]
    for layer in range(2, net.depth + 1):
        cb, cw, n = net.C_b[layer - 1], net.C_W[layer - 1], net.widths[layer - 1]
        g, t = G[-1], T[-1]
        perm = np.einsum("acbd->abcd", t) + np.einsum("adbc->abcd", t)
        T.append(
            cb**2 + cb * cw * (g[:, :, None, None] + g[None, None, :, :]) + cw**2 * (t + perm / n)
        )
        G.append(cb + cw * g)
    G_, T_ = np.stack(G), np.stack(T)
    n_prev = np.asarray(net.widths[:-1], dtype=float)[:, None, None, None, None]
    V = n_prev * (T_ - np.einsum("lab,lcd->labcd", G_, G_))
    return DeepLinear(G=G_, T=T_, V=V, net=net, x=xt.numpy())


def deep_linear_moments(net: MLP, x: np.ndarray | torch.Tensor, m: int) -> np.ndarray:
    """E[z_{i;a}^{2m}] per layer and input, exact at any width (book eq. 3.44–3.57), (L, N).

    ``m`` ≥ 1; m = 1 is the two-point function, m = 2 gives E[z⁴] = 3E[Ĝ²], and so on.
    """
    _require_linear(net)
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be an int ≥ 1 (the moment is E[z^(2m)]), got {m!r}")
    xt = validate_inputs(net, x)
    g1 = np.diag(first_layer_kernel(xt, net.C_b[0], net.C_W[0]).numpy())
    k = np.arange(m + 1)
    mom = g1[:, None] ** k[None, :]  # E[Ĝ^k], k = 0..m, per input
    out = [mom[:, m]]
    for layer in range(2, net.depth + 1):
        cb, cw, n = net.C_b[layer - 1], net.C_W[layer - 1], net.widths[layer - 1]
        ex = np.array([math.prod(1 + 2 * j / n for j in range(kk)) for kk in k])  # E[X^k]
        new = np.zeros_like(mom)
        for mm in range(m + 1):
            for kk in range(mm + 1):
                new[:, mm] += math.comb(mm, kk) * cb ** (mm - kk) * cw**kk * mom[:, kk] * ex[kk]
        mom = new
        out.append(mom[:, m])
    double_factorial = math.prod(range(1, 2 * m, 2))
    return double_factorial * np.stack(out)
