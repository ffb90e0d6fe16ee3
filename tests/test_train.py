"""Trained ensembles: the batched program against plain torch training, the kernel prediction
(book ch. 10) as the infinite-width limit of real trained networks, divergence and bad input."""

import math

import numpy as np
import pytest
import torch

import pdlt
from pdlt.experiment.ensemble import forward_chunks
from pdlt.experiment.train import train_ensemble, train_ensembles
from pdlt.theory.learning import NTKRegressor, output_kernels

RNG = np.random.default_rng(1)


def _sphere(n, d):
    x = RNG.normal(size=(n, d))
    return x * math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


X_A, X_B = _sphere(4, 3), _sphere(3, 3)
Y_A = np.sin(X_A @ np.array([1.0, -0.5, 0.3]))


def _torch_reference(net, X, y, steps, eta, seed, loss="mse"):
    """Independent route: the same two initial networks (drawn by forward_chunks with the same
    seed) as nn.Linear modules, trained by torch.optim.SGD with one parameter group per tensor at
    the book's rates η λ_b and η λ_W / n_{ℓ−1}."""
    x = torch.as_tensor(X, dtype=torch.float64)
    (chunk,) = forward_chunks(net, x, 2, seed, dtype=torch.float64)
    outs = []
    for k in range(2):
        layers, groups = [], []
        for ell in range(net.depth):
            lin = torch.nn.Linear(net.widths[ell], net.widths[ell + 1], dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(chunk.W[ell][k])
                lin.bias.copy_(chunk.b[ell][k, :, 0])
            layers.append(lin)
            groups.append({"params": [lin.weight], "lr": eta * net.lambda_W[ell] / net.widths[ell]})
            groups.append({"params": [lin.bias], "lr": eta * net.lambda_b[ell]})
        opt = torch.optim.SGD(groups)
        target = torch.as_tensor(y, dtype=torch.float64).reshape(len(X), -1)
        for _ in range(steps):
            h = x
            for ell, lin in enumerate(layers):
                h = lin(h)
                if ell < net.depth - 1:
                    h = net.activation(h)
            if loss == "mse":
                L = 0.5 * ((h - target) ** 2).sum()
            else:
                L = -(target * torch.log_softmax(h, dim=1)).sum()
            opt.zero_grad()
            L.backward()
            opt.step()
        with torch.no_grad():
            h = x
            for ell, lin in enumerate(layers):
                h = lin(h)
                if ell < net.depth - 1:
                    h = net.activation(h)
        outs.append(h.numpy())
    return np.stack(outs)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_batched_training_equals_torch_sgd_with_book_rates(activation):
    net = pdlt.MLP(
        activation, depth=3, width=12, input_dim=3, C_W=1.5, C_b=0.1, lambda_b=0.7, lambda_W=1.3
    )
    ens = train_ensemble(
        net, X_A, Y_A, steps=5, learning_rate=0.05, n_networks=2, seed=3, dtype="float64"
    )
    ref = _torch_reference(net, X_A, Y_A, 5, 0.05, 3)
    # Same float64 arithmetic in a different order: agreement to ~1e-13.
    np.testing.assert_allclose(ens.predictions[-1], ref, rtol=1e-10, atol=1e-12)


def test_cross_entropy_training_equals_torch_and_learns():
    X = _sphere(12, 3)
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    Y = np.eye(3)[labels]
    net = pdlt.MLP("tanh", depth=3, width=16, input_dim=3, output_dim=3, C_W=1.0)
    ens = train_ensemble(
        net,
        X,
        Y,
        steps=4,
        learning_rate=0.1,
        loss="cross_entropy",
        n_networks=2,
        seed=0,
        dtype="float64",
    )
    ref = _torch_reference(net, X, Y, 4, 0.1, 0, loss="cross_entropy")
    np.testing.assert_allclose(ens.predictions[-1], ref, rtol=1e-10, atol=1e-12)
    long = train_ensemble(
        net, X, Y, steps=100, learning_rate=0.3, loss="cross_entropy", n_networks=8, seed=0
    )
    frame = long.to_frame()
    assert frame.loss_mean.iloc[-1] < 0.5 * frame.loss_mean.iloc[0]
    assert frame.accuracy_mean.iloc[-1] > 0.9  # 12 points, 3 classes: fitted


def test_same_seed_same_networks_any_chunking():
    net = pdlt.MLP("tanh", depth=3, width=8, input_dim=3)
    a = train_ensemble(
        net, X_A, Y_A, steps=3, learning_rate=0.1, n_networks=20, seed=5, record_steps=[0, 1, 3]
    )
    b = train_ensemble(
        net,
        X_A,
        Y_A,
        steps=3,
        learning_rate=0.1,
        n_networks=20,
        seed=5,
        record_steps=[0, 1, 3],
        max_memory=2**20,
    )
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert list(a.steps) == [0, 1, 3]
    # step 0 is the untrained network that measure() samples with the same seed
    (chunk,) = forward_chunks(net, torch.as_tensor(X_A), 20, 5)
    np.testing.assert_allclose(a.predictions[0][..., 0], chunk.z[-1][:, 0, :].numpy(), rtol=1e-6)


def test_specs_batched_together_equal_one_spec_at_a_time():
    # train_ensembles trains specs that differ in C_W, C_b as one batch (spec × network); each
    # ensemble must be train_ensemble's for that spec: the same networks, the same updates.
    base = pdlt.MLP("tanh", depth=3, width=8, input_dim=3, lambda_W=0.8)
    nets = [base.with_(C_W=c, C_b=b) for c, b in ((0.7, 0.0), (1.6, 0.2), (3.0, 0.05))]
    kw = dict(
        steps=6, learning_rate=0.1, n_networks=6, seed=4, X_test=X_B[::-1], record_steps=[0, 2, 6],
        antithetic=True, dtype="float64", record_ntk=True,
    )  # fmt: skip
    batched = train_ensembles(nets, X_A, Y_A, **kw)
    assert len(batched) == 3
    for net, ens in zip(nets, batched, strict=True):
        ref = train_ensemble(net, X_A, Y_A, **kw)
        assert ens.net == net
        np.testing.assert_allclose(ens.predictions, ref.predictions, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ens.train_loss, ref.train_loss, rtol=1e-12)
        np.testing.assert_allclose(ens.ntk, ref.ntk, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(ens.diverged, ref.diverged)
    # a spec that diverges is flagged alone; its neighbours in the batch train on
    hot = [base.with_(C_W=1.0), base.with_(C_W=40.0)]
    with pytest.warns(RuntimeWarning, match="diverged"):
        cold, burnt = train_ensembles(
            [h.with_(activation="relu") for h in hot], X_A, 100 * Y_A, steps=60,
            learning_rate=0.5, n_networks=4, seed=0,
        )  # fmt: skip
    assert burnt.diverged.all() and not cold.diverged.any()
    with pytest.raises(ValueError, match="differ only in C_W and C_b"):
        train_ensembles([base, base.with_(width=9)], X_A, Y_A, steps=1, learning_rate=0.1)
    with pytest.raises(TypeError, match="sequence of pdlt.MLP"):
        train_ensembles(base, X_A, Y_A, steps=1, learning_rate=0.1)


def test_divergence_is_flagged_not_silent():
    net = pdlt.MLP("relu", depth=3, width=16, input_dim=3, C_W=2.0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        ens = train_ensemble(net, X_A, 100 * Y_A, steps=60, learning_rate=5.0, n_networks=4, seed=0)
    assert ens.diverged.all()
    assert np.isnan(ens.predictions[-1]).all()
    with pytest.raises(ValueError, match="fewer than 2"):
        ens.mean()


def test_bad_input():
    net = pdlt.MLP("tanh", depth=2, width=8, input_dim=3)
    kw = dict(steps=2, learning_rate=0.1, n_networks=4)
    with pytest.raises(ValueError, match="rows like X"):
        train_ensemble(net, X_A, Y_A[:-1], **kw)
    y = Y_A.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_ensemble(net, X_A, y, **kw)
    with pytest.raises(ValueError, match="input_dim"):
        train_ensemble(net, X_A[:, :2], Y_A, **kw)
    with pytest.raises(ValueError, match="steps"):
        train_ensemble(net, X_A, Y_A, steps=-1, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        train_ensemble(net, X_A, Y_A, steps=2, learning_rate=0.0)
    with pytest.raises(ValueError, match="loss"):
        train_ensemble(net, X_A, Y_A, loss="hinge", **kw)
    with pytest.raises(ValueError, match="probabilities"):
        train_ensemble(net.with_(output_dim=2), X_A, np.ones((4, 2)), loss="cross_entropy", **kw)
    with pytest.raises(ValueError, match="output_dim"):
        train_ensemble(net, X_A, np.ones((4, 2)), **kw)
    with pytest.raises(ValueError, match="record_steps"):
        train_ensemble(net, X_A, Y_A, record_steps=[5], **kw)
    with pytest.raises(ValueError, match="even"):
        train_ensemble(net, X_A, Y_A, steps=2, learning_rate=0.1, n_networks=5, antithetic=True)


# --------------------------------------------------------------------------------------------
# Monte Carlo: trained ensembles → the kernel prediction, with a 1/n approach


def _ntk_vs_trained(widths, n_networks, steps):
    """Trained tanh ensembles at criticality (C_W = 1, C_b = 0) against NTKRegressor at the same
    η and number of steps (the kernel prediction is exact at any t at infinite width, §10.2)."""
    base = pdlt.MLP("tanh", depth=3, width=widths[0], input_dim=3, C_W=1.0, C_b=0.0)
    _, Theta = output_kernels(base, X_A)
    eta = 1.0 / np.linalg.eigvalsh(Theta).max()
    model = NTKRegressor(base, learning_rate=eta, steps=steps).fit(X_A, Y_A)
    m_inf, cov = model.predict(X_B, return_cov=True)
    rows = []
    for j, w in enumerate(widths):
        ens = train_ensemble(
            base.with_(width=w), X_A, Y_A, steps=steps, learning_rate=eta,
            n_networks=n_networks, seed=100 + j, X_test=X_B, antithetic=True,
        )  # fmt: skip
        mean, mean_err = ens.mean()
        var, var_err = ens.variance()
        rows.append((w, mean[:, 0] - m_inf, mean_err[:, 0], var[:, 0], var_err[:, 0]))
    return m_inf, np.diag(cov), rows


def _check_one_over_n(m_inf, var_inf, rows, depth=3):
    widths = np.array([r[0] for r in rows], dtype=float)
    d = np.stack([r[1] for r in rows])  # (widths, test points): mean − m^∞
    se = np.stack([r[2] for r in rows])
    # Fit d(n) = a/n per test point by weighted least squares (no constant: the theory is the
    # n → ∞ limit). A wrong m^∞ would leave a width-independent offset that a/n cannot absorb.
    wts = 1 / se**2
    a = (wts * d / widths[:, None]).sum(0) / (wts / widths[:, None] ** 2).sum(0)
    fit = a / widths[:, None]
    # Allowance: 4 standard errors plus the neglected O(1/n²), sized as (L/n)·|a/n| (the next
    # order carries one more factor of the expansion parameter L/n, book §5.4).
    allowed = 4 * se + depth / widths[:, None] * np.abs(fit)
    assert np.all(np.abs(d - fit) <= allowed), (widths, d, fit, se)
    # The deviation really is a finite-width effect: it is resolved at the smallest width and
    # shrinks with n (|d| at the largest width is below half the smallest width's).
    assert np.all(np.abs(d[0]) > 4 * se[0]), (d[0], se[0])
    assert np.all(np.abs(d[-1]) < 0.5 * np.abs(d[0]) + 4 * se[-1])
    # Variance: Σ(t) within 4 standard errors plus the size of the O(L/n) correction.
    for w, _, _, var, var_err in rows:
        assert np.all(np.abs(var - var_inf) <= 4 * var_err + depth / w * var_inf), (w, var, var_inf)


def test_trained_ensembles_approach_kernel_prediction():
    # Small default: widths 16/32/64, 1200 antithetic networks, 30 GD steps (~12 s on 2 cores).
    m_inf, var_inf, rows = _ntk_vs_trained((16, 32, 64), 1200, 30)
    _check_one_over_n(m_inf, var_inf, rows)


@pytest.mark.slow
def test_trained_ensembles_approach_kernel_prediction_large():
    # Measured (issue-7 notes): |mean − m^∞| ≈ 0.064, 0.033, 0.021, 0.010 at n = 16…128 (≈ 1/n).
    m_inf, var_inf, rows = _ntk_vs_trained((16, 32, 64, 128), 2000, 100)
    _check_one_over_n(m_inf, var_inf, rows)
