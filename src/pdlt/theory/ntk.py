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

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import expect, pair_expectation
from pdlt.network import MLP, validate_inputs

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


def _ntk_terms(
    net: MLP, x: Tensor
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """K^{(ℓ)}, Θ^{(ℓ)} (ℓ = 1…L) and ⟨σσ⟩, ⟨σ'σ'⟩ at K^{(ℓ)} (ℓ = 1…L−1), in one sweep: the
    kernel map K^{(ℓ+1)} = C_b + C_W⟨σσ⟩ (§4.3) and eq. 8.50 share their expectations."""
    from pdlt.theory.kernel import first_layer_kernel

    Ks = [first_layer_kernel(x, net.C_b[0], net.C_W[0])]
    Thetas = [first_layer_ntk(x, net.lambda_b[0], net.lambda_W[0])]
    sss, dds = [], []
    for i in range(1, net.depth):
        ss = pair_expectation(net.activation, Ks[-1], (0, 0))
        dd = pair_expectation(net.activation, Ks[-1], (1, 1))
        Ks.append(net.C_b[i] + net.C_W[i] * ss)
        Thetas.append(net.lambda_b[i] + net.lambda_W[i] * ss + net.C_W[i] * dd * Thetas[-1])
        sss.append(ss)
        dds.append(dd)
    return Ks, Thetas, sss, dds


def ntk_layers(net: MLP, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """([K^{(1)}, …, K^{(L)}], [Θ^{(1)}, …, Θ^{(L)}]) as float64 tensors."""
    Ks, Thetas, _, _ = _ntk_terms(net, x)
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

MAX_FLUCTUATION_INPUTS = 8  # four-input cubature costs O(N⁴ q⁴); 8 inputs take ~minutes


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
    """Nodes z (M, N) and weights w (M,) with Σ_m w_m f(z_m) ≈ ⟨f(z)⟩ for z ~ N(0, K), N ≤ 2
    (one input or one pair of inputs)."""

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


def _local_terms(act, K: Tensor, layer: int) -> dict[str, Tensor]:
    """The Gaussian expectations at K = K^{(ℓ)} that one step of the fluctuation recursions needs.

    Two-point means ``ss``, ``dd`` = ⟨σ_pσ_q⟩, ⟨σ'_pσ'_q⟩ (N, N); four-point functions ``ssss``,
    ``ddss`` (σ' in slots 1, 2), ``dddd`` (N, N, N, N); and the Stein projections
    ``P_ss``, ``P_dd`` = ⟨∂_β1∂_β2 (σ_pσ_q)⟩, ⟨∂_β1∂_β2 (σ'_pσ'_q)⟩ (N, N, N, N) and
    ``P1`` = ⟨∂_β (σ'_a σ_b)⟩ (N, N, N). A projection of a function of z_p, z_q vanishes unless
    every β is p or q and needs only their 2×2 block of K, so every projection and two-point
    mean is an (exact, kink-split) 1- or 2-D quadrature over one pair. Four-point functions over
    N ≤ 2 inputs use the same rule; over three or four distinct inputs
    :func:`pdlt.gaussian4.expect_product` (Gauss–Hermite cubature, ≲1e-9 for smooth σ, ~2e-4
    for kinked σ, with its warning).
    """
    N = K.shape[0]
    f = {"s": act.fn, "d": act.d1}
    out = {
        "ss": torch.empty((N, N), dtype=K.dtype),
        "dd": torch.empty((N, N), dtype=K.dtype),
        "P_ss": torch.zeros((N,) * 4, dtype=K.dtype),
        "P_dd": torch.zeros((N,) * 4, dtype=K.dtype),
        "P1": torch.zeros((N,) * 3, dtype=K.dtype),
    }
    for p in range(N):
        for q in range(p, N):
            pair = [p] if p == q else [p, q]
            rule = _gaussian_rule(K[pair][:, pair], act.kinks, layer)
            s = act(rule.z)
            d = act.d1(rule.z)
            a, b = (0, 0) if p == q else (0, 1)
            ix = torch.as_tensor(pair)
            for key, v in (("ss", s[:, a] * s[:, b]), ("dd", d[:, a] * d[:, b])):
                out[key][p, q] = out[key][q, p] = rule.mean(v)
                P = rule.projection2(v)
                out["P_" + key][p, q][ix[:, None], ix[None, :]] = P
                out["P_" + key][q, p][ix[:, None], ix[None, :]] = P
            out["P1"][p, q, ix] = rule.projection1(d[:, a] * s[:, b])
            out["P1"][q, p, ix] = rule.projection1(d[:, b] * s[:, a])
    if N <= 2:
        rule = _gaussian_rule(K, act.kinks, layer)
        s, d = act(rule.z), act.d1(rule.z)
        for key in ("ssss", "ddss", "dddd"):
            g = [s if c == "s" else d for c in key]
            out[key] = torch.einsum("m,mp,mq,mr,ms->pqrs", rule.w, *g)
        return out
    # entries with ≤ 2 distinct inputs from each pair's exact rule, the rest by cubature
    for key in ("ssss", "ddss", "dddd"):
        out[key] = torch.empty((N,) * 4, dtype=K.dtype)
    for p in range(N):
        for q in range(p + 1, N):
            rule = _gaussian_rule(K[[p, q]][:, [p, q]], act.kinks, layer)
            s, d = act(rule.z), act.d1(rule.z)
            ix = torch.as_tensor([p, q])
            block = (ix[:, None, None, None], ix[None, :, None, None], ix[None, None, :, None], ix)
            for key in ("ssss", "ddss", "dddd"):
                g = [s if c == "s" else d for c in key]
                out[key][block] = torch.einsum("m,mp,mq,mr,ms->pqrs", rule.w, *g)
    from pdlt.gaussian4 import expect_product

    index = torch.cartesian_prod(*[torch.arange(N)] * 4)
    distinct = (torch.sort(index, dim=1).values.diff(dim=1) != 0).sum(dim=1) + 1
    many = distinct >= 3
    for key in ("ssss", "ddss", "dddd"):
        rows = index[many]
        if key == "ddss":  # symmetric within slots (1, 2) and within (3, 4)
            canon = torch.cat(
                [torch.sort(rows[:, :2], 1).values, torch.sort(rows[:, 2:], 1).values], 1
            )
        else:  # fully symmetric
            canon = torch.sort(rows, dim=1).values
        uniq, inverse = torch.unique(canon, dim=0, return_inverse=True)
        vals = expect_product([f[c] for c in key], K, uniq, kinks=act.kinks)
        out[key].view(-1)[many] = vals[inverse]
    return out


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
    t = _local_terms(net.activation, K, layer - 1)
    m_ss, m_dd = t["ss"], t["dd"]
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
    V, D, F, A, B = (prev[k] for k in ("V", "D", "F", "A", "B"))
    dD_ss = torch.einsum("pqbc,rsbc->pqrs", D, P_ss)  # Σ_β D_{pqβ3β4} ⟨∂∂σσ⟩_{rs,β3β4}
    dD_X = torch.einsum("pqbc,rsbc->pqrs", D, P_X)
    new_V = C_W**2 * (t["ssss"] - outer(m_ss, m_ss)) + r * C_W**2 / 4 * contract(V, P_ss, P_ss)
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
    return {"V": new_V, "D": new_D, "F": new_F, "A": new_A, "B": new_B}


def ntk_fluctuations(net: MLP, x: np.ndarray | Tensor) -> NTKFluctuations:
    """D, F, A, B: the O(1/n) NTK–preactivation correlations and NTK variance (book §8.3–8.4).

    Computed by the coupled layer-to-layer recursions (with the four-point vertex V, book §4.3)
    from A = B = D = F = V = 0 at layer 1, so layer 2 is exact at O(1/n_1). Two-point means and
    all Stein projections are 1- or 2-D Gauss–Legendre quadratures over one pair of inputs, split
    at σ's kinks (derivatives of kinked σ enter through Stein's lemma, so ReLU is exact); the
    four-point functions are the same quadrature for N ≤ 2 and, for entries with three or four
    distinct inputs, the cubature of :mod:`pdlt.gaussian4` (≲1e-9 smooth σ, ~2e-4 kinked σ).

    Parameters
    ----------
    net:
        Network spec (its widths enter through r_ℓ = n_ℓ/n_{ℓ−1}; λ's, C's per layer).
    x:
        Inputs, (N, n_0) with N ≤ 8 (cost grows like N⁴; N ≤ 2 is fastest and exact to
        quadrature accuracy for every activation).

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
            f"ntk_fluctuations supports at most {MAX_FLUCTUATION_INPUTS} inputs, got {N} (its "
            "four-input Gaussian integrals cost O(N⁴)); call it on subsets of the inputs"
        )
    Ks, Thetas = ntk_layers(net, xt)
    zero = torch.zeros((N,) * 4, dtype=torch.float64)
    state = {k: zero for k in ("V", "D", "F", "A", "B")}
    layers = [state]
    with warnings.catch_warnings(record=True) as caught:  # one warning per kind, not per layer
        warnings.simplefilter("always")
        for layer in range(2, net.depth + 1):
            state = _fluctuation_step(net, layer, Ks[layer - 2], Thetas[layer - 2], state)
            layers.append(state)
    for message in dict.fromkeys(str(w.message) for w in caught):
        warnings.warn(message, RuntimeWarning, stacklevel=2)
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


# --------------------------------------------------------------------------------------------
# NTK criticality (ch. 9): exploding and vanishing gradients, learning-rate scaling


@dataclass(frozen=True, eq=False)
class NTKCriticality:
    """How the layers' parameters share the output NTK Θ^{(L)} (book §9.1, unrolled eq. 8.50).

    Attributes
    ----------
    contributions:
        float64 (depth, N, N): the part of Θ^{(L)} from the biases and weights of layer ℓ,
        [λ_b^{(ℓ)} + λ_W^{(ℓ)}⟨σσ⟩_{K^{(ℓ−1)}}] Π_{ℓ'=ℓ}^{L−1} C_W^{(ℓ'+1)}⟨σ'σ'⟩_{K^{(ℓ')}}; they sum
        to Θ^{(L)} exactly.
    chi_perp:
        float64 (depth − 1, N): χ_⊥^{(ℓ)} = C_W^{(ℓ+1)}⟨σ'²⟩_{K^{(ℓ)}} per layer ℓ = 1…L−1 and input.
    gradient_product:
        float64 (depth, N): Π_{ℓ'=ℓ}^{L−1} χ_⊥^{(ℓ')}, the mean squared Jacobian ∂z^{(L)}/∂z^{(ℓ)}.
    depth_scale:
        1/|log χ_⊥*|, with χ_⊥* the value χ_⊥ approaches deep in the network (the recursion is
        continued with the last layer's C_b, C_W to depth 1000): the number of layers over which
        gradients change by a factor e; inf at criticality. Compare it with the depth.
    regime:
        ``"exploding"`` (χ_⊥* > 1: the layers near the input dominate Θ) or ``"vanishing"``
        (χ_⊥* < 1: only layers near the output are trained) when χ_⊥ tends to a constant ≠ 1;
        ``"critical"`` when χ_⊥ → 1 as a power law: κ = ℓ|log χ_⊥| levels off (it tends to p_⊥ in
        the K*=0 class and is 0 in the scale-invariant class) instead of doubling between depth
        500 and 1000, so gradients change as a power law, not exponentially (book §9.1).
    """

    contributions: np.ndarray
    chi_perp: np.ndarray
    gradient_product: np.ndarray
    depth_scale: float
    regime: str
    net: MLP
    x: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: χ_⊥ and gradient product (first input), share of Θ^{(L)}_{11}."""
        L = self.contributions.shape[0]
        c = self.contributions[:, 0, 0]
        chi = np.append(self.chi_perp[:, 0], np.nan)
        return pd.DataFrame(
            {
                "layer": np.arange(1, L + 1),
                "chi_perp": chi,
                "gradient_product": self.gradient_product[:, 0],
                "contribution": c,
                "share": c / c.sum(),
            }
        )

    def __repr__(self) -> str:
        return f"NTKCriticality(regime={self.regime!r}, depth_scale={self.depth_scale:.3g})"


_FAR_DEPTH = 1000
_GROWTH = 1.5  # κ(D)/κ(D/2) above which χ_⊥ is taken to tend to a constant ≠ 1


def _asymptotic_chi_perp(net: MLP, K_diag: Tensor) -> tuple[Tensor, Tensor, bool]:
    """κ(ℓ) = ℓ·|log χ_⊥^{(ℓ)}| deep in the network, at ℓ = D/2 and D: the single-input
    recursion continued with the last layer's C_b, C_W to D = max(1000, 2L). Returns
    (κ(D/2), χ_⊥^{(D)}, whether K left the float range first) per input. At criticality χ_⊥
    approaches 1 as a power law (κ tends to a constant, p_⊥ in the K*=0 class); off it χ_⊥ tends
    to a constant ≠ 1 and κ grows ∝ ℓ."""
    act, C_b, C_W = net.activation, net.C_b[-1], net.C_W[-1]
    far = max(_FAR_DEPTH, 2 * net.depth)
    if act.homogeneous is not None:  # χ_⊥ = C_W (a₊² + a₋²)/2 at every K (book §5.2)
        a_p, a_m = act.homogeneous
        chi = torch.full_like(K_diag, C_W * (a_p**2 + a_m**2) / 2)
        return far / 2 * torch.log(chi).abs(), chi, False

    def mean(f, K):
        return expect(f, K, kinks=act.kinks)

    def chi_at(K):
        return C_W * mean(lambda z: act.d1(z) ** 2, K)

    K, ell = K_diag.clone(), net.depth
    kappa_half = None
    while ell < far:
        if ell == net.depth + (far - net.depth) // 2:
            kappa_half = ell * torch.log(chi_at(K)).abs()
        nxt = C_b + C_W * mean(lambda z: act(z) ** 2, K)
        if not torch.isfinite(nxt).all() or float(nxt.max()) > 1e100 or float(nxt.min()) < 1e-280:
            return torch.zeros_like(K), chi_at(K), True
        K, ell = nxt, ell + 1
    return kappa_half, chi_at(K), False


def ntk_criticality(net: MLP, x: np.ndarray | Tensor) -> NTKCriticality:
    """Exploding/vanishing-gradient diagnosis from the NTK recursion (book §9.1).

    Θ^{(L)} is a sum over layers of each layer's own contribution times the product of χ_⊥ of
    the layers above it. Off criticality (χ_⊥ → χ_⊥* ≠ 1) that product is exponential in depth,
    so one end of the network dominates the NTK and the other is not trained; at criticality it
    is a power law (K* = 0 class) or exactly 1 (scale-invariant class).

    Examples
    --------
    >>> pdlt.ntk_criticality(pdlt.MLP("tanh", 30, 64, 4, C_W=1.5), np.ones((1, 4))).regime
    'exploding'
    """
    xt = validate_inputs(net, x)
    Ks, _, sss, dds = _ntk_terms(net, xt)
    L = net.depth
    # χ^{(ℓ)}_{δ1δ2} = C_W^{(ℓ+1)} ⟨σ'σ'⟩_{K^{(ℓ)}}: the factor multiplying Θ^{(ℓ)} in eq. 8.50
    chi = [net.C_W[ell] * dds[ell - 1] for ell in range(1, L)]
    own = [first_layer_ntk(xt, net.lambda_b[0], net.lambda_W[0])]
    own += [net.lambda_b[ell - 1] + net.lambda_W[ell - 1] * sss[ell - 2] for ell in range(2, L + 1)]
    N = xt.shape[0]
    prod = torch.ones((N, N), dtype=torch.float64)
    products = [prod]
    for c in reversed(chi):
        prod = prod * c
        products.append(prod)
    products = products[::-1]  # products[ℓ-1] = Π_{ℓ'=ℓ}^{L−1} χ^{(ℓ')}
    contributions = torch.stack([o * p for o, p in zip(own, products, strict=True)])
    idx = torch.arange(N)
    chi_perp = torch.stack([c[idx, idx] for c in chi]) if chi else torch.empty((0, N))
    gprod = torch.stack([p[idx, idx] for p in products])
    far = max(_FAR_DEPTH, 2 * L)
    kappa_half, chi_far, escaped = _asymptotic_chi_perp(net, torch.diagonal(Ks[-1]))
    kappa_far = far * torch.log(chi_far).abs()
    # exponential (off-critical) when κ keeps growing ∝ ℓ between D/2 and D (ratio 2), power law
    # (critical) when it levels off (ratio 1); K leaving the float range is exponential
    growing = escaped | (kappa_far > _GROWTH * kappa_half)
    off = growing & (kappa_far > 1e-9)
    if bool(off.any()):
        worst = int(torch.argmax(torch.where(off, torch.log(chi_far).abs(), -1.0)))
        scale = float(1 / torch.log(chi_far[worst]).abs())
        regime = "exploding" if float(chi_far[worst]) > 1 else "vanishing"
    else:
        scale, regime = float("inf"), "critical"
    return NTKCriticality(
        contributions=contributions.numpy(),
        chi_perp=chi_perp.numpy(),
        gradient_product=gprod.numpy(),
        depth_scale=scale,
        regime=regime,
        net=net,
        x=xt.numpy(),
    )


@dataclass(frozen=True, eq=False)
class LearningRates:
    """Per-layer learning rates λ_b^{(ℓ)}, λ_W^{(ℓ)} (book convention, weights λ_W/n_{ℓ−1}).

    Use them as ``MLP(..., lambda_b=lr.lambda_b, lambda_W=lr.lambda_W)`` or ``lr.apply(net)``.

    Attributes
    ----------
    lambda_b, lambda_W:
        One value per layer ℓ = 1…L.
    universality_class:
        ``"scale-invariant"``, ``"K*=0"`` or ``"numerical"`` (equal contributions computed for
        the given C_W, C_b and input norm).
    p_perp:
        The critical exponent p_⊥ of χ_⊥ ≈ 1 − p_⊥/ℓ (K*=0 class), 0 for scale-invariant.
    """

    lambda_b: tuple[float, ...]
    lambda_W: tuple[float, ...]
    activation: str
    universality_class: str
    p_perp: float | None

    def apply(self, net: MLP) -> MLP:
        """A copy of ``net`` with these learning rates."""
        if net.depth != len(self.lambda_b):
            raise ValueError(
                f"these learning rates are for depth {len(self.lambda_b)}, net has {net.depth}"
            )
        return net.with_(lambda_b=self.lambda_b, lambda_W=self.lambda_W)

    def to_frame(self) -> pd.DataFrame:
        L = len(self.lambda_b)
        return pd.DataFrame(
            {"layer": np.arange(1, L + 1), "lambda_b": self.lambda_b, "lambda_W": self.lambda_W}
        )


def _taylor_at_zero(act) -> tuple[float, float, float, float]:
    """σ(0), σ'(0), σ''(0), σ'''(0); σ''' by a central difference of σ'' (error ~1e-9)."""
    z = torch.zeros(1, dtype=torch.float64)
    h = 1e-4
    s3 = (act.d2(z + h) - act.d2(z - h)) / (2 * h)
    vals = (act(z), act.d1(z), act.d2(z), s3)
    return tuple(float(v.detach()) for v in vals)


def ntk_universality_class(activation_spec) -> tuple[str, float | None]:
    """(class, p_⊥) for the learning-rate scaling of book §9.2–9.4: ``("scale-invariant", 0)``,
    ``("K*=0", b_1/a_1)`` with a_1 = σ_3/σ_1 + ¾(σ_2/σ_1)², b_1 = σ_3/σ_1 + (σ_2/σ_1)² (§5.3), or
    ``("none", None)`` for activations in neither class (half-stable, no criticality)."""
    from pdlt.activations import activation as make

    act = make(activation_spec)
    if act.homogeneous is not None:
        return "scale-invariant", 0.0
    s0, s1, s2, s3 = _taylor_at_zero(act)
    if act.kinks and any(abs(k) < 1e-12 for k in act.kinks):
        return "none", None
    if abs(s0) > 1e-12 or abs(s1) < 1e-12:
        return "none", None
    a1 = s3 / s1 + 0.75 * (s2 / s1) ** 2
    b1 = s3 / s1 + (s2 / s1) ** 2
    if a1 >= -1e-9:
        return "none", None
    return "K*=0", b1 / a1


def learning_rates(
    activation,
    depth: int,
    *,
    lambda_b: float = 1.0,
    lambda_W: float = 1.0,
    method: str = "auto",
    C_W: float | None = None,
    C_b: float = 0.0,
    input_norm: float = 1.0,
) -> LearningRates:
    """Per-layer learning rates that make the NTK Θ^{(L)} depth independent (book §9.2–9.4).

    The *learning-rate equivalence principle*: choose λ^{(ℓ)} so that every layer contributes
    the same order, ∝ 1/L, to Θ^{(L)} (02-ntk.md §4.1). With λ̃_b = ``lambda_b``, λ̃_W =
    ``lambda_W``:

    - scale-invariant class (ReLU, leaky ReLU, linear; χ_⊥ ≡ 1):
      λ_b^{(ℓ)} = λ̃_b/L, λ_W^{(ℓ)} = λ̃_W/L;
    - K*=0 class (tanh, sin, erf; χ_⊥ ≈ 1 − p_⊥/ℓ):
      λ_b^{(ℓ)} = λ̃_b L^{p_⊥−1}/ℓ^{p_⊥}, λ_W^{(ℓ)} = λ̃_W (L/ℓ)^{p_⊥−1} (tanh: λ̃_b/ℓ, λ̃_W);
    - ``method="numerical"`` (any activation, any C_W, C_b): from the single-input recursion at
      |x|²/n_0 = ``input_norm``, λ_b^{(ℓ)} = λ̃_b/(L Π_ℓ) and λ_W^{(ℓ)} = λ̃_W/(L Π_ℓ ⟨σ²⟩_{K^{(ℓ−1)}})
      with Π_ℓ = Π_{ℓ'≥ℓ} χ_⊥^{(ℓ')}, so each layer contributes exactly (λ̃_b + λ̃_W)/L.

    ``method="auto"`` uses the book's class formula where the activation has one, else the
    numerical rule (then ``C_W`` is required).

    Examples
    --------
    >>> pdlt.learning_rates("tanh", depth=4).lambda_b
    (1.0, 0.5, 0.3333333333333333, 0.25)
    """
    from pdlt.activations import activation as make

    act = make(activation)
    L = int(depth) if not isinstance(depth, bool) and isinstance(depth, (int, np.integer)) else None
    if L is None or L < 1:
        raise ValueError(f"depth must be an int ≥ 1, got {depth!r}")
    for name, v in (("lambda_b", lambda_b), ("lambda_W", lambda_W)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite float ≥ 0, got {v!r}")
    if method not in ("auto", "book", "numerical"):
        raise ValueError(f"method must be 'auto', 'book' or 'numerical', got {method!r}")
    cls, p = ntk_universality_class(act)
    if method == "book" and cls == "none":
        raise ValueError(
            f"activation {act.name!r} is in neither the scale-invariant nor the K*=0 class, for "
            "which the book derives the learning-rate scaling (§9.2–9.4); use method='numerical' "
            "with its C_W"
        )
    ell = np.arange(1, L + 1, dtype=float)
    if method != "numerical" and cls == "scale-invariant":
        lb, lw = np.full(L, lambda_b / L), np.full(L, lambda_W / L)
    elif method != "numerical" and cls == "K*=0":
        lb = lambda_b * L ** (p - 1) / ell**p
        lw = lambda_W * (L / ell) ** (p - 1)
    else:
        if C_W is None:
            raise ValueError(
                f"the numerical learning-rate rule for {act.name!r} needs the network's C_W "
                "(and C_b) to follow its gradients"
            )
        cls, p = "numerical", None
        lb, lw = _equal_contribution_rates(act, L, lambda_b, lambda_W, C_W, C_b, input_norm)
    return LearningRates(
        lambda_b=tuple(float(v) for v in lb),
        lambda_W=tuple(float(v) for v in lw),
        activation=act.name,
        universality_class=cls,
        p_perp=p,
    )


def _equal_contribution_rates(act, L, lambda_b, lambda_W, C_W, C_b, input_norm):
    """λ's giving every layer the share (λ̃_b + λ̃_W)/L of Θ^{(L)} for one input of norm q."""

    if not (np.isfinite(input_norm) and input_norm > 0):
        raise ValueError(f"input_norm must be a finite float > 0, got {input_norm!r}")
    K = C_b + C_W * input_norm
    sigma2 = [float(input_norm)]  # ⟨σ²⟩ of layer ℓ−1 (x·x/n_0 for ℓ = 1)
    chis = []
    for _ in range(1, L):
        k = torch.tensor([K], dtype=torch.float64)
        s2 = float(expect(lambda z: act(z) ** 2, k, kinks=act.kinks)[0])
        d2 = float(expect(lambda z: act.d1(z) ** 2, k, kinks=act.kinks)[0])
        chis.append(C_W * d2)
        sigma2.append(s2)
        K = C_b + C_W * s2
    prods = np.cumprod(np.array(chis[::-1] or [1.0]))[::-1]
    prods = np.append(prods, 1.0)[-L:] if L > 1 else np.array([1.0])
    if not np.all(np.isfinite(prods)) or np.any(prods <= 0) or min(sigma2) <= 0:
        raise FloatingPointError(
            "gradients vanish or overflow; the numerical rule cannot balance them"
        )
    lb = lambda_b / (L * prods)
    lw = lambda_W / (L * prods * np.asarray(sigma2))
    return lb, lw
