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


# --------------------------------------------------------------------------------------------
# O(1/n) fluctuations: D, F, A, B (and the vertex V they need)

MAX_FLUCTUATION_INPUTS = 2


@dataclass(frozen=True, eq=False)
class NTKFluctuations:
    """The O(1/n) statistics of the NTK at initialization (book §8.3–8.4), every layer.

    All arrays are float64 (depth, N, N, N, N), layer first, each the coefficient of
    1/n_{ℓ−1} in the book's tensor decomposition (index order as in ``shared/theory/02-ntk.md``
    §3.1; i1 … i4 neurons of layer ℓ)::

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


@dataclass(frozen=True)
class _GaussianRule:
    """Nodes z (M, N) and weights w (M,) with Σ_m w_m f(z_m) ≈ ⟨f(z)⟩ for z ~ N(0, K), N ≤ 2."""

    z: Tensor
    w: Tensor
    K_inv: Tensor

    def mean(self, values: Tensor) -> Tensor:
        """⟨·⟩ of node values with leading axis m."""
        return torch.tensordot(self.w, values, dims=1)

    def projection1(self, values: Tensor) -> Tensor:
        """⟨∂_β g⟩ = Σ_γ K^{βγ}⟨z_γ g⟩ (Stein's lemma; 02-ntk.md §0): trailing axis β."""
        y = self.z @ self.K_inv
        return torch.einsum("m,m...,mb->...b", self.w, values, y)

    def projection2(self, values: Tensor) -> Tensor:
        """⟨∂_β1 ∂_β2 g⟩ = ⟨g (y_β1 y_β2 − K^{β1β2})⟩, y = K⁻¹z: trailing axes β1, β2.

        These are the Gaussian expectations of the distributional second derivatives, kink
        contributions of ReLU-like σ included."""
        y = self.z @ self.K_inv
        p2 = y[:, :, None] * y[:, None, :] - self.K_inv
        return torch.einsum("m,m...,mbc->...bc", self.w, values, p2)


def _gaussian_rule(K: Tensor, kinks: tuple[float, ...], layer: int) -> _GaussianRule:
    """Composite Gauss–Legendre rule for N(0, K), N ≤ 2, split where σ has kinks (as in
    :mod:`pdlt.gaussian`): exponential convergence for piecewise-smooth integrands."""
    from pdlt.gaussian import _nodes_per_piece, _segment_rule, _unit_breaks

    N = K.shape[0]
    s = torch.sqrt(torch.clamp(torch.diagonal(K), min=0.0))
    if float(s.min()) <= 0.0:
        raise ValueError(
            f"ntk_fluctuations: an input has zero variance at layer {layer} (K_αα = 0); its "
            "fluctuations are degenerate. Use inputs with C_b > 0 or x ≠ 0."
        )
    q = _nodes_per_piece(float(s.max()))
    u, wu = _segment_rule(_unit_breaks(kinks, s[:1]), q)  # (1, Qu)
    u, wu = u[0], wu[0]
    if N == 1:
        return _GaussianRule(z=(s[0] * u)[:, None], w=wu, K_inv=torch.linalg.inv(K))
    rho = K[0, 1] / (s[0] * s[1])
    r = torch.sqrt(torch.clamp(1 - rho * rho, min=0.0))
    if float(r) < 1e-6:
        raise ValueError(
            f"ntk_fluctuations: the two inputs are (nearly) parallel at layer {layer} "
            f"(correlation {float(rho):.8f}); the fluctuation recursions need an invertible "
            "kernel. Use linearly independent inputs or fewer layers."
        )
    if kinks:
        kg = torch.as_tensor(kinks, dtype=K.dtype)
        vb = (kg[None, :] / s[1] - rho * u[:, None]) / r  # where z_b crosses a kink, per u
    else:
        vb = torch.empty((u.shape[0], 0), dtype=K.dtype)
    v, wv = _segment_rule(vb, q)  # (Qu, Qv)
    za = (s[0] * u)[:, None].expand_as(v)
    zb = s[1] * (rho * u[:, None] + r * v)
    z = torch.stack([za.reshape(-1), zb.reshape(-1)], dim=1)
    return _GaussianRule(z=z, w=(wu[:, None] * wv).reshape(-1), K_inv=torch.linalg.inv(K))


def _fluctuation_step(
    net: MLP,
    layer: int,
    K: Tensor,
    Theta: Tensor,
    prev: dict[str, Tensor],
) -> dict[str, Tensor]:
    """One layer of the coupled V, D, F, A, B recursions (book §8.3–8.4; 02-ntk.md §3.3):
    statistics of layer ℓ (at K = K^{(ℓ)}, Θ = Θ^{(ℓ)}) → layer ℓ+1 = ``layer``.

    With X_{δ1δ2} = λ_W σ_{δ1}σ_{δ2} + C_W Θ_{δ1δ2} σ'_{δ1}σ'_{δ2} and r = n_ℓ/n_{ℓ−1}:

    V' = C_W² Cov(σσ, σσ) + r (C_W²/4) V ⟨∂∂σσ⟩⟨∂∂σσ⟩
    D' = C_W Cov(X, σσ) + r [(C_W/4) V ⟨∂∂X⟩⟨∂∂σσ⟩ + (C_W²/2) ⟨σ'σ'⟩ D ⟨∂∂σσ⟩]
    F'_{δ1δ3δ2δ4} = C_W² Θ_{δ1δ2} ⟨σ'_{δ1}σ_{δ3}σ'_{δ2}σ_{δ4}⟩
                    + r C_W² F_{δ1β3δ2β4} ⟨∂_{β3}(σ'_{δ1}σ_{δ3})⟩⟨∂_{β4}(σ'_{δ2}σ_{δ4})⟩
    A' = Cov(X, X) + r [¼ V⟨∂∂X⟩⟨∂∂X⟩ + (C_W/2)(⟨σ'σ'⟩ D⟨∂∂X⟩ + mirror) + C_W² ⟨σ'σ'⟩⟨σ'σ'⟩ A]
    B'_{δ1δ3δ2δ4} = C_W² Θ_{δ1δ2}Θ_{δ3δ4} ⟨σ'σ'σ'σ'⟩ + r C_W² ⟨σ'_{δ1}σ'_{δ3}⟩⟨σ'_{δ2}σ'_{δ4}⟩ B
    """
    i = layer - 1
    C_W, lam_W = net.C_W[i], net.lambda_W[i]
    r = net.widths[layer - 1] / net.widths[layer - 2]
    rule = _gaussian_rule(K, net.activation.kinks, layer - 1)
    s = net.activation(rule.z)
    s1 = net.activation.d1(rule.z)
    ss = s[:, :, None] * s[:, None, :]  # (M, N, N)
    dd = s1[:, :, None] * s1[:, None, :]
    X = lam_W * ss + C_W * Theta * dd
    m_ss, m_dd, m_X = rule.mean(ss), rule.mean(dd), rule.mean(X)

    def cov(a: Tensor, b: Tensor, ma: Tensor, mb: Tensor) -> Tensor:
        return torch.einsum("m,mpq,mrs->pqrs", rule.w, a, b) - torch.einsum("pq,rs->pqrs", ma, mb)

    def contract(
        T: Tensor, P: Tensor, Q: Tensor
    ) -> Tensor:  # Σ_β T_{β1β2β3β4} P_{pqβ1β2} Q_{rsβ3β4}
        return torch.einsum("bcde,pqbc,rsde->pqrs", T, P, Q)

    P_ss, P_X = rule.projection2(ss), rule.projection2(X)
    V, D, F, A, B = (prev[k] for k in ("V", "D", "F", "A", "B"))
    dD_ss = torch.einsum("pqbc,rsbc->pqrs", D, P_ss)  # Σ_β D_{pqβ3β4} ⟨∂∂σσ⟩_{rs,β3β4}
    dD_X = torch.einsum("pqbc,rsbc->pqrs", D, P_X)
    new_V = C_W**2 * cov(ss, ss, m_ss, m_ss) + r * C_W**2 / 4 * contract(V, P_ss, P_ss)
    new_D = C_W * cov(X, ss, m_X, m_ss) + r * (
        C_W / 4 * contract(V, P_X, P_ss) + C_W**2 / 2 * m_dd[:, :, None, None] * dD_ss
    )
    new_A = cov(X, X, m_X, m_X) + r * (
        contract(V, P_X, P_X) / 4
        + C_W
        / 2
        * (m_dd[:, :, None, None] * dD_X + (m_dd[:, :, None, None] * dD_X).permute(2, 3, 0, 1))
        + C_W**2 * torch.einsum("pq,rs->pqrs", m_dd, m_dd) * A
    )
    # F: g_{ab}(z) = σ'_a σ_b on one neuron; the NTK samples (a, c) are spectators.
    ds = s1[:, :, None] * s[:, None, :]  # (M, a, b) = σ'_a σ_b
    four_F = torch.einsum("m,mab,mcd->abcd", rule.w, ds, ds)
    P1 = rule.projection1(ds)  # (a, b, β)
    new_F = C_W**2 * Theta[:, None, :, None] * four_F + r * C_W**2 * torch.einsum(
        "aecf,abe,cdf->abcd", F, P1, P1
    )
    four_B = torch.einsum("m,mab,mcd->abcd", rule.w, dd, dd)  # ⟨σ'_a σ'_b σ'_c σ'_d⟩
    new_B = C_W**2 * Theta[:, None, :, None] * Theta[None, :, None, :] * four_B + (
        r * C_W**2 * m_dd[:, :, None, None] * m_dd[None, None, :, :] * B
    )
    return {"V": new_V, "D": new_D, "F": new_F, "A": new_A, "B": new_B}


def ntk_fluctuations(net: MLP, x: np.ndarray | Tensor) -> NTKFluctuations:
    """D, F, A, B: the O(1/n) NTK–preactivation correlations and NTK variance (book §8.3–8.4).

    Computed by the coupled layer-to-layer recursions (with the four-point vertex V, book §4.3)
    from A = B = D = F = V = 0 at layer 1, so layer 2 is exact at O(1/n_1). Every Gaussian
    expectation is over the (at most two) inputs by composite Gauss–Legendre quadrature split at
    σ's kinks; derivatives of kinked σ enter through Stein's lemma, so ReLU is exact.

    Parameters
    ----------
    net:
        Network spec (its widths enter through r_ℓ = n_ℓ/n_{ℓ−1}; λ's, C's per layer).
    x:
        One or two inputs, (N, n_0) with N ≤ 2 (the statistics of N inputs need Gaussian
        integrals over up to four inputs; entries with at most two distinct inputs can be had by
        calling this per pair).

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
    xt = validate_inputs(net, x)
    N = xt.shape[0]
    if N > MAX_FLUCTUATION_INPUTS:
        raise ValueError(
            f"ntk_fluctuations supports at most {MAX_FLUCTUATION_INPUTS} inputs, got {N}; "
            "call it on pairs of inputs (every entry with ≤ 2 distinct inputs is covered)"
        )
    Ks, Thetas = ntk_layers(net, xt)
    zero = torch.zeros((N,) * 4, dtype=torch.float64)
    state = {k: zero for k in ("V", "D", "F", "A", "B")}
    layers = [state]
    for layer in range(2, net.depth + 1):
        state = _fluctuation_step(net, layer, Ks[layer - 2], Thetas[layer - 2], state)
        layers.append(state)
    out = {k: torch.stack([s[k] for s in layers]).numpy() for k in state}
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise FloatingPointError(
                f"ntk_fluctuations: {k} overflowed; the network is far off criticality"
            )
    return NTKFluctuations(
        **out,
        Theta=torch.stack(Thetas).numpy(),
        K=torch.stack(Ks).numpy(),
        net=net,
        x=xt.numpy(),
    )
