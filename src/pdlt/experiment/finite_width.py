"""Estimators of the finite-width statistics: G, K1, V and the excess kurtosis (book §4.2–4.5).

Everything is measured through the **stochastic metric** of each network (theory note 01 §4.2)

    Ĝ^{(ℓ)}_{ab} = C_b + (C_W/n_{ℓ−1}) Σ_j σ(z^{(ℓ−1)}_{j;a}) σ(z^{(ℓ−1)}_{j;b}),      Ĝ^{(1)} = K^{(1)}.

Given layer ℓ−1, z^{(ℓ)} is exactly Gaussian, iid over neurons, with covariance Ĝ^{(ℓ)}, so

    E[z_{i;a} z_{i;b}]                   = E[Ĝ_ab]
    E[z_{i;a} z_{i;b} z_{j;c} z_{j;d}]   = E[Ĝ_ab Ĝ_cd]                                (i ≠ j)
    E[z_{i;a} z_{i;b} z_{i;c} z_{i;d}]   = E[Ĝ_ab Ĝ_cd + Ĝ_ac Ĝ_bd + Ĝ_ad Ĝ_bc]        (i = j)

exactly. Averaging the neuron products of a network over its neurons (pairs i ≠ j and i = j
alike) and conditioning on the previous layer gives these Ĝ moments, so the Ĝ route uses every
neuron pair at once and drops the conditional Gaussian noise of the z's (lower variance than
products of z). The statistics (one number per network, then across networks):

``G``                mean Ĝ                                            (L, N, N)
``K1``               n_{ℓ−1} (mean Ĝ − K), K the infinite-width kernel  (L, N, N)
``V``                n_{ℓ−1} Cov(Ĝ_ab, Ĝ_cd) across networks             (L, N, N, N, N)
``excess_kurtosis``  E[z⁴]/E[z²]² − 3 = 3 Var(Ĝ_aa)/E[Ĝ_aa]²             (L, N)

A residual layer (book eq. B.3) has no such metric: z^{(ℓ)} given layer ℓ−1 has mean γ z^{(ℓ−1)}.
There Ĝ is the layer's empirical kernel (1/n) Σ_i z_i z_iᵀ, whose n·Cov carries the same-neuron
Gaussian part G_ac G_bd + G_ad G_bc besides V; it is subtracted with the measured G (V is then
exact to O(1/n), and the kurtosis 3 Var/E² − 6/n).

V and the kurtosis are the exact connected four-point function (all orders in 1/n); the theory
gives their leading order.

**Error bars: delta method (influence functions), not bootstrap.** The standard error of a
sample covariance is √((E[d_p² d_q²] − Cov_pq²)/M) with d = Ĝ − mean over M networks; that of the
kurtosis follows from its influence function 3[(d² − v)/m² − 2v d/m³]. The needed moments up to
fourth order are accumulated chunk by chunk (shifted by the first chunk's mean against
cancellation), so memory is O(L P²) whatever M. Both are first-order (large-M) formulas; the
fourth moments of Ĝ are heavy-tailed at large ℓ/n (products of layer factors), where the sample
estimates of variances — and of their errors — are biased low. ``tests/test_vertex_mc.py`` checks
the error bars against the deep-linear exact answer.
"""

from __future__ import annotations

import numpy as np
import torch

from pdlt.experiment.ensemble import Chunk
from pdlt.network import MLP
from pdlt.theory.kernel import first_layer_kernel, kernel_layers
from pdlt.theory.vertex import input_pairs, pairs_to_tensor

Tensor = torch.Tensor
_F64 = torch.float64


def stochastic_metric(net: MLP, chunk: Chunk, first: Tensor | None = None) -> Tensor:
    """Ĝ^{(ℓ)} of every network of a chunk, ℓ = 1…L: (B, L, N, N) float64 (theory note 01 §4.2).

    ``first`` is K^{(1)} (deterministic); computed from the chunk's inputs when not given."""
    B = chunk.size
    if first is None:
        x = chunk.x.to(_F64).T.cpu()  # (N, n_0)
        first = first_layer_kernel(x, net.C_b[0], net.C_W[0])
    out = [first.to(chunk.z[0].device).expand(B, -1, -1)]
    for layer in range(2, net.depth + 1):
        if net.skip[layer - 1] != 0.0:
            # residual layer: z^{(ℓ)} | z^{(ℓ−1)} has mean γ z^{(ℓ−1)}, so there is no
            # conditional covariance shared by the neurons; use the layer's own empirical kernel
            z = chunk.z[layer - 1].to(_F64)  # (B, n_ℓ, N)
            out.append(torch.bmm(z.transpose(1, 2), z) / z.shape[1])
            continue
        s = net.activation(chunk.z[layer - 2]).to(_F64)  # (B, n_{ℓ−1}, N)
        gram = torch.bmm(s.transpose(1, 2), s) / s.shape[1]
        out.append(net.C_b[layer - 1] + net.C_W[layer - 1] * gram)
    return torch.stack(out, dim=1)


def _single_neuron_part(G: Tensor, pairs: Tensor) -> Tensor:
    """G_ac G_bd + G_ad G_bc over pairs p = (a, b), q = (c, d): (L, P, P). The Gaussian
    same-neuron term in n Cov(Ĝ_emp) of an empirical kernel Ĝ_emp = (1/n) Σ_i z_i z_iᵀ:
    n Cov(Ĝ_ab, Ĝ_cd) = G_ac G_bd + G_ad G_bc + V_(ab)(cd) + O(1/n)."""
    a, b = pairs[:, 0], pairs[:, 1]
    return G[:, a[:, None], a[None, :]] * G[:, b[:, None], b[None, :]] + (
        G[:, a[:, None], b[None, :]] * G[:, b[:, None], a[None, :]]
    )


class FiniteWidthEstimator:
    """Group ``"V"``: ``G``, ``K1``, ``V`` and ``excess_kurtosis`` from the stochastic metric."""

    def __init__(self, net: MLP, x: Tensor) -> None:
        self.net = net
        self.N = x.shape[0]
        self.pairs, _ = input_pairs(self.N)
        self.K = torch.stack(kernel_layers(net, x))  # (L, N, N), for K1
        self.count = 0
        self.shift: Tensor | None = None
        self.s1 = self.s2 = self.s3 = self.s4 = None

    def update(self, chunk: Chunk) -> None:
        G = stochastic_metric(self.net, chunk, self.K[0])
        g = G[:, :, self.pairs[:, 0], self.pairs[:, 1]].cpu()  # (B, L, P)
        if self.shift is None:
            self.shift = g.mean(dim=0)
            L, P = self.shift.shape
            self.s1 = torch.zeros((L, P), dtype=_F64)
            self.s2, self.s3, self.s4 = (torch.zeros((L, P, P), dtype=_F64) for _ in range(3))
        y = g - self.shift
        y2 = y * y
        self.count += y.shape[0]
        self.s1 += y.sum(dim=0)
        self.s2 += torch.einsum("blp,blq->lpq", y, y)
        self.s3 += torch.einsum("blp,blq->lpq", y2, y)  # Σ y_p² y_q
        self.s4 += torch.einsum("blp,blq->lpq", y2, y2)

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        M = self.count
        if M < 2:
            raise ValueError("need at least two networks for a covariance with an error bar")
        e1 = self.s1 / M  # E[y_p]
        e11 = self.s2 / M  # E[y_p y_q]
        e21 = self.s3 / M  # E[y_p² y_q]
        e22 = self.s4 / M  # E[y_p² y_q²]
        a, b = e1[:, :, None], e1[:, None, :]
        ep2 = torch.diagonal(e11, dim1=1, dim2=2)
        cov = e11 - a * b
        # E[(y_p − a)²(y_q − b)²] from raw moments
        c4 = (  # E[(y_p − a)²(y_q − b)²] from raw moments, a = E[y_p], b = E[y_q]
            e22
            - 2 * b * e21
            - 2 * a * e21.transpose(1, 2)
            + b * b * ep2[:, :, None]
            + a * a * ep2[:, None, :]
            + 4 * a * b * e11
            - 3 * a * a * b * b
        )
        var_cov = torch.clamp(c4 - cov * cov, min=0.0) / M
        unbiased = M / (M - 1)
        n_prev = torch.tensor(self.net.widths[:-1], dtype=_F64)
        mean = self.shift + e1
        mean_err = torch.sqrt(torch.clamp(ep2 - e1 * e1, min=0.0) * unbiased / M)
        # G and K1 (L, P) → (L, N, N)
        G = _sym(mean, self.N)
        G_err = _sym(mean_err, self.N)
        n3 = n_prev[:, None, None]
        K1 = n3 * (G - self.K)
        K1_err = n3 * G_err
        V = n3 * cov * unbiased
        V_err = n3 * torch.sqrt(var_cov)
        # residual layers measure the empirical kernel of z itself: remove its same-neuron
        # Gaussian part, with the measured G (its error, O(1/√(nM)) relative, is left out)
        res = torch.tensor([g != 0.0 for g in self.net.skip], dtype=torch.bool)
        if res.any():
            gauss = _single_neuron_part(G, self.pairs)
            V = torch.where(res[:, None, None], V - gauss, V)
        # excess kurtosis per input from the diagonal pairs (a, a)
        _, index = input_pairs(self.N)
        diag = index[torch.arange(self.N), torch.arange(self.N)]
        m = mean[:, diag]
        v = (cov * unbiased)[:, diag, diag]
        mu3 = (
            torch.diagonal(e21, dim1=1, dim2=2)[:, diag]
            - 3 * e1[:, diag] * ep2[:, diag]
            + 2 * e1[:, diag] ** 3
        )
        mu4 = c4[:, diag, diag]
        m = torch.where(m != 0, m, 1.0)  # a zero-variance input: Ĝ_aa ≡ 0, v = 0
        kurt = 3 * v / m**2
        if res.any():  # Var(Ĝ_aa) = (2G_aa² + V)/n for the empirical kernel of z
            kurt = torch.where(res[:, None], kurt - 6.0 / n_prev[:, None], kurt)
        var_if = 9 * ((mu4 - v * v) / m**4 - 4 * v * mu3 / m**5 + 4 * v**3 / m**6)
        kurt_err = torch.sqrt(torch.clamp(var_if, min=0.0) / M)
        N = self.N
        return {
            "G": (G.numpy(), G_err.numpy()),
            "K1": (K1.numpy(), K1_err.numpy()),
            "V": (pairs_to_tensor(V.numpy(), N), pairs_to_tensor(V_err.numpy(), N)),
            "excess_kurtosis": (kurt.numpy(), kurt_err.numpy()),
        }


def _sym(vals: Tensor, N: int) -> Tensor:
    """(L, P) over unordered pairs → (L, N, N) symmetric."""
    _, index = input_pairs(N)
    return vals[:, index]
