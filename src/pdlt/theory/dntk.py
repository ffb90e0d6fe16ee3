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
from pdlt.theory.residual_ntk import path_expectations
from pdlt.theory.vertex import CORRECTION, extended_path, pairs_to_tensor

Tensor = torch.Tensor


def dntk_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, cur: LayerState
) -> dict[str, Tensor]:
    """P, Q of layer ℓ+1 = ``layer`` (book eq. 11.49, 11.52)."""
    if net.residual:
        return residual_dntk_step(net, layer, prev, m, cur)
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


# --------------------------------------------------------------------------------------------
# residual networks (one input): the dNTK along each neuron's path
#
# With M_ij = W_ijσ'_j + γδ_ij and U_ij = Σ_k M_ik Ĥ_jk, differentiating z' = b + Wσ(z) + γz
# twice along the gradient directions gives (s = σσ')
#
#   dĤ'_{i0i1i2} = (λ_W/n)[δ_{i0i1} Σ_j s_j U_{i2j} + δ_{i0i2} Σ_j s_j U_{i1j}]
#                  + Σ_j W_{i0j}σ''_j U_{i1j}U_{i2j} + Σ_{j k1 k2} M_{i0j}M_{i1k1}M_{i2k2} dĤ_{jk1k2}.
#
# Averaging the new rows given the new innovations ε (E[W_ij | ε_i] = cσ_jε_i/G, c = C_W/n) and
# keeping O(1/n), the conditional means p(i0, i1) = n E[dĤ_{i0i1i1} | paths] and
# κ(i0, i2) = n E[dĤ_{i0i0i2} | paths] close among themselves, the NTK's b = n E[Ĥ_ik² | paths]
# and q = n E[Ĥ_ik | paths] (pdlt.theory.ntk), with the same-neuron dĤ_iii and three-neuron
# terms all O(1/n) (u = σσ'', t = σ'σ'', a = γ² + C_W⟨σ'²⟩, r = n_ℓ/n_{ℓ−1}):
#
#   p' = (ε_{i0}/G){C_W²Θ²⟨uσ'²⟩ + rC_W²(⟨u⟩⟨σ'²⟩β + ⟨u⟩E[σ'²φ_b] + ⟨σ'²⟩E[uφ_b])
#                   + rC_W² E[s z]ᵀΠE[σ'²g] + C_Wγ²[Θ²u(z_{i1}) + r(⟨u⟩(β + φ_b(i1)) + E[uφ_b]
#                   + E[s z]ᵀΠ g(i1))]} + r γC_W z(i0)ᵀΠE[σ'²g] + r γ³ p
#   κ' = (ε_{i2}/G)[λ_WC_W(Θ⟨s²⟩ + r μᵀQμ) + C_W²Θ(Θ⟨uσ'²⟩ + r μ̃ᵀQμ) + r C_W a E[sκ]]
#        + γ[λ_W(Θ s(z_{i2}) + r μᵀQf(i2)) + C_WΘ(Θ t(z_{i2}) + r μ̃ᵀQf(i2))] + r γ a κ
#
# so p = z(i0)ᵀ Π g(i1) is bilinear in i0's path values and g = (1, u(z^{(m)}), σ'²(z^{(m)})) of
# i1's path, and κ depends on i2's path alone (a vector over 1, z^{(m)}, s^{(m)}, t^{(m)});
# μ, μ̃ = E[s f], E[t f] over F's basis f, Q F's form. P = E[p z_{i0}], Q = E[κ z_{i2}]; at
# γ = 0 both are the book's eq. 11.49, 11.52.


def _residual_dntk_first(g: Tensor) -> dict[str, Tensor]:
    return {
        "Pi": torch.zeros((1, 1), dtype=torch.float64),  # left (z^{(1)}), right (1)
        "kappa": torch.zeros(2, dtype=torch.float64),  # (1, z^{(1)})
    }


def _fold(keep: Tensor, blocks: list[tuple[str, Tensor | None]]) -> Tensor:
    """The map (new basis × full basis) onto the basis of layer ℓ+1. ``blocks`` in order:
    ("one", None) the constant (first); ("fixed", None) a single always-kept function (the
    newest z); ("layers", means) one function per layer of the extended path, kept where
    ``keep``, a dropped one going to ⟨f⟩_m·1 (its correlation with the later path is below the
    cutoff) or, with means None (a zero-mean z), to nothing."""
    h1 = keep.shape[0]
    sizes = [h1 if kind == "layers" else 1 for kind, _ in blocks]
    rows: list[Tensor] = []
    T_fold = torch.zeros(sum(sizes), dtype=torch.float64)
    col = 0
    for (kind, means), size in zip(blocks, sizes, strict=True):
        for j in range(size):
            if kind != "layers" or keep[j]:
                row = torch.zeros(sum(sizes), dtype=torch.float64)
                row[col + j] = 1.0
                rows.append(row)
            elif means is not None:
                T_fold[col + j] = means[j]
        col += size
    T = torch.stack(rows)
    if blocks[0][0] == "one":
        T[0] += T_fold
    return T


def residual_dntk_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, cur: LayerState
) -> dict[str, Tensor]:
    """P, Q of a network with residual layers, one input, layer ℓ → ℓ+1 = ``layer`` (the
    derivation is in the comment above :func:`_residual_dntk_first`)."""
    i = layer - 1
    C_W, C_b, lam_W, gamma = net.C_W[i], net.C_b[i], net.lambda_W[i], net.skip[i]
    g2, r = gamma * gamma, width_ratio(net, layer)
    loc, t = m.local, m.fluctuation_terms
    K, Th = m.K[0, 0], prev.Theta[0, 0]
    dd, ss = m.dd[0, 0], m.ss[0, 0]
    G = C_b + C_W * ss
    a = g2 + C_W * dd
    m_u, m_s, m_t = loc.mean(0, 2)[0, 0], loc.mean(0, 1)[0, 0], loc.mean(1, 2)[0, 0]
    four = loc.four_point((2, 1, 1, 0))[0, 0, 0, 0]  # ⟨σ''σ'σ'σ⟩ = ⟨uσ'²⟩
    s2 = t["ddss"][0, 0, 0, 0]  # ⟨s²⟩
    P1 = t["P1"][0, 0, 0]  # ⟨s'⟩
    Pt = loc.projection(2, 1, 1)[0, 0, 0]  # ⟨t'⟩
    h = prev.path_K.shape[0]
    Km, gm = prev.path_K[:, 0, 0], prev.path_g
    one = torch.ones(1, dtype=torch.float64)
    pairs = [("dd", "dd"), ("u", "dd"), ("dd", "u"), ("s", "s"), ("t", "s"), ("s", "t")]
    pairs += [("s", "z"), ("t", "z"), ("u", "1"), ("dd", "1"), ("s", "1"), ("t", "1")]
    if h:
        E = path_expectations(m.act, prev.path_K, gm, K, pairs)
    else:
        E = {p: torch.zeros(0, dtype=torch.float64) for p in pairs}
    cb, beta = prev.path_cb.reshape(-1), prev.B[0, 0, 0, 0]  # one input: (h, 1, 1, 1, 1)
    E_dphi_d = (cb * (E[("dd", "dd")] - E[("dd", "1")] * dd)).sum()  # E[σ'²φ_b] = y_b
    E_uphi = (cb * (E[("dd", "u")] - E[("dd", "1")] * m_u)).sum()  # E[u φ_b]
    # ---- p: Π over left (z_path, z_ℓ) and right (1, u_path, d_path)
    Pi = prev.Pi
    Esz_L = torch.cat([gm * Km * P1, K * P1 * one])
    Ed2_R = torch.cat([dd * one, E[("u", "dd")], E[("dd", "dd")]])
    phi_b = torch.cat([-(cb * E[("dd", "1")]).sum() * one, torch.zeros(h), cb])
    nL, nR = (
        h + 2,
        2 * h + 3,
    )  # full: left (z_path, z_ℓ, z_{ℓ+1}); right (1, u_path, u_ℓ, d_path, d_ℓ)
    L_old = torch.arange(h + 1)
    R_old = torch.cat([torch.arange(h + 1), torch.arange(h + 2, 2 * h + 2)])
    PiE = torch.zeros((nL, nR), dtype=torch.float64)
    PiE[L_old[:, None], R_old[None, :]] = Pi
    left_eps = torch.zeros(nL, dtype=torch.float64)
    left_eps[h + 1], left_eps[h] = 1.0 / G, -gamma / G
    R = torch.zeros(nR, dtype=torch.float64)
    R[0] = C_W**2 * Th**2 * four + r * C_W**2 * (m_u * (dd * beta + E_dphi_d) + dd * E_uphi)
    R[0] += r * C_W**2 * (Esz_L @ Pi @ Ed2_R) + r * C_W * g2 * (m_u * beta + E_uphi)
    R[h + 1] += C_W * g2 * Th**2  # u(z^{(ℓ)}) of i1
    R[R_old] += r * C_W * g2 * (m_u * phi_b + Pi.T @ Esz_L)
    Pi_new = torch.outer(left_eps, R) + r * g2 * gamma * PiE
    Pi_new[L_old, 0] += r * gamma * C_W * (Pi @ Ed2_R)
    K_next = G + g2 * K
    EzL = torch.cat([gamma * gm * Km, gamma * K * one, K_next * one])
    Eg = torch.cat([one, E[("u", "1")], m_u * one, E[("dd", "1")], dd * one])
    new_P = EzL @ Pi_new @ Eg
    # ---- κ over (1, z_path, z_ℓ, s_path, t_path); F's form Q over (1, z_path, z_ℓ, s_path)
    Qf, kappa = prev.Fq[0, 0], prev.kappa  # F's form of the one input pair (a, c) = (0, 0)
    mu = torch.cat([m_s * one, gm * Km * P1, K * P1 * one, E[("s", "s")]])
    mu_t = torch.cat([m_t * one, gm * Km * Pt, K * Pt * one, E[("s", "t")]])
    Es_h = torch.cat([m_s * one, gm * Km * P1, K * P1 * one, E[("s", "s")], E[("t", "s")]])
    C_k = lam_W * C_W * (Th * s2 + r * mu @ Qf @ mu) + C_W**2 * Th * (
        Th * four + r * mu_t @ Qf @ mu
    )
    C_k = C_k + r * C_W * a * (Es_h @ kappa)
    # full: (1, z_path, z_ℓ, z_{ℓ+1}, s_path, s_ℓ, t_path, t_ℓ)
    nH = 3 * h + 5
    f_in_h = torch.cat([torch.arange(h + 2), torch.arange(h + 3, 2 * h + 3)])
    k_in_h = torch.cat([f_in_h, torch.arange(2 * h + 4, 3 * h + 4)])
    kap = torch.zeros(nH, dtype=torch.float64)
    kap[h + 2], kap[h + 1] = C_k / G, -gamma * C_k / G
    kap[2 * h + 3] += gamma * lam_W * Th
    kap[3 * h + 4] += gamma * C_W * Th * Th
    kap[f_in_h] += r * gamma * (lam_W * (Qf @ mu) + C_W * Th * (Qf @ mu_t))
    kap[k_in_h] += r * gamma * a * kappa
    Eh = torch.cat(
        [
            0 * one,
            gamma * gm * Km,
            gamma * K * one,
            K_next * one,
            gamma * E[("s", "z")],
            gamma * K * P1 * one,
            gamma * E[("t", "z")],
            gamma * K * Pt * one,
        ]
    )
    new_Q = Eh @ kap
    # ---- the bases of layer ℓ+1 (the path's kept layers, as the vertex keeps them)
    if gamma == 0.0:
        keep = torch.zeros(h + 1, dtype=torch.bool)
    else:
        _, keep = extended_path(gm, gamma)
    u_means = torch.cat([E[("u", "1")], m_u * one])
    d_means = torch.cat([E[("dd", "1")], dd * one])
    s_means = torch.cat([E[("s", "1")], m_s * one])
    t_means = torch.cat([E[("t", "1")], m_t * one])
    TL = _fold(keep, [("layers", None), ("fixed", None)])
    TR = _fold(keep, [("one", None), ("layers", u_means), ("layers", d_means)])
    TH = _fold(
        keep,
        [
            ("one", None),
            ("layers", None),
            ("fixed", None),
            ("layers", s_means),
            ("layers", t_means),
        ],
    )

    def t4(x: Tensor) -> Tensor:
        return x.reshape(1, 1, 1, 1)

    return {
        "P": t4(new_P),
        "Q": t4(new_Q),
        "Pi": TL @ Pi_new @ TR.T,
        "kappa": TH @ kap,
    }


def _zeros4(net: MLP, g: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((g.shape[0],) * 4, dtype=torch.float64)
    out = {"P": zero, "Q": zero}
    if net.residual:
        out |= _residual_dntk_first(g)
    return out


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

        A residual MLP (``net.skip``) takes one input: the per-neuron path recursion above
        :func:`_residual_dntk_first`; P, Q are then the distinct-neuron moments
        n E[dĤ_{ijj} z_i], n E[dĤ_{iij} z_j]. More inputs raise NotImplementedError.

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
    xt = fluctuation_inputs(net, x, "dntk", residual_inputs=1)
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
