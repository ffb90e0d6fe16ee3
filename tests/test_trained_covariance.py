"""The trained ensemble's covariance at O(1/n) (pdlt.theory.trained.trained_covariance_correction,
NTKRegressor(finite_width=True).predict(return_std/return_cov)): exact limits (t = 0, one
step, t = ∞ on the training inputs) and real trained networks (antithetic pairs, float64)."""

import math

import numpy as np
import pytest

import pdlt
from pdlt.theory.learning import output_kernels
from pdlt.theory.trained import trained_covariance_correction, trained_mean_correction

X_A = np.array([[1.0, 0.4, -0.3, 0.2], [0.2, -0.9, 0.5, 0.6]])
X_B = np.array([[0.5, 0.1, 0.3, -0.2]])
X_ALL = np.concatenate([X_A, X_B])
Y = np.array([1.0, -0.8])
ETA = 0.02
DEPTH = 3


def _net(width: int, output_dim: int = 1) -> pdlt.MLP:
    return pdlt.MLP("tanh", DEPTH, width, 4, output_dim=output_dim, C_W=1.5, C_b=0.2)


def test_covariance_before_training_is_the_metric():
    """t = 0: Cov[z(0), z(0)] = K + K1/n exactly, δ_ij across outputs (book §4.3)."""
    net = _net(16, output_dim=2)
    y = np.array([[1.0, 0.3], [-0.8, 0.5]])
    cov = trained_covariance_correction(net, X_A, y, X_B, ETA, 0)
    K1 = pdlt.kernel_correction(net, X_ALL).K1[-1]
    assert np.allclose(cov, np.einsum("ij,ab->aibj", np.eye(2), K1), atol=1e-14)
    reg = pdlt.NTKRegressor(net, steps=0, learning_rate=ETA, finite_width=True).fit(X_A, y)
    _, per_output = reg.predict(X_ALL, return_cov=True)
    G = pdlt.metric(net, X_ALL).G[-1]
    assert per_output.shape == (3, 3, 2)
    assert np.allclose(per_output, G[:, :, None], atol=1e-13)


def test_covariance_after_one_step_is_the_exact_one_step_map():
    """t = 1: z(1) = z − ηĤε + (η²/2)dĤεε − (η³/6)dd_IĤεεε exactly (ε = z_A − y), whose
    covariance at O(1/n), written out here by hand from the book's statistics, is
    L K1 Lᵀ − η(X + Xᵀ) + η² E[ΔĤε ΔĤε] + the dNTK and ddNTK pairings with z."""
    net = _net(16)
    cov1 = trained_covariance_correction(net, X_A, Y, X_B, ETA, 1)[:, 0, :, 0]
    fl = pdlt.ntk_fluctuations(net, X_ALL)
    dd = pdlt.ddntk(net, X_ALL)
    Th1 = pdlt.ntk_correction(net, X_ALL).Theta1[-1]
    K1 = pdlt.kernel_correction(net, X_ALL).K1[-1]
    D, F, A, B = (getattr(fl, k)[-1] for k in "DFAB")
    P, Q, R = dd.P[-1], dd.Q[-1], dd.R[-1]
    Th, K = fl.Theta[-1], fl.K[-1]
    # one output: the δ's of the tensor decompositions are all 1
    DF = D + np.einsum("acbd->abcd", F) + np.einsum("adbc->abcd", F)  # n E[Ĥ z z]_c
    HH = A + np.einsum("acbd->abcd", B) + np.einsum("adbc->abcd", B)  # n E[ΔĤ ΔĤ]
    dz = Q + np.einsum("acbd->abcd", Q) + P  # n E[dĤ_{abc} z_d]
    ddI = R + np.einsum("acdb->abcd", R) + np.einsum("adbc->abcd", R)  # n E[dd_IĤ]
    a = slice(0, 2)
    KA, Ky = K[:, a], K[a, a] + np.outer(Y, Y)  # E[εε] = K̃ + yyᵀ
    L = np.eye(3)
    L[:, a] -= ETA * Th[:, a]
    # n Cov(z_r, ΔĤ_qa ε_a) = Θ1_qa K_ra + E[ΔĤ_qa z_r z_a]_c
    X = L @ (np.einsum("qa,ra->rq", Th1[:, a], KA) + np.einsum("qara->rq", DF[:, a, :, a]))
    Eg = (
        np.einsum("pabr,ab->pr", dz[:, a, a, :], Ky)
        + np.einsum("paba,rb->pr", dz[:, a, a, a], KA)
        + np.einsum("pabb,ra->pr", dz[:, a, a, a], KA)
    )
    Ed = sum(
        np.einsum(f"pabc,r{i},{jk}->pr", ddI[:, a, a, a], KA, Ky)
        for i, jk in (("a", "bc"), ("b", "ac"), ("c", "ab"))
    )
    Xd = L @ (0.5 * ETA**2 * Eg - ETA**3 / 6 * Ed).T
    expected = (
        L @ K1 @ L.T
        - ETA * (X + X.T)
        + ETA**2 * np.einsum("paqb,ab->pq", HH[:, a, :, a], Ky)
        + Xd
        + Xd.T
    )
    assert np.allclose(cov1, expected, rtol=1e-10, atol=1e-14)


def test_fully_trained_limit():
    """steps = ∞ (closed form): the training inputs are fitted by every network, so the mean
    correction and every covariance involving a training input vanish; it is the limit of
    many steps (the step recursion, to 1e-10); and at infinite width steps = ∞ is the fully
    trained kernel prediction (time = ∞)."""
    net = _net(16)
    eta = 0.3  # ηλ(Θ̃) in (0.13, 0.32): converges in a few hundred steps
    c_inf, cov_inf = trained_covariance_correction(
        net, X_A, Y, X_B, eta, math.inf, return_mean=True
    )
    c_many, cov_many = trained_covariance_correction(net, X_A, Y, X_B, eta, 1000, return_mean=True)
    assert np.allclose(c_inf[:2], 0.0, atol=1e-12)
    assert np.allclose(cov_inf[:2], 0.0, atol=1e-12)
    assert np.allclose(cov_inf[:, :, :2], 0.0, atol=1e-12)
    assert abs(cov_inf[2, 0, 2, 0]) > 1e-3  # the test input keeps an O(1/n) variance
    assert np.allclose(c_inf, c_many, rtol=0, atol=1e-10)
    assert np.allclose(cov_inf, cov_many, rtol=0, atol=1e-10)
    assert np.allclose(c_inf, trained_mean_correction(net, X_A, Y, X_B, eta, math.inf))
    # two outputs: Θ̃ ⊗ 1 has degenerate eigenvalues, which the closed form must survive
    net2 = _net(16, output_dim=2)
    y2 = np.array([[1.0, 0.3], [-0.8, 0.5]])
    c2_inf, cov2_inf = trained_covariance_correction(
        net2, X_A, y2, X_B, eta, math.inf, return_mean=True
    )
    c2_many, cov2_many = trained_covariance_correction(
        net2, X_A, y2, X_B, eta, 600, return_mean=True
    )
    assert np.allclose(c2_inf, c2_many, rtol=0, atol=1e-10)
    assert np.allclose(cov2_inf, cov2_many, rtol=0, atol=1e-10)
    assert np.allclose(cov2_inf[:2], 0.0, atol=1e-12)
    m_steps = pdlt.NTKRegressor(net, steps=math.inf, learning_rate=eta).fit(X_A, Y)
    m_time = pdlt.NTKRegressor(net).fit(X_A, Y)
    mean_s, cov_s = m_steps.predict(X_B, return_cov=True)
    mean_t, cov_t = m_time.predict(X_B, return_cov=True)
    assert np.allclose(mean_s, mean_t) and np.allclose(cov_s, cov_t)


def test_regressor_std_and_cov_agree():
    """return_std is the square root of return_cov's diagonal; a test input equal to a
    training input gets that input's variance; 1-D y gives 1-D std."""
    net = _net(16)
    reg = pdlt.NTKRegressor(net, steps=20, learning_rate=ETA, finite_width=True).fit(X_A, Y)
    x = np.concatenate([X_B, X_A[:1]])
    mean, cov = reg.predict(x, return_cov=True)
    mean_s, std = reg.predict(x, return_std=True)
    assert cov.shape == (2, 2) and std.shape == (2,)
    assert np.allclose(mean, mean_s) and np.allclose(mean, reg.predict(x))
    assert np.allclose(std**2, np.diag(cov), rtol=1e-12)
    assert np.allclose(cov, cov.T)
    _, cov_all = reg.predict(X_ALL, return_cov=True)
    assert np.isclose(cov[1, 1], cov_all[0, 0]) and np.isclose(cov[0, 1], cov_all[2, 0])
    inf = pdlt.NTKRegressor(net, steps=20, learning_rate=ETA).fit(X_A, Y)
    _, cov_inf = inf.predict(X_ALL, return_cov=True)
    n_cov = 16 * (cov_all - cov_inf)
    assert np.allclose(n_cov, trained_covariance_correction(net, X_A, Y, X_B, ETA, 20)[:, 0, :, 0])


def test_regressor_covariance_in_pairs(monkeypatch):
    """More test inputs than one block of the four-input statistics holds: the covariance is
    assembled from pairs of test inputs, A ∪ {β1, β2}, and equals the one-block result."""
    net = _net(16)
    X_T = np.array([[0.5, 0.1, 0.3, -0.2], [-0.3, 0.8, 0.1, 0.4], [0.2, 0.2, -0.6, 0.1]])
    reg = pdlt.NTKRegressor(net, steps=20, learning_rate=ETA, finite_width=True).fit(X_A, Y)
    mean, cov = reg.predict(X_T, return_cov=True)  # one block of 2 + 3 inputs
    monkeypatch.setattr(pdlt.theory.ntk, "MAX_FLUCTUATION_INPUTS", 4)  # blocks of 2 + 2
    mean_p, cov_p = reg.predict(X_T, return_cov=True)
    assert np.allclose(mean_p, mean, rtol=1e-12) and np.allclose(cov_p, cov, rtol=1e-12)


def test_steps_bad_input():
    net = _net(16)
    with pytest.raises(ValueError, match="steps=inf needs"):
        trained_covariance_correction(net, X_A, Y, X_B, 5.0, math.inf)  # ηλ_max > 2
    with pytest.raises(TypeError, match="steps"):
        trained_covariance_correction(net, X_A, Y, X_B, ETA, 2.5)
    with pytest.raises(ValueError, match="steps"):
        trained_covariance_correction(net, X_A, Y, X_B, ETA, -1)
    with pytest.raises(ValueError, match="steps=inf needs"):
        pdlt.NTKRegressor(net, steps=math.inf, learning_rate=5.0).fit(X_A, Y)


# --------------------------------------------------------------------------------------------
# real trained networks


def _jackknife(stat, pairs: np.ndarray, blocks: int = 40):
    """stat over all networks and its delete-a-block jackknife error; antithetic pairs
    (pairs, 2, ...) are kept together: the two networks of a pair are not independent."""
    full = stat(pairs.reshape(-1, *pairs.shape[2:]))
    reps = np.array(
        [
            stat(np.delete(pairs, i, axis=0).reshape(-1, *pairs.shape[2:]))
            for i in np.array_split(np.arange(pairs.shape[0]), blocks)
        ]
    )
    return full, np.sqrt((blocks - 1) / blocks * ((reps - reps.mean(0)) ** 2).sum(0))


def _measure(net: pdlt.MLP, steps: int, n_networks: int, eta: float = ETA, seed: int = 7):
    """n·(measured − infinite-width) covariance on X_ALL, raw and with the control variate
    L(t) z(0) (same networks; its exact covariance L G Lᵀ is subtracted in theory, so the
    comparison is n·(Cov[z(t)] − Cov[L z(0)]) against the theory less L K1 Lᵀ), each with its
    jackknife error, and the theory for both."""
    ens = pdlt.train_ensemble(
        net,
        X_A,
        Y,
        steps=steps,
        learning_rate=eta,
        n_networks=n_networks,
        seed=seed,
        X_test=X_ALL,
        antithetic=True,
        dtype="float64",
    )
    reg = pdlt.NTKRegressor(net, steps=steps, learning_rate=eta).fit(X_A, Y)
    Sigma = reg.predict(X_ALL, return_cov=True)[1]
    K, Th = output_kernels(net, X_ALL)
    U = np.eye(2) - eta * Th[:2, :2]
    L = np.eye(3)
    L[:, :2] -= Th[:, :2] @ np.linalg.solve(
        Th[:2, :2], np.eye(2) - np.linalg.matrix_power(U, steps)
    )
    zt, z0 = ens.predictions[-1][:, :, 0], ens.predictions[0][:, :, 0]
    pairs = np.concatenate([zt, z0 @ L.T], axis=1).reshape(n_networks // 2, 2, 6)
    raw, raw_se = _jackknife(lambda z: np.cov(z[:, :3], rowvar=False), pairs)
    cv, cv_se = _jackknife(
        lambda z: np.cov(z[:, :3], rowvar=False) - np.cov(z[:, 3:], rowvar=False), pairs
    )
    theory = trained_covariance_correction(net, X_A, Y, X_B, eta, steps)[:, 0, :, 0]
    K1 = pdlt.kernel_correction(net, X_ALL).K1[-1]
    n = net.widths[-2]
    return dict(
        raw=n * (raw - Sigma),
        raw_se=n * raw_se,
        cv=n * cv,
        cv_se=n * cv_se,
        theory=theory,
        theory_cv=theory - L @ K1 @ L.T,
    )


@pytest.mark.slow
def test_trained_covariance_after_twenty_steps_slow():
    """t = 20, widths 16, 32, 64, 40000 networks: the 1/n shift of the covariance is resolved
    (raw measurement at n = 16, e.g. the training variances n·ΔΣ = 0.17 ± 0.01 against
    0.22 predicted) and every entry agrees within 4 se + (ℓ/n)|prediction|; with the control
    variate (se ~ 0.005–0.01) e.g. at n = 64: (0.235, −0.038, 0.143, 0.184, 0.038, 0.109)
    against (0.228, −0.027, 0.150, 0.197, 0.050, 0.102)."""
    for width in (16, 32, 64):
        m = _measure(_net(width), 20, 40000)
        if width == 16:
            d = np.diag(m["raw"])[:2]
            assert (d > 4 * np.diag(m["raw_se"])[:2]).all()  # the 1/n term itself is seen
        for key, se in (("raw", "raw_se"), ("cv", "cv_se")):
            th = m["theory" if key == "raw" else "theory_cv"]
            bar = 4 * m[se] + DEPTH / width * np.abs(th)
            assert (np.abs(m[key] - th) <= bar).all(), (width, key, m[key], th, m[se])


@pytest.mark.slow
def test_trained_covariance_residual_falls_like_one_over_n_squared_slow():
    """t = 200 (ηλ_min t = 3.7), widths 32, 64, 128, 4000 networks. On the training inputs the
    kernel's variance is tiny (8e-5) and the finite-width variance is all correction, with a
    large O(1/n²) term (its coefficient grows like (ηλt)²): n·ΔΣ measured 0.050, 0.036, 0.030
    against 0.024. A fit n·ΔΣ = a + b/n gives the intercept a, the 1/n coefficient, within
    its error of the prediction, and n·(residual) halves with each doubling of n."""
    ns = np.array([32, 64, 128])
    ms = [_measure(_net(n), 200, 4000) for n in ns]
    for i, j in ((0, 0), (1, 1), (0, 1)):
        v = np.array([m["cv"][i, j] for m in ms])
        se = np.array([m["cv_se"][i, j] for m in ms])
        th = ms[0]["theory_cv"][i, j]  # width-independent
        resid = np.abs(v - th)
        assert resid[2] < resid[0] / 2.5, (i, j, v, th)
        Xf = np.stack([np.ones(3), 1.0 / ns], axis=1) / se[:, None]
        coef, *_ = np.linalg.lstsq(Xf, v / se, rcond=None)
        cov_coef = np.linalg.inv(Xf.T @ Xf)
        assert abs(coef[0] - th) <= 4 * math.sqrt(cov_coef[0, 0]), (i, j, coef, th)


@pytest.mark.slow
def test_trained_covariance_gelu_slow():
    """GELU (C_W = 1.9, C_b = 0.1, η = 0.019), widths 16 and 64, 40000 networks, control
    variate: at t = 5 and 20 every entry agrees at n = 64 within 4 se + (ℓ/n)|prediction|,
    and at t = 20 the training variances' residual (0.19, 0.15 at n = 16; 0.08, 0.07 at
    n = 64, against 0.42, 0.31) falls faster than 1/n, as an O(1/n²) residual must."""
    resid = {}
    for width in (16, 64):
        net = pdlt.MLP("gelu", DEPTH, width, 4, C_W=1.9, C_b=0.1)
        for steps in (5, 20):
            m = _measure(net, steps, 40000, eta=0.019)
            r = np.abs(m["cv"] - m["theory_cv"])
            if width == 64:
                bar = 4 * m["cv_se"] + DEPTH / width * np.abs(m["theory_cv"])
                assert (r <= bar).all(), (steps, m["cv"], m["theory_cv"], m["cv_se"])
            resid[width, steps] = np.diag(r)[:2]
    assert (resid[64, 20] < resid[16, 20] / 2).all(), resid


@pytest.mark.slow
def test_expansion_against_the_truncated_dynamics_slow():
    """The algebra alone (time sums, Gaussian integration by parts, the closed form at t = ∞),
    independent of the mean's hand-made accumulators: random synthetic statistics (Θ, Θ1, K,
    K1, a Gaussian NTK fluctuation of covariance ε·HH, a dNTK linear in z(0), ddNTK means),
    the step map of the module doc simulated exactly on 2 × 20000 samples (antithetic in the
    NTK noise) at ε = 1e-4 and ε = 0 with common random numbers: (moment_ε − moment_0)/ε must
    match the O(ε) mean and covariance within the sampling error (a few per mille here).
    (The third cumulant D, F is left out — its heavy tails need far more samples — and is
    checked exactly by the one-step test.)"""
    from pdlt.theory.trained import _covariance, _flat_statistics

    e4 = np.einsum
    rng = np.random.default_rng(3)

    def spd(k, s):
        a = rng.normal(size=(k, k))
        return s * (a @ a.T / k + 0.5 * np.eye(k))

    K, Theta, y = spd(3, 0.6), spd(3, 1.5), np.array([1.0, -0.8])
    Theta1 = rng.normal(size=(3, 3))
    K1 = rng.normal(size=(3, 3))
    K1 = K1 + K1.T
    Cxi = spd(6, 1.0)  # covariance of the NTK noise ξ_{pa}, p ∈ D, a ∈ A
    Gt = 0.5 * rng.normal(size=(3, 3, 2, 3))  # dĤ_{pqb} = ε Σ_u Gt_{pqbu} z_u
    ddI = rng.normal(size=(3, 3, 3, 3))
    perms = [(1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]
    ddI = sum(np.transpose(ddI, (0, *p)) for p in perms) / 6
    ddII = rng.normal(size=(3, 3, 3, 3))
    HH = np.zeros((3,) * 4)
    HH[:, :2, :, :2] = Cxi.reshape(3, 2, 3, 2)
    dz = np.zeros((3,) * 4)
    dz[:, :, :2, :] = e4("pqbu,ur->pqbr", Gt, K)
    st = _flat_statistics(
        np.arange(2), Theta=Theta, Theta1=Theta1, K=K, K1=K1, HH=HH,
        DF=np.zeros((3,) * 4), dz=dz, ddI=ddI, ddII=ddII,
    )  # fmt: skip
    Lc = e4("pruq->pqru", ddI) + e4("qrup->pqru", ddI) + 2 * ddII
    Dc = e4("puqr->pqru", ddI) + ddII + e4("prqu->pqru", ddII)
    eta, N = 0.1, 20000
    g0, x0 = rng.normal(size=(N, 3)), rng.normal(size=(N, 6))
    g0, x0 = np.concatenate([g0, g0]), np.concatenate([x0, -x0])

    def simulate(eps, steps):
        w = g0 @ np.linalg.cholesky(K + eps * K1).T
        xi = (x0 @ np.linalg.cholesky(Cxi).T).reshape(-1, 3, 2)
        H = Theta[None, :, :2] + np.sqrt(eps) * xi + eps * Theta1[None, :, :2]
        dH = eps * e4("pqbu,nu->npqb", Gt, w)
        z = w.copy()
        for _ in range(steps):
            e = z[:, :2] - y
            z = (
                z
                - eta * e4("npa,na->np", H, e)
                + 0.5 * eta**2 * e4("npab,na,nb->np", dH[:, :, :2], e, e)
                - eta**3 / 6 * eps * e4("pabc,na,nb,nc->np", ddI[:, :2, :2, :2], e, e, e)
            )
            H = (
                H
                - eta * e4("npab,nb->npa", dH[:, :, :2] + dH[:, :2].swapaxes(1, 2), e)
                + 0.5 * eta**2 * eps * e4("pabc,nb,nc->npa", Lc[:, :2, :2, :2], e, e)
            )
            dH = dH - eta * eps * e4("pqbu,nu->npqb", Dc[:, :, :2, :2], e)
        return z

    eps = 1e-4
    for steps, run in ((20, 20), (math.inf, 300)):
        c, cov = _covariance(st, -y, eta, steps)
        z1, z0 = simulate(eps, run), simulate(0.0, run)
        # antithetic partners are rows n and n + N: keep them together in the error estimate
        pairs = np.stack([z1, z0], axis=1).reshape(2, N, 2, 3).swapaxes(0, 1)
        moments = _jackknife(
            lambda z: np.concatenate(
                [
                    (z[:, 0].mean(0) - z[:, 1].mean(0))[None] / eps,
                    (np.cov(z[:, 0], rowvar=False) - np.cov(z[:, 1], rowvar=False)) / eps,
                ]
            ),
            pairs,
        )
        (mc, se), th = moments, np.concatenate([c[None], cov])
        assert (np.abs(mc - th) <= 4 * se + 1e-3 * np.abs(th).max()).all(), (steps, mc, th, se)
