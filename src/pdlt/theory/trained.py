"""The mean output of networks trained by MSE gradient descent at O(1/n), after a given number
of steps (book §∞.2.2; pdlt's derivation, step by step).

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
n·c = 0.007 at η = 0.05 (600 steps) and 0.024 at η = 0.15 (200 steps); the measurement at
n = 32 (−0.13 ± 0.13, −0.12 ± 0.13) agrees but cannot resolve the difference.
"""

from __future__ import annotations

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


def trained_mean_correction(
    net: MLP,
    X_train: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None,
    learning_rate: float,
    steps: int,
) -> np.ndarray:
    """n_{L−1}·(E[z(t)] − m⁰(t)) on the training inputs followed by the test inputs,
    ((N_A + N_B), n_L): the O(1/n) coefficient of the trained ensemble's mean (module doc).
    Test inputs must differ from the training inputs (the statistics need an invertible
    kernel); ``X_test=None`` gives the training inputs alone."""
    from pdlt import _validation
    from pdlt.theory.ddntk import ddntk
    from pdlt.theory.dntk import ntk_correction
    from pdlt.theory.ntk import ntk_fluctuations

    steps = _validation.integer("steps", steps, min=0)
    eta = float(learning_rate)
    XA = validate_inputs(net, X_train).numpy()
    XB = XA[:0] if X_test is None or len(X_test) == 0 else validate_inputs(net, X_test).numpy()
    x = np.concatenate([XA, XB])
    NA, ND, n_L = XA.shape[0], x.shape[0], net.output_dim
    Y = np.asarray(y, dtype=np.float64).reshape(NA, -1)
    if Y.shape[1] != n_L:
        raise ValueError(f"y must have {n_L} column(s) (the network's outputs), got {Y.shape[1]}")
    dd = ddntk(net, x)
    fl = ntk_fluctuations(net, x)
    Th1 = ntk_correction(net, x).Theta1[-1]
    P, Q, R, S, T, U = (getattr(dd, k)[-1] for k in "PQRSTU")
    A_, B_ = fl.A[-1], fl.B[-1]
    Th, K = dd.Theta[-1], dd.K[-1]
    e4 = np.einsum
    dz = _three(n_L, Q, e4("acbd->abcd", Q), P)  # n E[dĤ_{pqr} z_u]
    ddI = _three(n_L, R, e4("acdb->abcd", R), e4("adbc->abcd", R))
    ddII = _three(n_L, S, e4("acdb->abcd", T), e4("adbc->abcd", U))
    HH = _three(n_L, A_, e4("acbd->abcd", B_), e4("adbc->abcd", B_))  # n E[ΔĤ_pq ΔĤ_ru]
    # flattened (neuron, sample) slots; training entries of the D = A ∪ B slots
    tr = np.array([i * ND + a for i in range(n_L) for a in range(NA)])
    sub = np.ix_(np.arange(n_L * ND), tr, tr, tr)
    ddL = e4("pruq->pqru", ddI) + e4("qrup->pqru", ddI) + 2 * ddII
    ddD = e4("puqr->pqru", ddI) + ddII + e4("prqu->pqru", ddII)
    Dsym = dz[sub] + e4("qpru->pqru", dz)[sub]  # E[(dĤ_pqr + dĤ_qpr) z_u], p over D
    ddDsym = ddD[sub] + e4("qpru->pqru", ddD)[sub]
    ddL, dzA, ddIA, ddDA, HHA = ddL[sub], dz[sub], ddI[sub], ddD[sub], HH[sub]
    I = np.eye(n_L)
    ThDA = np.kron(I, Th[:, :NA])
    Th1DA = np.kron(I, Th1[:, :NA])
    Kb = np.kron(I, K[:NA, :NA])
    U1 = np.eye(n_L * NA) - eta * np.kron(I, Th[:NA, :NA])
    e0 = -Y.T.reshape(-1)  # flattened (j, α)
    mA = n_L * NA
    Us = np.eye(mA)
    SU = np.zeros((mA, mA))
    Se = np.zeros(mA)
    X = np.zeros((mA, mA, mA))
    Wsum = np.zeros((mA, mA, mA))
    Z1 = np.zeros((mA, mA))
    Z2 = np.zeros((mA, mA, mA))
    Z3 = np.zeros((mA, mA))
    c = np.zeros(n_L * ND)
    for _ in range(steps):
        e = Us @ e0
        C_SU = SU @ Kb @ Us
        C_ss = Us @ Kb @ Us
        # E[ΔĤ_dyn(s) ε⁰(s)]: (a) dNTK with one target, (b) its drift, (c) the local ddNTK step
        a = -eta * (e4("pqru,ru,q->p", Dsym, SU, e) + e4("pqru,qu,r->p", Dsym, Us, Se))
        G3 = e4("trc,cq->trq", Wsum, Us)
        b = eta**2 * e4("pqrt,trq->p", ddDsym, G3)
        G2 = (
            e4("ru,q->ruq", Z1, e)
            + e4("rcu,cq->ruq", Z2, Us)
            + e4("ucr,cq->ruq", Z2, Us)
            + e4("ru,q->ruq", Z3, e)
        )
        loc = 0.5 * eta**2 * e4("pqru,ruq->p", ddL, G2)
        fluct = -eta * e4("pqvr,qvr->p", HHA, X)  # E[ΔĤ ε¹]
        S1 = Th1DA @ e + fluct + a + b + loc
        # S2: (η²/2) E[dĤ(s) εε] with dĤ's drift
        G1 = (
            e4("tq,r->tqr", C_SU, e)
            + e4("tr,q->tqr", C_SU, e)
            + e4("qr,t->tqr", C_ss, Se)
            + e4("t,q,r->tqr", Se, e, e)
        )
        S2 = (
            0.5
            * eta**2
            * (
                e4("pqru,qu,r->p", dzA, Us, e)
                + e4("pqru,ru,q->p", dzA, Us, e)
                - eta * e4("pqrt,tqr->p", ddDA, G1)
            )
        )
        E3 = (
            e4("qr,u->qru", C_ss, e)
            + e4("qu,r->qru", C_ss, e)
            + e4("ru,q->qru", C_ss, e)
            + e4("q,r,u->qru", e, e, e)
        )
        S3 = -(eta**3) / 6 * e4("pqru,qru->p", ddIA, E3)
        c = c - eta * ThDA @ c[tr] - eta * S1 + S2 + S3
        # accumulators to s + 1
        UK = Us @ Kb
        Wsum += (
            e4("tr,c->trc", C_SU, e0)
            + e4("tc,r->trc", SU @ Kb, e)
            + e4("rc,t->trc", UK, Se)
            + e4("t,r,c->trc", Se, e, e0)
        )
        Z1 += C_ss
        Z2 += e4("rc,u->rcu", UK, e)
        Z3 += np.outer(e, e)
        X = e4("qw,wvr->qvr", U1, X) + e4("qv,r->qvr", np.eye(mA), e)
        SU += Us
        Se += e
        Us = U1 @ Us
    return c.reshape(n_L, ND).T
