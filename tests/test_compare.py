"""compare refuses to pair a theory and a measurement of different networks or inputs (issue 15,
item 12)."""

import numpy as np
import pytest
import torch

import pdlt

X = np.array([[1.0, 0.2, -0.3], [0.4, -0.8, 0.5]])
NET = pdlt.MLP("tanh", depth=3, width=8, input_dim=3, C_W=1.2, C_b=0.05)


@pytest.fixture(scope="module")
def ms():
    return pdlt.measure(NET, X, n_networks=8, seed=0)


def test_matching_pair_and_width_free_kernel(ms):
    assert (
        len(pdlt.compare(pdlt.kernel(NET, X), ms)) == 3 * 3
    )  # 3 layers × the pairs (0,0), (0,1), (1,1)
    # K's leading order does not depend on the widths: any width may be measured against it
    wide = pdlt.measure(NET.with_(width=16), X, n_networks=8, seed=0)
    assert len(pdlt.compare(pdlt.kernel(NET, X), wide)) == 9
    # nor on the output width or on the learning rates
    assert len(pdlt.compare(pdlt.kernel(NET.with_(output_dim=3, lambda_W=2.0), X), ms)) == 9


@pytest.mark.parametrize(
    "change, what",
    [
        ({"C_W": 1.3}, "C_W"),
        ({"C_b": 0.0}, "C_b"),
        ({"activation": "sin"}, "activation"),
        ({"depth": 2}, "depth"),
    ],
)
def test_different_network_is_refused(ms, change, what):
    with pytest.raises(ValueError, match=f"different networks or inputs.*{what}"):
        pdlt.compare(pdlt.kernel(NET.with_(**change), X), ms)


def test_activation_parameters_and_callables():
    a = pdlt.MLP(pdlt.activation("leaky_relu", slope=0.1), 2, 8, 3)
    b = pdlt.MLP(pdlt.activation("leaky_relu", slope=0.2), 2, 8, 3)
    ms = pdlt.measure(a, X, 4, seed=0)
    assert len(pdlt.compare(pdlt.kernel(a.with_(), X), ms)) == 6
    with pytest.raises(ValueError, match="activation"):
        pdlt.compare(pdlt.kernel(b, X), ms)
    f = torch.tanh
    u = pdlt.MLP(lambda z: f(z), 2, 8, 3)
    ms_u = pdlt.measure(u, X, 4, seed=0)
    assert len(pdlt.compare(pdlt.kernel(u, X), ms_u)) == 6
    with pytest.raises(ValueError, match="activation"):
        pdlt.compare(pdlt.kernel(pdlt.MLP(lambda z: f(z), 2, 8, 3), X), ms_u)


def test_permuted_or_other_inputs_are_refused(ms):
    with pytest.raises(ValueError, match=r"inputs x: rows \[0, 1\] differ"):
        pdlt.compare(pdlt.kernel(NET, X[::-1]), ms)
    with pytest.raises(ValueError, match="shape"):
        pdlt.compare(pdlt.kernel(NET, X[:1]), ms)
    # a shift of 1e-6 is another input set; a relative 1e-13 (round-off) is not
    with pytest.raises(ValueError, match="inputs x"):
        pdlt.compare(pdlt.kernel(NET, X + 1e-6), ms)
    assert len(pdlt.compare(pdlt.kernel(NET, X * (1 + 1e-13)), ms)) == 9


def test_width_specific_statistics_need_the_same_widths():
    x = X[:1]
    ms = pdlt.measure(NET, x, n_networks=8, seed=0, statistics=("V",))
    assert len(pdlt.compare(pdlt.kernel_correction(NET, x), ms)) > 0
    with pytest.raises(ValueError, match="hidden widths"):
        pdlt.compare(pdlt.kernel_correction(NET.with_(width=16), x), ms)


def test_ntk_statistics_need_the_same_learning_rates():
    ms = pdlt.measure(NET, X, n_networks=8, seed=0, statistics=("Theta",))
    assert len(pdlt.compare(pdlt.ntk(NET.with_(width=32), X), ms)) > 0
    with pytest.raises(ValueError, match="lambda_W"):
        pdlt.compare(pdlt.ntk(NET.with_(lambda_W=2.0), X), ms)


def test_wrong_argument_types(ms):
    th = pdlt.kernel(NET, X)
    with pytest.raises(TypeError, match="second argument must be a Measurement.*got Kernel"):
        pdlt.compare(th, th)
    with pytest.raises(TypeError, match="first argument must be a theory result"):
        pdlt.compare(ms, ms)


def test_agreement_rule_is_k_errors_plus_the_neglected_order():
    """|measured − theory| ≤ k·error + c·(ℓ/n)^p·scale, scale = max|theory| of the layer."""
    from pdlt.compare import ALLOWANCES, agreement, allowance, comparison_frame

    th = pdlt.kernel(NET, X)  # hand-made "measurements": theory + a chosen gap
    tab = comparison_frame("K", np.repeat([1, 2, 3], 3), th.K[:, [0, 0, 1], [0, 1, 1]].ravel(),
                           0.0, 0.01)  # fmt: skip
    n = 8
    scale = np.repeat(np.abs(th.K).max(axis=(1, 2)), 3)  # K is PSD: its max is on the diagonal
    bound = 4 * 0.01 + ALLOWANCES["K"].c * tab.layer / n * scale
    np.testing.assert_allclose(allowance(tab, n), bound)
    inside = tab.assign(measured=tab.theory + 0.999 * bound)
    outside = tab.assign(measured=tab.theory - 1.001 * bound)
    assert agreement(inside, n).all() and not agreement(outside, n).any()
    assert agreement(inside, NET).all()  # an MLP gives its hidden width
    # the next-to-leading metric G neglects O(1/n²): (ℓ/n)² with c = 1
    g = tab.assign(statistic="G")
    np.testing.assert_allclose(allowance(g, n), 4 * 0.01 + (tab.layer / n) ** 2 * scale)
    # an explicit scale column replaces max|theory|
    s = tab.assign(statistic="correlation", scale=0.5)
    np.testing.assert_allclose(allowance(s, n), 0.04 + 3 * tab.layer / n * 0.5)
    with pytest.raises(ValueError, match="no agreement rule"):
        agreement(tab.assign(statistic="nope"), n)
    with pytest.raises(ValueError, match="width must be ≥ 1"):
        agreement(tab, 0)
    with pytest.raises(TypeError, match="width must be an int"):
        agreement(tab, 8.0)
