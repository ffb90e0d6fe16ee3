"""Entropy and mutual information of groups of neurons at finite width (book App. A.3).

For one input, the m neurons z_1 … z_m of layer ℓ are, given the layer below, independent
N(0, Ĝ) with the stochastic metric Ĝ^{(ℓ)} = C_b + (C_W/n_{ℓ−1}) Σ_j σ(z_j^{(ℓ−1)})² (book
§4.1): their distribution is the scale mixture p(z) = E_Ĝ[N(z; 0, Ĝ I_m)], with E[Ĝ] = G and
Var[Ĝ] = V^{(ℓ)}/n_{ℓ−1}. Writing Ĝ = G(1 + ε) and expanding in ε,

    p(z) = N(z; 0, G I_m) [1 + (v/8) h_m(u)],   u = |z|²/G,   h_m = (u − m)² − 4(u − m) − 2m,

with v = V^{(ℓ)}/(n_{ℓ−1} G²) (the book's νr, eq. A.68), since E_N[h_m] = 0 and
E_N[h_m²] = 8m(m + 2) for u ~ χ²_m. Hence, through O(1/n²),

    S(z_1 … z_m) = (m/2) log(2πe G) − m(m + 2) v²/16                       (book eq. A.66)
    I(z_{M1}; z_{M2}) = S_{m1} + S_{m2} − S_{m1+m2} = m1 m2 v²/8 = m1 m2 (νr)²/8  (A.67, A.71)

(the cubic term in r that fixes r*, eq. A.72, needs the six-point vertex and is not computed
here). Single input.

Residual MLPs (book App. B). A residual layer adds γ z^{(ℓ−1)}_i, so the neurons are no longer a
scale mixture given the layer below. Through O(1/n²), though, S and I depend only on G and the
fourth cumulants (a first-order change of p that keeps the covariance leaves S unchanged; the
squared third and fourth cumulants are the O(1/n²) terms). For an odd σ each neuron keeps its
sign symmetry through the skip path, so the third cumulants vanish and, by exchangeability, the
fourth are (V/n)(δδ + two permutations) with V of :func:`pdlt.four_point_vertex`, plus at most an
all-indices-equal term, which the cross-neuron I does not see. Real residual tanh networks
(tests/test_information.py) show that term zero within their errors: the single-neuron excess
kurtosis is 3V/(nK²) like Cov(z_i², z_j²)/K² = V/(nK²), so both formulas hold. A non-odd σ
(ReLU, GELU) gives each neuron an O(1/n) third cumulant through its skip path (E[z³] =
3γ C_W E[σ(z)² z]/n at the first residual layer, 0.112 for ReLU at γ = 0.5, n = 16; measured
0.119), which the formulas miss: NotImplementedError there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

from pdlt import _validation
from pdlt.network import MLP
from pdlt.theory.vertex import four_point_vertex, metric


@dataclass(frozen=True)
class Information:
    """Entropy and mutual information of two groups of m1, m2 neurons of each layer, one input,
    through O(1/n²) (book eqs. A.66, A.67).

    Attributes
    ----------
    layers:
        ℓ = 1 … L.
    m1, m2:
        The group sizes (neurons of the same layer).
    G:
        The mean metric G^{(ℓ)} = K + K^{{1}}/n (O(1/n²) corrections to G neglected).
    v:
        V^{(ℓ)}/(n_{ℓ−1} G^{(ℓ)2}), the relative variance of the stochastic metric (νr, A.68).
    entropy:
        S of all m1 + m2 neurons: (m/2) log(2πeG) − m(m+2)v²/16 (nats).
    entropy_gaussian:
        The infinite-width (Gaussian) entropy at G, (m/2) log(2πeG).
    mutual_information:
        I between the two groups, m1 m2 v²/8 (nats); 0 at infinite width.
    """

    layers: tuple[int, ...]
    m1: int
    m2: int
    G: np.ndarray
    v: np.ndarray
    entropy: np.ndarray
    entropy_gaussian: np.ndarray
    mutual_information: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "layer": self.layers,
                "m1": self.m1,
                "m2": self.m2,
                "G": self.G,
                "v": self.v,
                "entropy": self.entropy,
                "entropy_gaussian": self.entropy_gaussian,
                "mutual_information": self.mutual_information,
            }
        )


def entropy_nlo(m: int, G: np.ndarray, v: np.ndarray) -> np.ndarray:
    """S = (m/2) log(2πeG) − m(m+2) v²/16 for m neurons of a scale mixture (book eq. A.66)."""
    return 0.5 * m * np.log(2 * math.pi * math.e * G) - m * (m + 2) * v**2 / 16


def mutual_information_nlo(m1: int, m2: int, v: np.ndarray) -> np.ndarray:
    """I = m1 m2 v²/8 between two groups of one layer's neurons (book eqs. A.67, A.71)."""
    return m1 * m2 * v**2 / 8


def information(
    net: MLP, x: np.ndarray | Tensor, *, m1: int = 1, m2: int = 1, tol: float = 1e-7
) -> Information:
    """Entropy and mutual information of two groups of m1 and m2 neurons in every layer for one
    input x, through O(1/n²) (book App. A.3, eqs. A.66–A.67; derivation in the module docstring).

    Only the layers with n_ℓ ≥ m1 + m2 are reported (usually not the output layer).

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=6, width=64, input_dim=2)
    >>> float(pdlt.information(net, [[1.0, 0.5]]).mutual_information[-1])   # layer 5, m1 = m2 = 1
    0.000221...
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    if net.residual and not net.activation.odd:
        raise NotImplementedError(
            f"information of a residual MLP needs an odd σ; {net.activation!r} is not odd, and "
            "its skip path gives each neuron an O(1/n) third cumulant (E[z³] ∝ γ C_W "
            "E[σ(z)² z]/n ≠ 0, measured on ReLU networks), whose cross terms enter the mutual "
            "information at the same O(1/n²) as V²: eqs. A.66–A.67 do not include them"
        )
    m1 = _validation.integer("m1", m1, min=1)
    m2 = _validation.integer("m2", m2, min=1)
    xs = _validation.as_inputs(net.input_dim, x)
    if xs.shape[0] != 1:
        raise ValueError(f"information takes one input (single-input theory), got {xs.shape[0]}")
    keep = np.array([w >= m1 + m2 for w in net.widths[1:]])
    if not keep.any():
        raise ValueError(
            f"m1 + m2 = {m1 + m2} neurons do not fit in any layer (widths {net.widths[1:]})"
        )
    fw = four_point_vertex(net, xs, tol=tol)
    G = metric(net, xs, tol=tol).G[:, 0, 0]
    if np.any(G <= 0):
        raise ValueError("the metric vanishes at some layer; entropies are undefined there")
    v = (fw.V[:, 0, 0, 0, 0] / fw.widths / G**2)[keep]
    G = G[keep]
    return Information(
        layers=tuple(int(ell) for ell in np.nonzero(keep)[0] + 1),
        m1=m1,
        m2=m2,
        G=G,
        v=v,
        entropy=entropy_nlo(m1 + m2, G, v),
        entropy_gaussian=entropy_nlo(m1 + m2, G, 0 * v),
        mutual_information=mutual_information_nlo(m1, m2, v),
    )
