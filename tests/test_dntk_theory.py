"""The dNTK statistics P, Q and the 1/n NTK mean correction Θ1 (book ch. 11, eq. 9.3): reference
values, and real networks at two widths (multi-input; smooth and kinked σ; off-critical).

Bars: 4 standard errors from the ensemble plus the neglected order. Layer 2 is exact at O(1/n_1)
(its statistics are local terms, book §11.3), so it gets the statistical bar alone; deeper layers
carry O(1/n) relative corrections of n·E[…], growing like ℓ/n (02-ntk.md §7: ReLU V at ℓ = 5,
n = 32 is 30 % high), so the bar adds (ℓ/n)·scale with scale = max(|P|, |Q|) of the layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdlt

X1 = np.ones((1, 4))
X2 = np.array([[1.0, 0.3, -0.5, 0.2], [0.1, 1.1, 0.4, -0.6]]) * 1.2


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_single_input_reference_values():
    """02-ntk.md §8.1–8.3 (an independent single-input code): tanh C_W = 1 and ReLU C_W = 2,
    λ_b = λ_W = 1, |x|²/n_0 = 1, to the tables' 6 digits."""
    d = pdlt.dntk(pdlt.MLP("tanh", 10, 100, 4, C_W=1.0), X1)
    ell = [1, 2, 3, 4, 9]
    np.testing.assert_allclose(
        d.P[ell, 0, 0, 0, 0], [-0.382742, -0.925218, -1.675787, -2.695196, -13.611857], atol=2e-6
    )
    np.testing.assert_allclose(
        d.Q[ell, 0, 0, 0, 0], [-0.232640, -0.520669, -0.968387, -1.627573, -9.751632], atol=2e-6
    )
    assert np.all(d.P[0] == 0) and np.all(d.Q[0] == 0)
    c = pdlt.ntk_correction(pdlt.MLP("tanh", 10, 100, 4, C_W=1.0), X1)
    np.testing.assert_allclose(
        c.Theta1[[0, 1, 2, 3, 4, 9], 0, 0],
        [0, 0, 0.003773, 0.026621, 0.072117, 0.682529],
        atol=2e-6,
    )
    c = pdlt.ntk_correction(pdlt.MLP("tanh", 6, 100, 4, C_W=1.0, lambda_b=0.0), X1)
    np.testing.assert_allclose(
        c.Theta1[:, 0, 0], [0, 0, -0.0519, -0.1227, -0.2046, -0.2940], atol=6e-5
    )
    relu = pdlt.dntk(pdlt.MLP("relu", 10, 100, 4, C_W=2.0), X1)
    np.testing.assert_allclose(relu.Q[ell, 0, 0, 0, 0], [4, 16, 40, 80, 660], rtol=1e-10)
    assert np.abs(relu.P).max() == 0.0  # explicit σ'' = 0
    # ReLU: E[Ĥ] = Θ exactly (sign-flip symmetry, 02-ntk.md §3.5)
    c = pdlt.ntk_correction(pdlt.MLP("relu", 6, 100, 4, C_W=2.0), X1)
    assert np.abs(c.Theta1).max() < 1e-9 * np.abs(c.Theta).max()


def _check_layers(th, ms, width, names):
    for s in names:
        T, M, E = getattr(th, s), getattr(ms, s), getattr(ms, s + "_err")
        for ell in range(1, T.shape[0]):
            scale = max(np.abs(th.P[ell]).max(), np.abs(th.Q[ell]).max())
            allowance = 0.0 if ell == 1 else (ell + 1) / width * scale
            bar = 4 * E[ell] + allowance
            dev = np.abs(M[ell] - T[ell])
            assert (dev <= bar).all(), (s, ell + 1, width, float((dev - bar).max()))


@pytest.mark.parametrize("act, C_W, C_b", [("tanh", 1.5, 0.2), ("relu", 2.0, 0.1)])
def test_multi_input_P_Q_match_real_networks(act, C_W, C_b):
    """Two inputs, depth 3, widths 16 and 32, 1200 networks each (float64): every entry of P and
    Q at layers 2 (exact) and 3 (ℓ/n allowance) against n_{ℓ−1}·E[dĤ z] of real networks."""
    for width in (16, 32):
        net = pdlt.MLP(act, 3, width, 4, output_dim=4, C_W=C_W, C_b=C_b)
        th = pdlt.dntk(net, X2)
        ms = pdlt.measure(net, X2, 1200, seed=width, statistics=("dntk",), dtype="float64")
        _check_layers(th, ms, width, ("P", "Q"))
        table = pdlt.compare(th, ms)
        assert set(table.statistic) == {"P", "Q"}


def test_ntk_mean_correction_resolved_by_real_networks():
    """Θ1 for tanh with λ_b = 0 (02-ntk.md §8.3: Θ1 = −0.294 at ℓ = 6) at widths 8 and 16: the
    measured n(E[Ĥ] − Θ) agrees within 4 se + (ℓ/n)|Θ1| and is resolved from zero at ℓ = 6."""
    for width in (8, 16):
        net = pdlt.MLP("tanh", 6, width, 4, output_dim=8, C_W=1.0, lambda_b=0.0)
        th = pdlt.ntk_correction(net, X1)
        ms = pdlt.measure(net, X1, 4000, seed=width, statistics=("Theta1",), dtype="float64")
        ell = np.arange(1, 7)
        bar = 4 * ms.Theta1_err[:, 0, 0] + ell / width * np.abs(th.Theta1[:, 0, 0])
        assert (np.abs(ms.Theta1[:, 0, 0] - th.Theta1[:, 0, 0]) <= bar).all()
        assert abs(ms.Theta1[-1, 0, 0]) > 4 * ms.Theta1_err[-1, 0, 0]


def test_first_step_ntk_change_vanishes_like_one_over_n():
    """Representation learning in one step: the mean NTK change E[Ĥ(1) − Ĥ(0)] of real tanh
    networks after one full-batch GD step (η = 0.02, MSE) against −(η/n)Σ(P + n_L Q + Q) (book
    §11.1), at widths 16 and 32; the prediction halves with the width and so does the
    measurement. Bar: 4 se + (ℓ/n)·|prediction| (the O(1/n²) and O(η²) terms)."""
    y = np.array([[0.5, -0.3], [-0.4, 0.6]])
    measured = {}
    for width in (16, 32):
        net = pdlt.MLP("tanh", 3, width, 4, output_dim=2, C_W=1.5, C_b=0.2)
        pred = pdlt.dntk(net, X2).ntk_change(0.02)
        ens = pdlt.train_ensemble(
            net,
            X2,
            y,
            steps=1,
            learning_rate=0.02,
            n_networks=3000,
            seed=1,
            record_ntk=True,
            dtype="float64",
        )
        mean, err = ens.ntk_change()
        assert (np.abs(mean - pred) <= 4 * err + 3 / width * np.abs(pred)).all()
        assert (np.abs(mean) > 4 * err).all()  # the NTK does move
        measured[width] = mean
    ratio = measured[16] / measured[32]
    assert np.all((ratio > 1.5) & (ratio < 2.5))


@pytest.mark.slow
@pytest.mark.parametrize(
    "act, C_W, C_b", [("tanh", 1.0, 0.0), ("gelu", 1.9, 0.2), ("elu", 1.2, 0.1)]
)
def test_three_inputs_deeper_slow(act, C_W, C_b):
    """Three inputs, depth 4, widths 16 and 32, 2500 networks: P, Q at layers 2–4."""
    x = np.array([[1.0, 0.3, -0.5, 0.2], [0.1, 1.1, 0.4, -0.6], [-0.4, 0.2, 1.0, 0.5]]) * 1.2
    for width in (16, 32):
        net = pdlt.MLP(act, 4, width, 4, output_dim=4, C_W=C_W, C_b=C_b)
        th = pdlt.dntk(net, x)
        ms = pdlt.measure(net, x, 2500, seed=width + 7, statistics=("dntk",), dtype="float64")
        _check_layers(th, ms, width, ("P", "Q"))
