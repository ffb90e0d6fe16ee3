"""The mean and covariance of networks trained by MSE gradient descent at O(1/n), after a given
number of steps (book §∞.2.2; pdlt's derivation, step by step) or fully trained (t = ∞, book
§∞.2.3, in closed form): :func:`trained_mean_correction`, :func:`trained_covariance_correction`.

One step θ → θ − ηΛ∇L with L = ½Σ(z − y)² moves the outputs, the NTK and the dNTK by (ε = z − y on
the training set, sums over training samples and output neurons implied)

    Δz_p  = −η Ĥ_{pq} ε_q + (η²/2) dĤ_{pqr} ε_q ε_r − (η³/6) dd_IĤ_{pqru} ε_q ε_r ε_u,
    ΔĤ_pq = −η (dĤ_{pqr} + dĤ_{qpr}) ε_r + (η²/2) L_{pqru} ε_r ε_u,
    ΔdĤ_pqr = −η D_{pqru} ε_u,

with L_{pqru} = dd_IĤ_{pruq} + dd_IĤ_{qrup} + 2 dd_IIĤ_{pqru} and
D_{pqru} = dd_IĤ_{puqr} + dd_IIĤ_{pqru} + dd_IIĤ_{prqu}; everything beyond is O(1/n²). Taking
the mean to O(1/n), with the frozen-kernel residual ε⁰(s) = U^s ε(0), U = 1 − ηΘ̃, in every
O(1/n) product, the correction c(s) = E[z(s)] − m⁰(s) to the kernel prediction m⁰ obeys

    c(s+1) = c(s) − ηΘ_{·Ã} c_Ã(s) − η S1(s) + S2(s) + S3(s),
    S1 = Θ1 e(s)/n + E[ΔĤ ε¹(s)] + E[ΔĤ_dyn(s) ε⁰(s)],
    S2 = (η²/2) E[dĤ(s) ε⁰ε⁰],   S3 = −(η³/6) E[dd_IĤ] E[ε⁰ε⁰ε⁰],

where e(s) = −U^s y, ε¹(s) = −ηΣ_{s'<s} U^{s−1−s'} ΔĤ ε⁰(s') is the residual's response to the
NTK's initial fluctuation (its correlation with ΔĤ is the NTK variance A, B), and ΔĤ_dyn(s)
is the NTK change of :func:`pdlt.theory.ddntk.ntk_change_during_training`. Odd moments vanish
(z → −z with the last layer's sign), so the NTK–preactivation correlations D, F do not enter
the mean; P, Q enter with one target y, R, S, T, U with E[εεε] = −(K y + 2 perms) − y y y.
Output and sample indices p, q, … are flattened pairs (neuron, sample); the time sums are
carried by running accumulators, so the cost is O(t·(n_L N)^4).

Checked against real trained networks (tanh, depth 3, C_W = 1.5, C_b = 0.2, two training
inputs, one test input, η = 0.02, 4000 antithetic networks, float64;
``tests/test_trained_mean.py``): at t = 20 the measured n·(mean − kernel prediction) is
(−0.27, 0.25, −0.13) ± (0.035, 0.031, 0.025) at n = 16 and (−0.39, 0.30, −0.20) ± (0.08, 0.07,
0.06) at n = 64 against the prediction (−0.30, 0.22, −0.15); at t = 200 (ηλ_min t = 3.7) it is
−0.528, −0.621, −0.670 (± 0.017, 0.023, 0.027) at n = 16, 32, 64 on the first training
input against −0.683: the residual after the 1/n term, 0.155, 0.062, 0.013, falls like 1/n².
GELU (C_W = 1.9, C_b = 0.1, t = 20) agrees as well: (−1.22, 1.00, −0.35) ± (0.08, 0.08, 0.05)
at n = 32 against (−1.24, 1.09, −0.40). ReLU does not: (−1.61, 1.31, −0.43) at n = 16 and
(−2.01, 1.64, −0.42) at n = 32 against (−0.94, 0.79, −0.27) — the dNTK of a piecewise-linear
σ (σ'' = 0) misses the kink crossings, as in the first-step NTK change. Fully trained
(ηλ_min t = 28) the training inputs are fitted exactly (correction 0) and the test-input
correction is small and depends on the learning rate — algorithm dependence at finite width:
n·c = 0.007 at η = 0.05 (600 steps) and 0.024 at η = 0.15 (200 steps), too small a difference to
resolve from the two means (−0.13 ± 0.13, −0.12 ± 0.13 at n = 32). With common random numbers it is
resolved (``tests/test_trained_algorithm.py``): the same initial networks trained to convergence
with both rates differ, network by network, only at O(1/n) (at O(1) both are the same kernel map of
z(0)), so the mean of z_η1 − z_η2 has an 8–35× smaller error than either mean. GELU, depth 3, C_W =
1.9, C_b = 0.1, three training inputs (y = 1, −0.8, 0.6), one test input, ηλ_max(Θ̃) = 0.3 vs 1.4 (η
= 0.041, 708 steps vs η = 0.194, 152 steps; ηλ_min t = 30), seed 7, antithetic float64 (chosen for a
large predicted effect: the η dependence grows steeply toward the stability edge ηλ_max = 2 and with
|y|; three well-separated inputs gave more than two or four; |y| = 2 gave larger O(1/n²) terms):
predicted n·E[z_η1 − z_η2] = 0.133 on the test input (0.107 − (−0.026)), measured 0.081 ± 0.010,
0.089 ± 0.009 (4000 networks, n = 16, 32), 0.104 ± 0.011, 0.126 ± 0.011, 0.120 ± 0.010 (2000, n =
48, 64, 128) — the η dependence is real (5–12 se), n·E[Δ] is O(1) and its residual (−0.052, −0.044,
−0.029, −0.007, −0.013) shrinks toward the prediction; the variance difference n·(Var_η1 − Var_η2) =
0.229 ± 0.021, 0.255 ± 0.020, 0.311 ± 0.040, 0.280 ± 0.027, 0.293 ± 0.027 against 0.292. Much of the
residual at small n is plausibly non-perturbative: at ηλ_max = 1.4 a fraction 11 %, 6 %, 3 %, 1.5 %
(n = 16, 32, 48, 64) of the networks start with ηλ_max(Ĥ(0)) > 2, beyond the stability edge; they
still converge, so their NTK must fall by O(1) during training (a catapult), which the truncated
dynamics above does not describe (the slowest to converge sit at ηλ_max(Ĥ) ≈ 1.99).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pdlt.network import MLP, validate_inputs


def _three(n_L: int, x1, x2, x3) -> np.ndarray:
    """δ_{i0i1}δ_{i2i3} x1 + δ_{i0i2}δ_{i1i3} x2 + δ_{i0i3}δ_{i1i2} x3 as (n_L N)^4, flattened
    (neuron, sample) slots."""
    d = np.eye(n_L)
    T = (
        np.einsum("ij,kl,abcd->iajbkcld", d, d, x1)
        + np.einsum("ik,jl,abcd->iajbkcld", d, d, x2)
        + np.einsum("il,jk,abcd->iajbkcld", d, d, x3)
    )
    m = n_L * x1.shape[0]
    return T.reshape(m, m, m, m)


@dataclass(frozen=True)
class _Statistics:
    """Everything the O(1/n) trajectory needs, on flattened (neuron, sample) slots: p over
    D = A ∪ B (n_L·N_D), a over the training slots A (n_L·N_A); ``tr`` maps A into D. Each
    statistic is its coefficient of 1/n_{L−1}."""

    tr: np.ndarray
    Th_DA: np.ndarray  # Θ on (D, A)
    Th1_DA: np.ndarray  # Θ1: E[Ĥ] = Θ + Θ1/n
    K_DD: np.ndarray  # K
    K1_DD: np.ndarray  # K1: E[zz] = K + K1/n
    HH: np.ndarray  # n E[ΔĤ_pa ΔĤ_qb], (D, A, D, A), from A, B
    DF: np.ndarray  # n ⟨ΔĤ_pa z_r z_b⟩_c, (D, A, D, A), from D, F
    dz: np.ndarray  # n E[dĤ_{pab} z_r], (D, A, A, D), from P, Q
    dzs: np.ndarray  # n E[(dĤ_{pab} + dĤ_{apb}) z_r], (D, A, A, D)
    ddI: np.ndarray  # n E[dd_IĤ_{pabc}], (D, A, A, A), from R
    ddL: np.ndarray  # the O(η²) NTK step's ddNTK combination L_{pabc}
    ddD: np.ndarray  # the dNTK step's combination D_{pabc}
    ddDs: np.ndarray  # D_{pabc} + D_{apbc}

    @property
    def ntk(self) -> np.ndarray:
        return self.Th_DA[self.tr]


def _statistics(net: MLP, XA: np.ndarray, XB: np.ndarray) -> _Statistics:
    from pdlt.theory.ddntk import ddntk
    from pdlt.theory.dntk import ntk_correction
    from pdlt.theory.ntk import ntk_fluctuations
    from pdlt.theory.vertex import kernel_correction

    x = np.concatenate([XA, XB])
    NA, ND, n_L = XA.shape[0], x.shape[0], net.output_dim
    dd = ddntk(net, x)
    fl = ntk_fluctuations(net, x)
    Th1 = ntk_correction(net, x).Theta1[-1]
    K1 = kernel_correction(net, x).K1[-1]
    P, Q, R, S, T, U = (getattr(dd, k)[-1] for k in "PQRSTU")
    e4 = np.einsum
    dz = _three(n_L, Q, e4("acbd->abcd", Q), P)  # n E[dĤ_{pqr} z_u]
    ddI = _three(n_L, R, e4("acdb->abcd", R), e4("adbc->abcd", R))
    ddII = _three(n_L, S, e4("acdb->abcd", T), e4("adbc->abcd", U))
    HH = _three(n_L, fl.A[-1], e4("acbd->abcd", fl.B[-1]), e4("adbc->abcd", fl.B[-1]))
    DF = _three(n_L, fl.D[-1], e4("acbd->abcd", fl.F[-1]), e4("adbc->abcd", fl.F[-1]))
    tr = np.array([i * ND + a for i in range(n_L) for a in range(NA)])
    I = np.eye(n_L)
    flat = {"Theta": dd.Theta[-1], "Theta1": Th1, "K": dd.K[-1], "K1": K1}
    flat = {k: np.kron(I, v) for k, v in flat.items()}
    return _flat_statistics(tr, **flat, HH=HH, DF=DF, dz=dz, ddI=ddI, ddII=ddII)


def _flat_statistics(
    tr: np.ndarray,
    *,
    Theta: np.ndarray,
    Theta1: np.ndarray,
    K: np.ndarray,
    K1: np.ndarray,
    HH: np.ndarray,
    DF: np.ndarray,
    dz: np.ndarray,
    ddI: np.ndarray,
    ddII: np.ndarray,
) -> _Statistics:
    """:class:`_Statistics` from the full tensors on flattened (neuron, sample) slots of D:
    (m, m) Θ, Θ1, K, K1 and (m, m, m, m) n E[ΔĤΔĤ], n E[ΔĤ z z]_c, n E[dĤ z], n E[dd_IĤ],
    n E[dd_IIĤ] (also the entry point of the synthetic check of the expansion in the tests)."""
    e4 = np.einsum
    allD = np.arange(Theta.shape[0])
    sub = np.ix_(allD, tr, tr, tr)
    ddL = e4("pruq->pqru", ddI) + e4("qrup->pqru", ddI) + 2 * ddII
    ddD = e4("puqr->pqru", ddI) + ddII + e4("prqu->pqru", ddII)
    return _Statistics(
        tr=tr,
        Th_DA=Theta[:, tr],
        Th1_DA=Theta1[:, tr],
        K_DD=K,
        K1_DD=K1,
        HH=HH[np.ix_(allD, tr, allD, tr)],
        DF=DF[np.ix_(allD, tr, allD, tr)],
        dz=dz[np.ix_(allD, tr, tr, allD)],
        dzs=(dz + e4("qpru->pqru", dz))[np.ix_(allD, tr, tr, allD)],
        ddI=ddI[sub],
        ddL=ddL[sub],
        ddD=ddD[sub],
        ddDs=(ddD + e4("qpru->pqru", ddD))[sub],
    )


def _converging_modes(Th_AA: np.ndarray, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """Θ̃'s eigenvectors V and the factors u = 1 − ηλ of U = 1 − ηΘ̃ = V diag(u) Vᵀ, checked
    to make every time sum converge (0 < ηλ < 2)."""
    lam, V = np.linalg.eigh(Th_AA)
    if not (eta * lam.min() > 0 and eta * lam.max() < 2):
        raise ValueError(
            "steps=inf needs gradient descent to converge, 0 < ηλ < 2 for every eigenvalue λ "
            f"of the training NTK Θ̃; got ηλ in [{eta * lam.min():.3g}, {eta * lam.max():.3g}]"
        )
    return V, 1.0 - eta * lam


def _fully_trained(
    st: _Statistics, e0: np.ndarray, eta: float, covariance: bool
) -> dict[str, np.ndarray]:
    """:func:`_trajectory` at t = ∞ in closed form (book §∞.2.3 for the mean).

    A source σ(s) of step s reaches time t through 𝓜^{t−1−s}, 𝓜 = 1 − ηΘ_{·A}, whose powers
    tend to 𝓜^∞ = 1 − Θ_{·A}Θ̃^{-1} (training rows 0: the training set is fitted), so the
    t = ∞ correction is 𝓜^∞ Σ_{s≥0} σ(s). In Θ̃'s eigenbasis U^s = diag(u^s), and every
    source is a product of geometric factors over a chain of nested times s₁ < s₂ < … < s_k,
    which sums to

        Σ_{s} b^s = 1/(1 − b),   Σ_{s} b^s Σ_{s'<s} a^{s'} = b/((1 − b)(1 − ab)),
        Σ_{s} c^s Σ_{s'<s} b^{s'} Σ_{s''<s'} a^{s''} = c/(1 − c) · bc/(1 − bc) · 1/(1 − abc),

    with no division by differences of eigenvalues (degenerate ones, e.g. n_L ≥ 2, are fine).
    The time sums of the residual products all take the form C(u…)·[k e0 + k e0 + k e0 +
    e0 e0 e0] (``B3`` below: the Wick pairings of three residuals ε, E[ε] = e0 = −y in this
    basis, E[εε]_c = K̃), which is what makes the closed form short."""
    e4 = np.einsum
    tr = st.tr
    Th_DA, Th_AA = st.Th_DA, st.ntk
    V, u = _converging_modes(Th_AA, eta)

    def rot(x: np.ndarray, *slots: int) -> np.ndarray:
        for k in slots:
            x = np.moveaxis(np.tensordot(x, V, axes=([k], [0])), -1, k)
        return x

    C1 = lambda b: 1.0 / (1.0 - b)  # noqa: E731
    C2 = lambda a, b: b / ((1.0 - b) * (1.0 - a * b))  # noqa: E731
    ui, uj, ul = u[:, None, None], u[None, :, None], u[None, None, :]
    e = e0 @ V  # (z, i)
    k = V.T @ st.K_DD[np.ix_(tr, tr)] @ V
    B3 = (
        e4("ij,zl->zijl", k, e)
        + e4("il,zj->zijl", k, e)
        + e4("jl,zi->zijl", k, e)
        + e4("zi,zj,zl->zijl", e, e, e)
    )
    c2 = C2(u[None, :], u[:, None])  # [q, r]: Σ_s u_q^s Σ_{s'<s} u_r^{s'}
    S1 = e4("pi,zi->zp", st.Th1_DA @ V, e * C1(u))
    S1 -= eta * e4(
        "pqqr,zr->zp", rot(st.HH[:, :, tr, :], 1, 2, 3) * C1(u)[None, :, None, None], e * C1(u)
    )
    Dsym = rot(st.dzs[..., tr], 1, 2, 3)
    S1 -= eta * (e4("pqrr,zq,qr->zp", Dsym, e, c2) + e4("pqrq,zr,qr->zp", Dsym, e, c2))
    C3 = ul / (1 - ul) * (uj * ul) / (1 - uj * ul) / (1 - ui * uj * ul)  # chain t < r < q
    S1 += eta**2 * e4("pqrt,ztrq->zp", rot(st.ddDs, 1, 2, 3), C3 * B3)
    S1 += 0.5 * eta**2 * e4("pqru,zruq->zp", rot(st.ddL, 1, 2, 3), C2(ui * uj, ul) * B3)
    dzA = rot(st.dz[..., tr], 1, 2, 3)
    c1 = C1(u[:, None] * u[None, :])
    S2 = 0.5 * eta**2 * (e4("pqrq,zr,qr->zp", dzA, e, c1) + e4("pqrr,zq,qr->zp", dzA, e, c1))
    S2 -= 0.5 * eta**3 * e4("pqrt,ztqr->zp", rot(st.ddD, 1, 2, 3), C2(ui, uj * ul) * B3)
    S3 = -(eta**3) / 6 * e4("pqru,zqru->zp", rot(st.ddI, 1, 2, 3), C1(ui * uj * ul) * B3)
    Minf = np.eye(Th_DA.shape[0])
    Minf[:, tr] -= Th_DA @ np.linalg.solve(Th_AA, np.eye(len(tr)))
    out = {"c": (-eta * S1 + S2 + S3) @ Minf.T}
    if covariance:
        Ky = st.K_DD[np.ix_(tr, tr)] + np.outer(e0[0], e0[0])
        ky = V.T @ Ky @ V
        src = eta**2 * e4("pqvr,vq->pr", rot(st.dzs, 1, 2), ky * c2.T)
        src += 0.5 * eta**2 * e4("pqvr,qv->pr", rot(st.dz, 1, 2), ky * c1)
        SU = (V / (1.0 - u)) @ V.T  # Σ_s U^s = (ηΘ̃)^{-1}
        out.update(Y=e4("pq,ab->pqab", Minf, SU), Tg=Minf @ src, SU=SU, Ky=Ky)
    return out


def _trajectory(
    st: _Statistics, e0: np.ndarray, eta: float, steps: float, covariance: bool
) -> dict[str, np.ndarray]:
    """Run the O(1/n) recursions for ``steps`` steps (module doc). ``e0``: (batch, n_L N_A)
    initial mean residuals −y; returns the mean coefficients ``c`` (batch, n_L N_D) and, with
    ``covariance``, the trajectory pieces the covariance needs (for the first batch entry):
    ``Y`` = Σ_s M^{t−1−s} ⊗ U^s, ``Tg`` (the dNTK paired with z(0)), ``SU`` = Σ_s U^s."""
    if math.isinf(steps):
        return _fully_trained(st, e0, eta, covariance)
    e4 = np.einsum
    tr = st.tr
    Th_DA, Th_AA = st.Th_DA, st.ntk
    mA, mD, nb = len(tr), Th_DA.shape[0], e0.shape[0]
    Kb = st.K_DD[np.ix_(tr, tr)]
    Dsym, dzA = st.dzs[..., tr], st.dz[..., tr]
    HHA = st.HH[:, :, tr, :]
    ddL, ddIA, ddDA, ddDsym = st.ddL, st.ddI, st.ddD, st.ddDs
    U1 = np.eye(mA) - eta * Th_AA
    Us = np.eye(mA)
    SU = np.zeros((mA, mA))
    Se = np.zeros((nb, mA))
    X = np.zeros((nb, mA, mA, mA))
    Wsum = np.zeros((nb, mA, mA, mA))
    Z1 = np.zeros((mA, mA))
    Z2 = np.zeros((nb, mA, mA, mA))
    Z3 = np.zeros((nb, mA, mA))
    c = np.zeros((nb, mD))
    if covariance:
        Ky = Kb + np.outer(e0[0], e0[0])  # E[ε(0) ε(0)]
        Y = np.zeros((mD, mD, mA, mA))
        Tg = np.zeros((mD, mD))
        eyeD = np.eye(mD)
    for _ in range(int(steps)):
        e = e0 @ Us.T
        C_SU = SU @ Kb @ Us
        C_ss = Us @ Kb @ Us
        # E[ΔĤ_dyn(s) ε⁰(s)]: (a) dNTK with one target, (b) its drift, (c) the local ddNTK step
        a = -eta * (e4("pqru,ru,zq->zp", Dsym, SU, e) + e4("pqru,qu,zr->zp", Dsym, Us, Se))
        G3 = e4("ztrc,cq->ztrq", Wsum, Us)
        b = eta**2 * e4("pqrt,ztrq->zp", ddDsym, G3)
        G2 = (
            e4("ru,zq->zruq", Z1, e)
            + e4("zrcu,cq->zruq", Z2, Us)
            + e4("zucr,cq->zruq", Z2, Us)
            + e4("zru,zq->zruq", Z3, e)
        )
        loc = 0.5 * eta**2 * e4("pqru,zruq->zp", ddL, G2)
        fluct = -eta * e4("pqvr,zqvr->zp", HHA, X)  # E[ΔĤ ε¹]
        S1 = e @ st.Th1_DA.T + fluct + a + b + loc
        # S2: (η²/2) E[dĤ(s) εε] with dĤ's drift
        G1 = (
            e4("tq,zr->ztqr", C_SU, e)
            + e4("tr,zq->ztqr", C_SU, e)
            + e4("qr,zt->ztqr", C_ss, Se)
            + e4("zt,zq,zr->ztqr", Se, e, e)
        )
        S2 = (
            0.5
            * eta**2
            * (
                e4("pqru,qu,zr->zp", dzA, Us, e)
                + e4("pqru,ru,zq->zp", dzA, Us, e)
                - eta * e4("pqrt,ztqr->zp", ddDA, G1)
            )
        )
        E3 = (
            e4("qr,zu->zqru", C_ss, e)
            + e4("qu,zr->zqru", C_ss, e)
            + e4("ru,zq->zqru", C_ss, e)
            + e4("zq,zr,zu->zqru", e, e, e)
        )
        S3 = -(eta**3) / 6 * e4("pqru,zqru->zp", ddIA, E3)
        c = c - eta * c[:, tr] @ Th_DA.T - eta * S1 + S2 + S3
        if covariance:
            # the dNTK paired with the external z(0), εε averaged to U^{s'} Ky U^s
            src = eta**2 * e4("pqvr,vq->pr", st.dzs, SU @ Ky @ Us) + 0.5 * eta**2 * e4(
                "pqvr,qv->pr", st.dz, Us @ Ky @ Us
            )
            Tg = Tg - eta * Th_DA @ Tg[tr] + src
            Y = Y - eta * e4("pc,cqab->pqab", Th_DA, Y[tr]) + e4("pq,ab->pqab", eyeD, Us)
        # accumulators to s + 1
        UK = Us @ Kb
        Wsum += (
            e4("tr,zc->ztrc", C_SU, e0)
            + e4("tc,zr->ztrc", SU @ Kb, e)
            + e4("rc,zt->ztrc", UK, Se)
            + e4("zt,zr,zc->ztrc", Se, e, e0)
        )
        Z1 += C_ss
        Z2 += e4("rc,zu->zrcu", UK, e)
        Z3 += e4("zr,zu->zru", e, e)
        X = e4("qw,zwvr->zqvr", U1, X) + e4("qv,zr->zqvr", np.eye(mA), e)
        SU += Us
        Se += e
        Us = U1 @ Us
    out = {"c": c}
    if covariance:
        out.update(Y=Y, Tg=Tg, SU=SU, Ky=Ky)
    return out


def _inputs(
    net: MLP, X_train, y, X_test, steps
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from pdlt import _validation

    if isinstance(steps, float) and math.isinf(steps) and steps > 0:
        steps = math.inf
    else:
        steps = _validation.integer("steps", steps, min=0)
    XA = validate_inputs(net, X_train).numpy()
    XB = XA[:0] if X_test is None or len(X_test) == 0 else validate_inputs(net, X_test).numpy()
    n_L = net.output_dim
    Y = np.asarray(y, dtype=np.float64).reshape(XA.shape[0], -1)
    if Y.shape[1] != n_L:
        raise ValueError(f"y must have {n_L} column(s) (the network's outputs), got {Y.shape[1]}")
    return XA, XB, Y, steps


def trained_mean_correction(
    net: MLP,
    X_train: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None,
    learning_rate: float,
    steps: int | float,
) -> np.ndarray:
    """n_{L−1}·(E[z(t)] − m⁰(t)) on the training inputs followed by the test inputs,
    ((N_A + N_B), n_L): the O(1/n) coefficient of the trained ensemble's mean (module doc;
    book §∞.2.2, and §∞.2.3 for ``steps = math.inf``, the fully trained network, summed in
    closed form).
    Test inputs must differ from the training inputs (the statistics need an invertible
    kernel); ``X_test=None`` gives the training inputs alone."""
    XA, XB, Y, steps = _inputs(net, X_train, y, X_test, steps)
    st = _statistics(net, XA, XB)
    c = _trajectory(st, -Y.T.reshape(1, -1), float(learning_rate), steps, False)["c"][0]
    return c.reshape(net.output_dim, -1).T


def trained_covariance_correction(
    net: MLP,
    X_train: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None,
    learning_rate: float,
    steps: int | float,
    *,
    return_mean: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """n_{L−1}·(Cov[z(t), z(t)] − Σ(t)): the O(1/n) coefficient of the trained ensemble's
        covariance over initializations, joint over inputs (training then test) and outputs,
        (N, n_L, N, n_L) with N = N_A + N_B; Σ(t) is the kernel prediction's covariance (book
        §10.2.4). ``steps = math.inf``: the fully trained network (book §∞.2.3).
    ``return_mean=True`` also returns :func:`trained_mean_correction`'s array (first), from the
    same statistics.

        Derivation (pdlt's; the book gives the mean, ∞.2.2–∞.2.3, not the covariance). Write
        the trajectory of the module doc as z(t) = z_lin(t) + δ₁(t) + δ₂(t): z_lin(t) = L(t) z(0) +
        Θ_{·A} M(t) y with L(t) = 1 − ηΘ_{·A} Σ_{s<t} U^s the frozen-kernel map (book §10.2,
        (∞.2)-type, O(1)); δ₁(t) = −η Σ_s 𝓜^{t−1−s} ΔĤ ε⁰(s), linear in the NTK fluctuation
        (O(1/√n)); δ₂ everything O(1/n): ΔĤ twice, the dNTK once (its own variance is O(1/n²):
        it scales like 1/n, not 1/√n — measured, n²E[dĤ²] flat from n = 8 to 64), the ddNTKs'
        means. 𝓜 = 1 − ηΘ_{·A} propagates a step's source to time t. To O(1/n)

            Cov = L G Lᵀ + Cov[δ₁, δ₁] + L E[z(0) δ] + (L E[z(0) δ])ᵀ,

        G = K + K1/n (pdlt.kernel_correction; cross terms with E[z(0)] = 0 drop out).
        Cov[δ₁, δ₁] = η² Σ_{s,s'} 𝓜^{t−1−s} E[ΔĤ U^s ε(0) ε(0)ᵀ U^{s'} ΔĤᵀ] 𝓜ᵀ^{t−1−s'} needs
        E[ΔĤΔĤ] (A, B) and E[ε(0)ε(0)] = K̃ + yyᵀ; E[z(0) δ] splits by Gaussian integration by
        parts (Stein: E[z F] = K E[∂F/∂z] for the Gaussian part, ε(0) = z_A(0) − y) into

        * −K_{·A} ∂c/∂y, with c(y) the mean correction above (a cubic polynomial in y, so its
          gradient is taken exactly by the five-point stencil): every term of the mean with one
          residual ε replaced by its pairing with z(0) — Θ1, A, B, P, Q, R, S, T, U;
        * the third cumulant E[ΔĤ z z]_c (D, F): −η Σ_s 𝓜^{t−1−s} E[ΔĤ z(0) U^s ε(0)]_c;
        * the dNTK paired with the external z(0) (P, Q), its two residuals averaged:
          Σ_s 𝓜^{t−1−s}[η² Σ_{s'<s} E[(dĤ_{pab}+dĤ_{apb}) z] (U^{s'}(K̃+yyᵀ)U^s)_{ba} +
          (η²/2) E[dĤ_{pab} z] (U^s(K̃+yyᵀ)U^s)_{ab}].

        The four-point vertex V does not enter: the only O(1) map is linear in z(0), and every
        term nonlinear in z(0) already carries an O(1/n) factor; connected correlators with more
        fields (E[ΔĤΔĤzz]_c, E[dĤ z z z]_c, ddNTK fluctuations) are O(1/n²). Exact limits
        (tests/test_trained_covariance.py): t = 0 gives K1 (Cov = G exactly); t = 1 the
        one-step map z − ηĤε + (η²/2)dĤεε − (η³/6)dd_IĤεεε, exact, written out by hand; t = ∞
        zero on every training input (each network fits it).

        Against real networks (tanh, depth 3, C_W = 1.5, C_b = 0.2, the two training and one
        test input of the mean's check, η = 0.02, antithetic float64 ensembles, the control
        variate L(t)z(0) measured on the same networks): at t = 20 the six entries of
        n·(Cov − Σ) − L K1 Lᵀ are (0.200, −0.034, 0.120, 0.173, 0.035, 0.088) ± (0.006, 0.004,
        0.005, 0.006, 0.005, 0.006) at n = 16, (0.199, −0.021, 0.132, 0.174, 0.046, 0.095) ±
        (0.009, 0.006, 0.006, 0.009, 0.005, 0.008) at n = 32 and (0.235, −0.038, 0.143, 0.184,
        0.038, 0.109) ± (0.011, 0.008, 0.008, 0.014, 0.007, 0.010) at n = 64, against (0.228,
        −0.027, 0.150, 0.197, 0.050, 0.102) (40000 networks each). At t = 200 the training
        variances are almost all correction (Σ = 8e-5) with a large O(1/n²) term: n·ΔΣ =
        0.056, 0.050, 0.036, 0.030 at n = 16, 32, 64, 128 (± 0.004 … 0.001) against 0.024; the
        residual times n² is 0.5, 0.85, 0.77, 0.81 — the residual falls like 1/n², and a fit
        a + b/n over n = 32 … 128 has intercept a ≈ 0.022–0.025. GELU (C_W = 1.9, C_b = 0.1,
        η = 0.019) has larger 1/n² terms: at t = 20 the first training variance gives 0.224,
        0.324, 0.341 ± 0.022 at n = 16, 32, 64 against 0.418 (at t = 5 all entries agree
        within 1 se at n = 64). Fully trained (tanh, η = 0.05, 600 steps, ηλ_min t = 28;
        4000 networks): on the test input n·(Var − Var[L(∞)z(0)]) = 0.499 ± 0.024, 0.454 ±
        0.035, 0.479 ± 0.053, 0.410 ± 0.071 at n = 16, 32, 64, 128 against 0.3375 (= 0.3223 −
        L K1 Lᵀ) — not settled: the residual (0.16, 0.12, 0.14, 0.07) falls too slowly for
        1/n² at this precision (consistent with it only from n = 64 on), while the exact
        synthetic check of the same algebra at t = ∞ agrees to 1 %; either a large O(1/n²)
        term (the dNTK's own variance n²E[dĤ²] ≈ 60–200 enters there) or an O(1/n) effect of
        long training outside the truncated dynamics of the module doc. The prediction
        depends on η (algorithm dependence): n·(Var − Σ) at t = ∞ on the test input is 0.338,
        0.322, 0.274 at η = 0.01, 0.05, 0.15.
    """
    XA, XB, Y, steps = _inputs(net, X_train, y, X_test, steps)
    c, cov = _covariance(_statistics(net, XA, XB), -Y.T.reshape(-1), float(learning_rate), steps)
    n_L, N = net.output_dim, XA.shape[0] + XB.shape[0]
    cov = cov.reshape(n_L, N, n_L, N).transpose(1, 0, 3, 2)
    return (c.reshape(n_L, N).T, cov) if return_mean else cov


def _covariance(
    st: _Statistics, e0: np.ndarray, eta: float, steps: float
) -> tuple[np.ndarray, np.ndarray]:
    """The mean's and the covariance's O(1/n) coefficients on flattened slots, (m,) and (m, m),
    from the statistics and the initial mean residual e0 = −y (the assembly of
    :func:`trained_covariance_correction`'s doc)."""
    mA, tr = e0.size, st.tr
    h = max(1.0, float(np.max(np.abs(e0))))
    shifts = np.concatenate([np.zeros((1, mA))] + [k * h * np.eye(mA) for k in (1, -1, 2, -2)])
    run = _trajectory(st, e0 + shifts, eta, steps, True)
    cs = run["c"][1:].reshape(4, mA, -1)  # (shift, direction a, p)
    # ∂c_p/∂y_a = −∂c_p/∂e0_a; the stencil is exact for polynomials of degree ≤ 4
    dc_dy = -(8 * (cs[0] - cs[1]) - (cs[2] - cs[3])).T / (12 * h)  # (p, a)
    Y4, Ky = run["Y"], run["Ky"]
    L = np.eye(st.K_DD.shape[0])
    L[:, tr] -= eta * st.Th_DA @ run["SU"]
    Ez = -dc_dy @ st.K_DD[tr] - eta * np.einsum("pqab,qarb->pr", Y4, st.DF) + run["Tg"]
    cov11 = eta**2 * np.einsum("pqab,PQAB,qaQA,bB->pP", Y4, Y4, st.HH, Ky, optimize=True)
    LE = L @ Ez.T
    cov = L @ st.K1_DD @ L.T + LE + LE.T + cov11
    return run["c"][0], 0.5 * (cov + cov.T)
