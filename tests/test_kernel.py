"""The infinite-width kernel recursion against exact and reference results."""

import math

import numpy as np
import pytest

import pdlt


def test_deep_linear_kernel_is_exact_geometric_sum():
    # σ = z: K^(ℓ+1) = C_b + C_W K^(ℓ) (theory note 01, §5), for every input pair.
    x = np.random.default_rng(0).normal(size=(4, 5))
    net = pdlt.MLP("linear", depth=7, width=10, input_dim=5, C_b=0.3, C_W=0.8)
    K = pdlt.kernel(net, x).K
    expected = 0.3 + 0.8 * x @ x.T / 5
    for ell in range(7):
        np.testing.assert_allclose(K[ell], expected, rtol=1e-13)
        expected = 0.3 + 0.8 * expected


def test_per_layer_hyperparameters_are_used_layer_by_layer():
    x = np.ones((1, 2))
    net = pdlt.MLP(
        "linear", depth=3, width=4, input_dim=2, C_b=[0.0, 1.0, 2.0], C_W=[1.0, 2.0, 3.0]
    )
    K = pdlt.kernel(net, x).K[:, 0, 0]
    np.testing.assert_allclose(K, [1.0, 1.0 + 2.0 * 1.0, 2.0 + 3.0 * 3.0])


def test_relu_angle_map_matches_reference_table():
    # Theory note 01, §10 F: ReLU at C_W = 2 with orthogonal inputs, ψ^(1) = π/2.
    x = np.eye(2) * math.sqrt(2)
    net = pdlt.MLP("relu", depth=10, width=8, input_dim=2, C_W=2.0)
    K = pdlt.kernel(net, x).K
    psi = np.arccos(K[:, 0, 1] / np.sqrt(K[:, 0, 0] * K[:, 1, 1]))
    np.testing.assert_allclose(np.diag(K[-1]), [2.0, 2.0], rtol=1e-13)  # diagonal preserved
    ref = {2: 1.2468502199, 3: 1.0544212640, 5: 0.8217324188, 10: 0.5456131971}
    for ell, value in ref.items():
        assert psi[ell - 1] == pytest.approx(value, abs=1e-9)


def test_tanh_kernel_matches_reference_tables():
    # Theory note 01, §10 A (single input) and G (two inputs), tanh C_b = 0, C_W = 1, K^(1) = 1.
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]]) * math.sqrt(2)
    net = pdlt.MLP("tanh", depth=100, width=8, input_dim=2, C_W=1.0)
    K = pdlt.kernel(net, x).K
    table_a = {
        2: 0.3942944904,
        3: 0.2364504105,
        5: 0.1279047353,
        10: 0.0580118478,
        100: 0.0051207157,
    }
    for ell, value in table_a.items():
        assert K[ell - 1, 0, 0] == pytest.approx(value, abs=1e-10)
    for ell, value in {2: 0.1863244132, 3: 0.1092720809, 5: 0.0579979071}.items():
        assert K[ell - 1, 0, 1] == pytest.approx(value, abs=1e-10)


def test_sin_second_layer_closed_form():
    net = pdlt.MLP("sin", depth=2, width=8, input_dim=1, C_W=1.0)
    K = pdlt.kernel(net, np.array([[1.0]])).K
    assert K[1, 0, 0] == pytest.approx((1 - math.exp(-2)) / 2, rel=1e-13)


def test_user_callable_kernel_equals_builtin():
    import torch

    x = np.random.default_rng(1).normal(size=(3, 2))
    builtin = pdlt.MLP("tanh", depth=4, width=8, input_dim=2, C_b=0.1, C_W=1.5)
    user = builtin.with_(activation=lambda z: torch.tanh(z))
    np.testing.assert_allclose(pdlt.kernel(user, x).K, pdlt.kernel(builtin, x).K, rtol=1e-12)


def test_kernel_result_is_float64_and_tabulates():
    net = pdlt.MLP("gelu", depth=3, width=8, input_dim=2)
    th = pdlt.kernel(net, np.eye(2))
    assert th.K.dtype == np.float64 and th.K.shape == (3, 2, 2)
    frame = th.to_frame()
    assert list(frame.columns) == ["layer", "a", "b", "K"] and len(frame) == 3 * 3
