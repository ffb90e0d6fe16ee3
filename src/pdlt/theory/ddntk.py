"""The ddNTK means R, S, T, U (book §∞.1, §∞.3): the O(1/n) statistics that, with P and Q,
close the dynamics of representation learning at order 1/n.

Definitions (book eq. ∞.5, ∞.7; v_{i;δ} ≡ Λ∇_θ z_{i;δ}):

    dd_IĤ_{i0i1i2i3;δ0δ1δ2δ3}  = D³z_{i0;δ0}[v_{i1;δ1}, v_{i2;δ2}, v_{i3;δ3}],
    dd_IIĤ_{i1i2i3i4;δ1δ2δ3δ4} = ⟨Hess z_{i1;δ1} v_{i3;δ3}, Λ Hess z_{i2;δ2} v_{i4;δ4}⟩.

Their means are O(1/n) (book eq. ∞.11–∞.13):

    E[dd_IĤ]  = (1/n_{ℓ−1})[δ_{i0i1}δ_{i2i3} R_{δ0δ1δ2δ3} + δ_{i0i2}δ_{i3i1} R_{δ0δ2δ3δ1}
                           + δ_{i0i3}δ_{i1i2} R_{δ0δ3δ1δ2}],
    E[dd_IIĤ] = (1/n_{ℓ−1})[δ_{i1i2}δ_{i3i4} S_{δ1δ2δ3δ4} + δ_{i1i3}δ_{i4i2} T_{δ1δ3δ4δ2}
                           + δ_{i1i4}δ_{i2i3} U_{δ1δ4δ2δ3}],

stored as in the measurement (:mod:`pdlt.experiment.dntk`): ``R[a,b,c,d]`` = R_{abcd},
``S[a,b,c,d]`` = S_{abcd}, ``T[a,b,c,d]`` = T_{abcd} (δ1 = a, δ3 = b, δ4 = c, δ2 = d),
``U[a,b,c,d]`` = U_{abcd} (δ1 = a, δ4 = b, δ2 = c, δ3 = d).

Derivation (pdlt's; the multi-input forms of book eq. ∞.172, ∞.174–∞.176, single-input
∞.14–∞.17). Layer ℓ → ℓ+1 with W = W^{(ℓ+1)}, σ_j = σ(z^{(ℓ)}_j), u_{j;δ} = Λ∇z^{(ℓ)}_{j;δ}. The
direction v_{i;δ} of layer ℓ+1 has the components (λ_W/n_ℓ)δ_{ki}σ_{j;δ} on W_{kj}, λ_b δ_{ki} on
b_k and Σ_m W_{im}σ'_{m;δ} u_{m;δ} below, so Dz^{(ℓ)}_{j;δ}[v_{i;δ'}] = Σ_m W_{im}σ'_{m;δ'}Ĥ_{jm;δδ'}
and D²z^{(ℓ)}_{j;δ}[v_{i1;δ1}, v_{i2;δ2}] = Σ W_{i1m1}W_{i2m2}σ'σ' dĤ_{jm1m2;δδ1δ2}. z^{(ℓ+1)} is
linear in (W, b), so at most one direction acts on W. The forward equations:

    dd_IĤ'_{i0i1i2i3} = Σ_{3 perms} δ_{i0i1}(λ_W/n_ℓ) Σ_j σ_{j;δ1}[σ''_{j;δ0} Dz_j[v2]Dz_j[v3]
                                                        + σ'_{j;δ0} D²z_j[v2, v3]]
                      + Σ_j W_{i0j}[σ'''_{j;δ0} Π_k Dz_j[v_k] + σ''_{j;δ0}(Dz_j[v1]D²z_j[v2,v3]
                                    + 2 perms) + σ'_{j;δ0} D³z_j[v1, v2, v3]]          (j at δ0),

    dd_IIĤ' = δ_{i1i2}(λ_W/n_ℓ) Σ_j σ'_{j;δ1}σ'_{j;δ2} Dz_{j;δ1}[v3] Dz_{j;δ2}[v4]      (W part)
            + Σ_{jj'} c¹³_j c²⁴_j' Ĥ_{jj';δ1δ2}
            + Σ_j c¹³_j Σ W_{i2j'}W_{i4m'}σ'_{j';δ2}σ'_{m';δ4} dĤ_{j'jm';δ2δ1δ4} + mirror
            + Σ W_{i1j}W_{i3m}W_{i2j'}W_{i4m'} σ'_{j;δ1}σ'_{m;δ3}σ'_{j';δ2}σ'_{m';δ4} dd_IIĤ_{jj'mm';δ1δ2δ3δ4},
      c¹³_j = (λ_W/n_ℓ)δ_{i1i3} σ_{j;δ3}σ'_{j;δ1} + W_{i1j}σ''_{j;δ1} Dz_{j;δ1}[v3].

Averaging over W (Wick) and then over layer ℓ with the facts of 02-ntk.md §3.2 — a diagonal
neuron sum gives a local four-point term, an off-diagonal pair j ≠ m gives B (Ĥ_jmĤ_jm), F
(Ĥ_jm f(z_j) g(z_m)), P or Q (dĤ with one z), R, S, T, U (their own means), and products of two
off-diagonal objects (Ĥ_jm dĤ_jjm, Ĥ³) are higher order — gives, with r = n_ℓ/n_{ℓ−1}, ⟨·⟩ at
K^{(ℓ)}, Θ = Θ^{(ℓ)}, λ_W, C_W of layer ℓ+1, a, b, c, d the slots of the stored tensors, and the
"dNTK source" (single input: σ'(λ_Wσ + C_WΘσ''), the b of 02-ntk.md §6.2)

    Y_{ab} ≡ λ_W σ'_a σ_b + C_W Θ_{ab} σ''_a σ'_b,   ⟨∂_β Y_{ab}⟩ its Stein projection,
    Ẏ_{ab} ≡ λ_W ⟨σ''_a σ_b⟩ + C_W Θ_{ab} ⟨σ'''_a σ'_b⟩   (explicit chain-rule derivative in a):

    R'_{abcd} = C_W Θ_{ac}Θ_{ad} ⟨(λ_W σ''_aσ_b + C_WΘ_{ab}σ'''_aσ'_b) σ'_c σ'_d⟩
                + r C_W ⟨σ'_cσ'_d⟩ [Ẏ_{ab} B_{aacd} + Σ_β P_{acdβ}⟨∂_βY_{ab}⟩ + C_W⟨σ'_aσ'_b⟩ R_{abcd}]
    S'_{abcd} = C_W Θ_{ac}Θ_{bd} ⟨(λ_W σ'_aσ'_b + C_WΘ_{ab} σ''_aσ''_b) σ'_c σ'_d⟩
                + r C_W ⟨σ'_cσ'_d⟩ [(λ_W⟨σ'_aσ'_b⟩ + C_WΘ_{ab}⟨σ''_aσ''_b⟩) B_{abcd} + C_W⟨σ'_aσ'_b⟩ S_{abcd}]
    T'_{abcd} = Θ_{ad} ⟨Y_{ab} Y_{dc}⟩
                + r [Σ_{ββ'} F_{aβdβ'}⟨∂_βY_{ab}⟩⟨∂_β'Y_{dc}⟩ + C_W⟨σ'_dσ'_c⟩ Σ_β Q_{dcaβ}⟨∂_βY_{ab}⟩
                     + C_W⟨σ'_aσ'_b⟩ Σ_β Q_{abdβ}⟨∂_βY_{dc}⟩ + C_W²⟨σ'_aσ'_b⟩⟨σ'_dσ'_c⟩ T_{abcd}]
    U'_{abcd} = C_W² Θ_{ac}Θ_{ad}Θ_{cb} ⟨σ''_aσ''_cσ'_dσ'_b⟩ + r C_W² ⟨σ'_aσ'_b⟩⟨σ'_cσ'_d⟩ U_{abcd}

(B, F, P, Q in the layouts of :class:`pdlt.theory.ntk.NTKFluctuations` and
:class:`pdlt.theory.dntk.DNTKStatistics`). All vanish at layer 1, so layer 2 is the local terms,
exact at O(1/n_1). σ'', σ''' are explicit chain-rule derivatives (zero for piecewise-linear σ;
then R = U = 0 at every layer), ⟨∂·⟩ Stein projections (kinks included).

Checks and disagreements. Single input these reduce to 02-ntk.md §6.2 (ω = ⟨∂Y⟩, χ_⊥ =
C_W⟨σ'σ'⟩), and at layer 2 to the local terms derived independently in ``tests/test_dntk.py``;
the (Y Y) form makes T symmetric under (a, b) ↔ (d, c), the (13) ↔ (24) symmetry of dd_II. The
local terms of R and S in 02-ntk.md §6.2 agree with the above; its nonlocal terms are only
sketched there ("same terms with sample labels attached"), and the public transcription of the
book's multi-input T that it distrusts was not available here. What the derivation fixes: the
two λ_WC_W local terms of T, Θ_{ad}Θ_{dc}⟨σ'_aσ_bσ''_dσ'_c⟩ and Θ_{ad}Θ_{ab}⟨σ''_aσ'_bσ'_dσ_c⟩, are
exact mirror images (as the note expects; a transcription where they are not is wrong); the B
term of R carries B_{aacd} (both NTKs at the thrice-differentiated sample a); the Q terms of T
carry Q_{dcaβ} and Q_{abdβ} (Q's second slot is the sample of the other σ' on the same neuron);
products of two off-diagonal objects (Ĥ_jm dĤ_jjm, Ĥ_jm Ĥ_mj Ĥ_jm) are dropped, so U has no
B, F or Q term. Checked against the layer-2 forward equation and by Monte Carlo on real
networks (two inputs, tanh and ReLU, two widths) in ``tests/test_ddntk_theory.py``.

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt.gaussian import LayerMoments
from pdlt.network import MLP
from pdlt.theory.dntk import DNTK
from pdlt.theory.layers import LayerState, Recursion, gram, propagate, width_ratio
from pdlt.theory.ntk import fluctuation_inputs

Tensor = torch.Tensor


def ddntk_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """R, S, T, U of layer ℓ+1 = ``layer`` (book eq. ∞.172, ∞.174–∞.176; module docstring)."""
    i = layer - 1
    C_W, lam_W = net.C_W[i], net.lambda_W[i]
    r = width_ratio(net, layer)
    loc = m.local
    Th = prev.Theta
    dd = m.dd  # ⟨σ'_aσ'_b⟩
    t = m.fluctuation_terms
    e = torch.einsum

    # the dNTK source Y_ab = λ_W σ'_aσ_b + C_W Θ_ab σ''_aσ'_b: its projections and a-derivative
    pY = lam_W * loc.projection(1, 0, 1) + C_W * Th[:, :, None] * loc.projection(2, 1, 1)
    dY = lam_W * loc.mean(2, 0) + C_W * Th * loc.mean(3, 1)

    # R_abcd (a: the thrice-differentiated sample, dd_I's first index)
    f2011 = loc.four_point((2, 0, 1, 1))  # ⟨σ''_aσ_bσ'_cσ'_d⟩
    f3111 = loc.four_point((3, 1, 1, 1))  # ⟨σ'''_aσ'_bσ'_cσ'_d⟩
    Th_ac_ad = Th[:, None, :, None] * Th[:, None, None, :]
    local_R = C_W * Th_ac_ad * (lam_W * f2011 + C_W * Th[:, :, None, None] * f3111)
    B_aa = torch.diagonal(prev.B, dim1=0, dim2=1).permute(2, 0, 1)  # B[a,a,c,d] → (a, c, d)
    R_in = (
        dY[:, :, None, None] * B_aa[:, None]
        + e("acde,abe->abcd", prev.P, pY)
        + C_W * dd[:, :, None, None] * prev.R
    )
    new_R = local_R + r * C_W * dd[None, None] * R_in

    # S_abcd
    f2211 = loc.four_point((2, 2, 1, 1))  # ⟨σ''_aσ''_bσ'_cσ'_d⟩
    Th_ac_bd = Th[:, None, :, None] * Th[None, :, None, :]
    local_S = C_W * Th_ac_bd * (lam_W * t["dddd"] + C_W * Th[:, :, None, None] * f2211)
    B_coef = lam_W * dd + C_W * Th * loc.mean(2, 2)
    S_in = B_coef[:, :, None, None] * prev.B + C_W * dd[:, :, None, None] * prev.S
    new_S = local_S + r * C_W * dd[None, None] * S_in

    # T_abcd (δ1 = a, δ3 = b, δ4 = c, δ2 = d): Θ_ad ⟨Y_ab Y_dc⟩
    f1021 = loc.four_point((1, 0, 2, 1))  # ⟨σ'_aσ_bσ''_dσ'_c⟩ at [a, b, d, c]
    f2121 = loc.four_point((2, 1, 2, 1))  # ⟨σ''_aσ'_bσ''_dσ'_c⟩ at [a, b, d, c]
    YY = (
        lam_W**2 * e("adbc->abcd", t["ddss"])  # ddss[a,d,b,c] = ⟨σ'_aσ'_dσ_bσ_c⟩
        + lam_W * C_W * e("dc,abdc->abcd", Th, f1021)
        + lam_W * C_W * e("ab,dcab->abcd", Th, f1021)
        + C_W**2 * e("ab,dc,abdc->abcd", Th, Th, f2121)
    )
    local_T = e("ad,abcd->abcd", Th, YY)
    T_in = (
        e("aedf,abe,dcf->abcd", prev.F, pY, pY)
        + C_W * e("dc,dcae,abe->abcd", dd, prev.Q, pY)
        + C_W * e("ab,abde,dce->abcd", dd, prev.Q, pY)
        + C_W**2 * e("ab,dc,abcd->abcd", dd, dd, prev.T)
    )
    new_T = local_T + r * T_in

    # U_abcd (δ1 = a, δ4 = b, δ2 = c, δ3 = d)
    local_U = C_W**2 * e("ac,ad,cb,acdb->abcd", Th, Th, Th, f2211)
    new_U = local_U + r * C_W**2 * e("ab,cd,abcd->abcd", dd, dd, prev.U)
    return {"R": new_R, "S": new_S, "T": new_T, "U": new_U}


def _zeros(net: MLP, g: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((g.shape[0],) * 4, dtype=torch.float64)
    return {"R": zero, "S": zero, "T": zero, "U": zero}


DDNTK = Recursion("ddntk", first=_zeros, step=ddntk_step, requires=(DNTK,))


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, eq=False)
class DDNTKStatistics:
    """The ddNTK means of every layer (book §∞.1, §∞.3).

    Attributes
    ----------
    R, S, T, U:
        float64 (depth, N, N, N, N), coefficients of 1/n_{ℓ−1} (i ≠ j neurons of layer l):
        ``R[l-1,a,b,c,d]`` = n·E[dd_IĤ_{iijj;abcd}], ``S[l-1,a,b,c,d]`` = n·E[dd_IIĤ_{iijj;abcd}],
        ``T[l-1,a,b,c,d]`` = n·E[dd_IIĤ_{ijij;adbc}], ``U[l-1,a,b,c,d]`` = n·E[dd_IIĤ_{ijji;acdb}].
        Zero at layer 1.
    Theta, K:
        (depth, N, N) frozen NTK and kernel.
    P, Q, B, F:
        The dNTK and NTK statistics they rest on (:class:`pdlt.DNTKStatistics`,
        :class:`pdlt.theory.ntk.NTKFluctuations` layouts).
    net, x:
        Spec and inputs.
    """

    R: np.ndarray
    S: np.ndarray
    T: np.ndarray
    U: np.ndarray
    Theta: np.ndarray
    K: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    B: np.ndarray
    F: np.ndarray
    net: MLP
    x: np.ndarray

    statistics = ("R", "S", "T", "U")

    def normalized(self, width: int | None = None) -> dict[str, np.ndarray]:
        """R K/(nΘ³), S K/(nΘ³), T K/(nΘ³), U K/(nΘ³) on the diagonal (a = b = c = d), per layer
        and input, n = n_{ℓ−1} of the network (or ``width``): the book's dimensionless ratios
        (§∞.1, eq. ∞.38's scaling)."""
        n = np.asarray(self.net.widths[:-1], float)[:, None] if width is None else float(width)
        idx = np.arange(self.Theta.shape[1])
        scale = self.K[:, idx, idx] / self.Theta[:, idx, idx] ** 3 / n
        return {f"{s} K/Theta^3": getattr(self, s)[:, idx, idx, idx, idx] * scale for s in "RSTU"}

    def ntk_change(self, learning_rate: float, steps: int, y: np.ndarray) -> np.ndarray:
        """E[Ĥ(t) − Ĥ(0)] of the output layer after ``steps`` full-batch GD steps on
        ½Σ(z − y)² over the inputs x as training set, at O(1/n) and through O(η²) per step,
        (N, N), averaged over the diagonal output neurons (book §∞.2.2); see
        :func:`ntk_change_during_training`."""
        return ntk_change_during_training(self, learning_rate, steps, y)

    def to_frame(self) -> pd.DataFrame:
        return long_frame({s: getattr(self, s) for s in self.statistics})

    def __repr__(self) -> str:
        L, N = self.R.shape[:2]
        return f"DDNTKStatistics(depth={L}, inputs={N})"


def ddntk(net: MLP, x: np.ndarray | Tensor) -> DDNTKStatistics:
    """The ddNTK means R, S, T, U of every layer (book §∞.3, eq. ∞.172, ∞.174–∞.176; single
    input ∞.14–∞.17).

    Parameters
    ----------
    net:
        Network spec (per-layer C_b, C_W, λ_b, λ_W; non-uniform widths through r = n_ℓ/n_{ℓ−1}).
    x:
        Inputs (N, n_0), N ≤ 8, linearly independent enough that every layer's kernel is
        invertible.

    Returns
    -------
    DDNTKStatistics
        ``.R``, ``.S``, ``.T``, ``.U`` float64 (L, N, N, N, N); measure them with
        ``pdlt.measure(net, x, M, statistics=("ddntk",))`` and pair with :func:`pdlt.compare`.

    Examples
    --------
    >>> d = pdlt.ddntk(pdlt.MLP("tanh", 5, 100, 4, C_W=1.0), np.ones((1, 4)))
    >>> d.R[2:, 0, 0, 0, 0]        # −13.2947, −32.4176, −69.18
    """
    xt = fluctuation_inputs(net, x, "ddntk")
    walk = propagate(net, gram(xt), [DDNTK])
    return DDNTKStatistics(
        **{s: walk.numpy(s) for s in ("R", "S", "T", "U", "Theta", "K", "P", "Q", "B", "F")},
        net=net,
        x=xt.numpy(),
    )


# --------------------------------------------------------------------------------------------
# the NTK during training (book §∞.2.2)


def _neuron_tensors(stats: DDNTKStatistics, n_L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n·E[dĤ z], n·E[dd_IĤ], n·E[dd_IIĤ] of the output layer with their neuron indices
    written out (book eq. 11.45, ∞.11–∞.13): (n_L,)*4 + (N,)*4 each."""
    d = np.eye(n_L)
    P, Q, R, S, T, U = (getattr(stats, k)[-1] for k in "PQRSTU")

    def three(x1, x2, x3):  # δ-structures: (i0i1)(i2i3), (i0i2)(i1i3), (i0i3)(i1i2)
        return (
            np.einsum("ij,kl,abcd->ijklabcd", d, d, x1)
            + np.einsum("ik,jl,abcd->ijklabcd", d, d, x2)
            + np.einsum("il,jk,abcd->ijklabcd", d, d, x3)
        )

    dz = three(Q, np.einsum("acbd->abcd", Q), P)
    ddI = three(R, np.einsum("acdb->abcd", R), np.einsum("adbc->abcd", R))
    ddII = three(S, np.einsum("acdb->abcd", T), np.einsum("adbc->abcd", U))
    return dz, ddI, ddII


def _time_weights(u: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """In the eigenbasis of U = 1 − ηΘ̃ (eigenvalues u): W1_pq = Σ_{s<t} u_p^s u_q^s and
    W2_pq = Σ_{s<t} Σ_{s'<s} u_p^{s'} u_q^s."""
    s = np.arange(int(steps), dtype=float)[:, None]
    pw = u[None, :] ** s  # (t, N): u^s
    before = np.cumsum(pw, axis=0) - pw  # Σ_{s'<s} u^{s'}
    return pw.T @ pw, before.T @ pw


def ntk_change_during_training(
    stats: DDNTKStatistics, learning_rate: float, steps: int, y: np.ndarray
) -> np.ndarray:
    """The mean NTK change during MSE gradient descent at O(1/n), through second order in η
    per step with all orders in ηt of the frozen-kernel residual (book §∞.2.2; pdlt's
    derivation). With u = −ηΣ v_{jα}ε_{jα} the step (v = Λ∇z) and ε(s) = (1 − ηΘ̃)^s ε(0):

        ΔĤ_{i1i2}(s)  = −η Σ ε_j (dĤ_{i1i2j} + dĤ_{i2i1j})
                        + (η²/2) Σ ε_jε_k (dd_IĤ_{i1jki2} + dd_IĤ_{i2jki1} + 2 dd_IIĤ_{i1i2jk}),
        ΔdĤ_{i0i1i2}(s) = −η Σ ε_k (dd_IĤ_{i0ki1i2} + dd_IIĤ_{i0i1i2k} + dd_IIĤ_{i0i2i1k}),

    so that, with E[ε_{kβ}(s')ε_{jα}(s)] = [U^{s'}(δ_{kj}K̃ + y_k y_jᵀ)U^s]_{βα} at leading order,

        E[ΔĤ(t)] = Σ_{s<t} { −η E[(dĤ + dĤᵀ) U^s z(0)]                       (P, Q)
                   + η² Σ_{s'<s} E[dd_I + dd_II + dd_II] · E[ε(s')ε(s)]         (dĤ's drift)
                   + (η²/2) E[dd_I + dd_I + 2dd_II] · E[ε(s)ε(s)] }            (R, S, T, U).

    Neglected: O(1/n²) — E[dĤ dĤ] is (the dNTK of the output layer is O(1/n) in size:
    measured rms 0.48, 0.23, 0.11, 0.055 at n = 16, 32, 64, 128, tanh depth 3) — and
    E[dĤ ΔĤ z], taken to be beyond O(1/n). What real networks say (tanh, depth 3, C_W = 1.5,
    C_b = 0.2, two inputs, η = 0.02, ηλ_max(Θ̃) = 0.11, ηλ_min = 0.019;
    ``tests/test_ntk_training.py``): agreement within 4 se + (ℓ/n)|prediction| at widths
    16, 32, 64 for t ≤ 10 (ηλ_max t ≤ 1.1), and at widths 32, 64 for t = 20. Not for
    long training: at t = 200 (ηλ_min t = 3.7) the prediction is 1.6–2× the measured change
    at n = 64 (e.g. entry (0,0): −0.099 vs −0.054 ± 0.004), and the measured n·ΔĤ
    (−1.0, −2.7, −3.5 at n = 16, 32, 64) is not yet constant — a missing O(1/n) term that
    grows with t, or a slow approach to the 1/n regime; undecided. ReLU disagrees from the
    first step (measured about 3× the prediction at n = 16 and 32: kink crossings, which
    the dNTK of a piecewise-linear σ, σ'' = 0, does not see). The O(η) part alone (P, Q with
    M(t) = ηΣ_s U^s) is 60% too large at ηλ_max t = 0.55: the ddNTK terms are not a small
    correction. ``y`` is (N, n_L) targets on the inputs x. Returns (N, N)."""
    from pdlt import _validation
    from pdlt.theory.learning import _training_projector

    steps = _validation.integer("steps", steps, min=0)

    net = stats.net
    n_L, n = net.output_dim, net.widths[-2]
    Y = np.asarray(y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    N = stats.Theta.shape[1]
    if Y.shape != (N, n_L):
        raise ValueError(
            f"y must have shape ({N}, {n_L}) (inputs × network outputs), got {Y.shape}"
        )
    eta = float(learning_rate)
    Th, K = stats.Theta[-1], stats.K[-1]
    lam, V = np.linalg.eigh(Th)
    w1, w2 = _time_weights(1.0 - eta * lam, steps)

    def summed(w: np.ndarray) -> np.ndarray:  # Σ over times of E[ε_{kβ}ε_{jα}], (k, β, j, α)
        Kh = V.T @ K @ V
        Yh = V.T @ Y  # (N, n_L)
        kk = V @ (Kh * w) @ V.T
        yy = np.einsum("pk,qj,pq->kpjq", Yh, Yh, w)
        yy = np.einsum("bp,kpjq,aq->kbja", V, yy, V)
        return np.einsum("kj,ba->kbja", np.eye(n_L), kk) + yy

    M, _ = _training_projector(Th, eta, steps, float("inf"))
    dz, ddI, ddII = _neuron_tensors(stats, n_L)
    # first order: −Σ E[dĤ_{iij;δ1δ2α} z_{jβ}] M_{αβ}
    first = -np.einsum("iijjxyab,ab->ixy", dz, M)
    c2 = summed(w2)  # (k, β, j, α): β at s' < s, α at s
    drift = (
        np.einsum("ikijxbya,kbja->ixy", ddI, c2)
        + np.einsum("iijkxyab,kbja->ixy", ddII, c2)
        + np.einsum("ijikxayb,kbja->ixy", ddII, c2)
    )
    c1 = summed(w1)  # (j, α, k, β) at the same time
    local = 0.5 * (
        np.einsum("ijkixaby,jakb->ixy", ddI, c1)
        + np.einsum("ijkiyabx,jakb->ixy", ddI, c1)
        + 2 * np.einsum("iijkxyab,jakb->ixy", ddII, c1)
    )
    per_neuron = first + eta**2 * drift
    per_neuron = per_neuron + np.swapaxes(per_neuron, 1, 2) + eta**2 * local
    return per_neuron.mean(axis=0) / n
