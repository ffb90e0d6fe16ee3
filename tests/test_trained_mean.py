"""The trained ensemble's mean at O(1/n) (book §∞.2.2): NTKRegressor(finite_width=True)
against real networks trained by full-batch GD (antithetic pairs, float64)."""

import numpy as np
import pytest

import pdlt

X_A = np.array([[1.0, 0.4, -0.3, 0.2], [0.2, -0.9, 0.5, 0.6]])
X_B = np.array([[0.5, 0.1, 0.3, -0.2]])
X_ALL = np.concatenate([X_A, X_B])
Y = np.array([1.0, -0.8])
ETA = 0.02
DEPTH = 3


def _net(width: int) -> pdlt.MLP:
    return pdlt.MLP("tanh", DEPTH, width, 4, C_W=1.5, C_b=0.2)


def _compare(width: int, steps: int, n_networks: int):
    """(measured mean, its se, infinite-width prediction, 1/n prediction) on X_ALL."""
    net = _net(width)
    kw = dict(learning_rate=ETA, steps=steps)
    m_inf = pdlt.NTKRegressor(net, **kw).fit(X_A, Y).predict(X_ALL)
    m_fw = pdlt.NTKRegressor(net, finite_width=True, **kw).fit(X_A, Y).predict(X_ALL)
    ens = pdlt.train_ensemble(
        net,
        X_A,
        Y,
        steps=steps,
        n_networks=n_networks,
        seed=5,
        X_test=X_ALL,
        antithetic=True,
        dtype="float64",
        learning_rate=ETA,
    )
    mean, err = ens.mean()
    return mean[:, 0], err[:, 0], m_inf, m_fw


def test_trained_mean_one_over_n_after_twenty_steps():
    """t = 20: at widths 16 and 32 the measured mean differs from the kernel prediction by
    many se, and the 1/n prediction accounts for it within 4 se + (ℓ/n)|correction|."""
    for width in (16, 32):
        mean, err, m_inf, m_fw = _compare(width, 20, 4000)
        assert (np.abs(mean - m_inf)[:2] > 4 * err[:2]).all()  # the 1/n shift is resolved
        bar = 4 * err + DEPTH / width * np.abs(m_fw - m_inf)
        assert (np.abs(mean - m_fw) <= bar).all(), (width, mean, m_fw, err)


def test_finite_width_regressor_bad_input():
    net = _net(16)
    with pytest.raises(ValueError, match="needs steps"):
        pdlt.NTKRegressor(net, finite_width=True).fit(X_A, Y)
    with pytest.raises(ValueError, match="needs a network"):
        pdlt.NTKRegressor(None, finite_width=True, steps=3).fit(X_A, Y)
    pdlt.NTKRegressor(net, finite_width=True, steps=3, learning_rate=ETA).fit(X_A, Y)
    seven = np.random.default_rng(0).normal(size=(9, 4))
    big = pdlt.NTKRegressor(net, finite_width=True, steps=3, learning_rate=ETA)
    big.fit(seven[:7], np.zeros(7))  # 7 + a pair of test inputs > 8 four-input slots
    with pytest.raises(ValueError, match="return_cov"):
        big.predict(seven[7:], return_cov=True)
    m0 = pdlt.NTKRegressor(net, steps=0, learning_rate=ETA, finite_width=True).fit(X_A, Y)
    assert np.allclose(m0.predict(X_ALL), 0.0)  # nothing trained: E[z] = 0 exactly


@pytest.mark.slow
def test_trained_mean_residual_falls_like_one_over_n_squared_slow():
    """t = 200 (ηλ_min t = 3.7) at widths 16, 32, 64: agreement within 4 se + (ℓ/n)|1/n
    correction|, and on the training inputs (best measured) the residual after the 1/n term
    falls faster than the 1/n term itself (measured 0.155, 0.062, 0.013 in units of 1/n)."""
    resid = {}
    for width in (16, 32, 64):
        mean, err, m_inf, m_fw = _compare(width, 200, 4000)
        bar = 4 * err + DEPTH / width * np.abs(m_fw - m_inf)
        assert (np.abs(mean - m_fw) <= bar).all(), (width, mean, m_fw, err)
        resid[width] = width * np.abs(mean - m_fw)[:2]  # n × residual: should fall like 1/n
    assert (resid[64] < resid[16] / 2).all()


def test_trained_mean_gelu_after_twenty_steps():
    """GELU (C_W = 1.9, C_b = 0.1), t = 20, η = 0.019, widths 16 and 32: measured
    n·(mean − kernel prediction) (−1.09, 0.93, −0.35) and (−1.22, 1.00, −0.35) against the
    prediction (−1.24, 1.09, −0.40) — within 4 se + (ℓ/n)|correction|."""
    for width in (16, 32):
        net = pdlt.MLP("gelu", DEPTH, width, 4, C_W=1.9, C_b=0.1)
        kw = dict(learning_rate=0.019, steps=20)
        m_inf = pdlt.NTKRegressor(net, **kw).fit(X_A, Y).predict(X_ALL)
        m_fw = pdlt.NTKRegressor(net, finite_width=True, **kw).fit(X_A, Y).predict(X_ALL)
        ens = pdlt.train_ensemble(
            net,
            X_A,
            Y,
            steps=20,
            learning_rate=0.019,
            n_networks=4000,
            seed=5,
            X_test=X_ALL,
            antithetic=True,
            dtype="float64",
        )
        mean, err = ens.mean()
        mean, err = mean[:, 0], err[:, 0]
        assert (np.abs(mean - m_inf) > 4 * err).all()
        bar = 4 * err + DEPTH / width * np.abs(m_fw - m_inf)
        assert (np.abs(mean - m_fw) <= bar).all(), (width, mean, m_fw, err)


@pytest.mark.slow
def test_trained_mean_two_outputs_two_test_inputs_slow():
    """n_L = 2 (outputs wired together at finite width), two test inputs, t = 50, widths 16
    and 32: within 4 se + (ℓ/n)|correction| for every input and output (measured at n = 32
    e.g. n·Δ = −1.08 ± 0.06 against −1.20 on the first training input)."""
    y = np.array([[1.0, 0.3], [-0.8, 0.5]])
    x_all = np.concatenate([X_ALL, [[-0.3, 0.8, 0.1, 0.4]]])
    for width in (16, 32):
        net = pdlt.MLP("tanh", DEPTH, width, 4, output_dim=2, C_W=1.5, C_b=0.2)
        kw = dict(learning_rate=ETA, steps=50)
        m_inf = pdlt.NTKRegressor(net, **kw).fit(X_A, y).predict(x_all)
        m_fw = pdlt.NTKRegressor(net, finite_width=True, **kw).fit(X_A, y).predict(x_all)
        ens = pdlt.train_ensemble(
            net,
            X_A,
            y,
            steps=50,
            learning_rate=ETA,
            n_networks=4000,
            seed=5,
            X_test=x_all,
            antithetic=True,
            dtype="float64",
        )
        mean, err = ens.mean()
        bar = 4 * err + DEPTH / width * np.abs(m_fw - m_inf)
        assert (np.abs(mean - m_fw) <= bar).all(), (width, mean, m_fw, err)
