"""Deterministic tests of the four-point vertex V, the 1/n kernel correction K1 and deep linear
networks: reference tables (theory note 01 §10, computed there by an independent script with
300-node Gauss–Hermite and cross-checked with scipy quad), exact special cases, symmetries."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.theory.vertex import input_pairs, pairs_to_tensor

# The reference tables print 8–10 significant digits; our quadrature is ≲1e-9 relative, the finite
# differences of H ≲1e-8: 2e-7 relative covers the table's own rounding.
RTOL = 2e-7


def single(act, depth, **kw):
    """A single-input net with K^{(1)} = 1 (|x|² = n_0 = 1 and C_b + C_W x²  = 1)."""
    C_b, C_W = kw.get("C_b", 0.0), kw.get("C_W", 1.0)
    net = pdlt.MLP(act, depth=depth, width=100, input_dim=1, C_b=C_b, C_W=C_W)
    return net, np.array([[math.sqrt((1 - C_b) / C_W)]])


def test_table_A_tanh_critical_single_input():
    net, x = single("tanh", 10)
    kc = pdlt.kernel_correction(net, x)
    fw = pdlt.four_point_vertex(net, x)
    V = fw.V[:, 0, 0, 0, 0]
    np.testing.assert_allclose(
        V[[1, 2, 4, 9]], [0.0975237381, 0.0678074939, 0.0393984430, 0.0185887276], rtol=RTOL
    )
    np.testing.assert_allclose(
        kc.K1[[2, 4, 9], 0, 0], [-0.0309325199, -0.0682253714, -0.1071337503], rtol=RTOL
    )
    np.testing.assert_allclose(fw.normalized[9, 0], 5.523524, rtol=RTOL)
    # first layer exactly Gaussian, second has no metric correction (note 01 §4.3)
    assert V[0] == 0 and kc.K1[0, 0, 0] == 0 and abs(kc.K1[1, 0, 0]) < 1e-12
    # V agrees between the two entry points, and the excess kurtosis is 3V/(nK²)
    np.testing.assert_allclose(kc.V_pairs[:, 0, 0], V, rtol=1e-14)
    np.testing.assert_allclose(fw.excess_kurtosis[9, 0], 3 * 5.523524 / 100, rtol=RTOL)


def test_table_B_sin_and_C_tanh_off_critical():
    net, x = single("sin", 10)
    kc = pdlt.kernel_correction(net, x)
    fw = pdlt.FourPointVertex  # noqa: F841  (type is public)
    V = kc.V_pairs[:, 0, 0]
    np.testing.assert_allclose(V[9] / kc.K[9, 0, 0] ** 2, 5.894778, rtol=RTOL)
    np.testing.assert_allclose(kc.K1[9, 0, 0], -0.19335798, rtol=RTOL)
    net, x = single("tanh", 8, C_b=0.2, C_W=1.5)
    kc = pdlt.kernel_correction(net, x)
    np.testing.assert_allclose(
        kc.V_pairs[[1, 2, 4, 7], 0, 0],
        [0.2194284107, 0.2209844924, 0.2137619392, 0.2122067491],
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        kc.K1[[2, 4, 7], 0, 0], [-0.0407470918, -0.0703577419, -0.0765862689], rtol=RTOL
    )


def test_table_G_two_inputs():
    """Off-diagonal index structures V_(12)(12), V_(11)(22), V_(11)(12) and K1_12 (table G)."""
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]]) * math.sqrt(2)
    net = pdlt.MLP("tanh", depth=5, width=64, input_dim=2)
    kc = pdlt.kernel_correction(net, x)
    V = pairs_to_tensor(kc.V_pairs, 2)
    got = np.stack([V[:, 0, 0, 0, 0], V[:, 0, 1, 0, 1], V[:, 0, 0, 1, 1], V[:, 0, 0, 0, 1]], 1)
    want = [
        [0.09752374, 0.13861922, 0.01786786, 0.05498535],
        [0.06780749, 0.09676009, 0.01311242, 0.03796171],
        [0.03939844, 0.05567847, 0.00780547, 0.02177455],
    ]
    np.testing.assert_allclose(got[[1, 2, 4]], want, rtol=1e-6)  # table printed to 7 digits
    np.testing.assert_allclose(
        kc.K1[[2, 4]][:, [0, 0], [0, 1]],
        [[-0.030933, -0.016372], [-0.068225, -0.038615]],
        atol=6e-7,
    )


@pytest.mark.parametrize(
    "act,nu,C_W", [("relu", 5.0, 2.0), ("linear", 2.0, 1.0), ("leaky_relu", None, None)]
)
def test_scale_invariant_closed_forms(act, nu, C_W):
    """V^{(ℓ)} = ν(ℓ−1)K², ν = 3A_4/A_2² − 1, and K1 ≡ 0 for one input (note 01 §7.1, §8)."""
    if act == "leaky_relu":
        a = 0.1
        C_W, nu = 2 / (1 + a * a), 3 * (1 + a**4) / 2 / ((1 + a * a) / 2) ** 2 - 1
        net = pdlt.MLP(
            pdlt.activation("leaky_relu", slope=a), depth=6, width=50, input_dim=1, C_W=C_W
        )
    else:
        net = pdlt.MLP(act, depth=6, width=50, input_dim=1, C_W=C_W)
    x = [[1.3]]
    kc = pdlt.kernel_correction(net, x)
    K = kc.K[:, 0, 0]
    np.testing.assert_allclose(
        kc.V_pairs[:, 0, 0], nu * np.arange(6) * K**2, rtol=1e-10, atol=1e-14
    )
    np.testing.assert_allclose(kc.K1, 0.0, atol=1e-9 * K.max())


def test_deep_linear_exact_vs_recursion_and_products():
    """Exact deep-linear four-point function: (1+2/n)^{ℓ−1} products (book eq. 3.28), and it
    approaches the leading-order V recursion as n → ∞ with an O(1/n) relative gap."""
    x = np.array([[1.0, 0.3], [0.2, -0.9], [0.5, 0.5]])
    n = 100
    net = pdlt.MLP("linear", depth=10, width=n, input_dim=2, C_W=1.0)
    ex = pdlt.deep_linear(net, x)
    G = ex.G[:, 0, 0]
    # table D of note 01: exact V/(nK²) at ℓ = 10, n = 100 is (1 + 2/n)^9 − 1
    np.testing.assert_allclose(ex.V[9, 0, 0, 0, 0] / (n * G[9] ** 2), 0.1950925686, rtol=1e-9)
    np.testing.assert_allclose(
        ex.excess_kurtosis[:, 0], 3 * ((1 + 2 / n) ** np.arange(10) - 1), rtol=1e-12
    )
    # E[z⁴] = 3 T_aaaa and E[z^6] = 15 Π(1+2/n)(1+4/n) G³
    np.testing.assert_allclose(
        pdlt.deep_linear_moments(net, x, 2),
        3 * ex.T[:, [0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]],
        rtol=1e-12,
    )
    z6 = pdlt.deep_linear_moments(net, x, 3)[:, 1]
    G1 = ex.G[:, 1, 1]
    np.testing.assert_allclose(
        z6, 15 * ((1 + 2 / n) * (1 + 4 / n)) ** np.arange(10) * G1**3, rtol=1e-12
    )
    # vs the general recursion (which for σ = z uses Wick): relative gap ≲ (ℓ−1)(ℓ−2)/(2n)·ν… ≤ 5ℓ/n
    for width in (1000, 100000):
        netw = net.with_(width=width)
        th = pdlt.four_point_vertex(netw, x).V
        exw = pdlt.deep_linear(netw, x).V
        gap = np.abs(exw - th).max() / np.abs(th).max()
        assert gap < 5 * 10 / width, (width, gap)
    # with biases the exact recursion still holds and the mean is the kernel
    nb = net.with_(C_b=0.3)
    np.testing.assert_allclose(pdlt.deep_linear(nb, x).G, pdlt.kernel(nb, x).K, rtol=1e-12)


def test_vertex_symmetries_and_shapes_four_inputs():
    x = np.array([[1.0, 0.0, 0.2], [0.4, 0.9, 0.0], [0.0, -0.7, 0.7], [0.6, 0.1, -0.8]])
    net = pdlt.MLP("sin", depth=3, width=32, input_dim=3)
    fw = pdlt.four_point_vertex(net, x)
    V = fw.V
    assert V.shape == (3, 4, 4, 4, 4) and fw.V_pairs.shape == (3, 10, 10)
    np.testing.assert_allclose(V, V.transpose(0, 2, 1, 3, 4), atol=0)
    np.testing.assert_allclose(V, V.transpose(0, 1, 2, 4, 3), atol=0)
    np.testing.assert_allclose(V, V.transpose(0, 3, 4, 1, 2), atol=1e-15)
    # not fully symmetric: V_(01)(23) ≠ V_(02)(13) in general
    assert abs(V[2, 0, 1, 2, 3] - V[2, 0, 2, 1, 3]) > 1e-6
    # layer 2 is exactly C_W² Cov[sin sin, sin sin] under K^(1): a closed form for sin, since
    # ⟨Π sin z_i⟩ is a signed sum of exp(−wᵀKw/2) over w ∈ {±1}⁴ (entire; no quadrature)
    K = fw.K[0]

    def e_sin(idx):
        tot = 0.0
        for signs in np.ndindex(*(2,) * len(idx)):
            w = np.zeros(4)
            s = np.array(signs) * 2 - 1
            for si, i in zip(s, idx, strict=True):
                w[i] += si
            tot += np.prod(s) * np.exp(-0.5 * w @ K @ w)
        return (tot / (2j) ** len(idx)).real

    for a, b, c, d in [(0, 1, 2, 3), (0, 0, 1, 2), (1, 3, 1, 3), (2, 2, 2, 2)]:
        exact = e_sin((a, b, c, d)) - e_sin((a, b)) * e_sin((c, d))
        np.testing.assert_allclose(V[1, a, b, c, d], exact, rtol=1e-7, atol=1e-9)
    assert fw.to_frame().shape[0] == 3 * 55


def test_metric_nonuniform_widths():
    """metric = K + K1/n_{ℓ−1}, with the n_ℓ/n_{ℓ−1} factors inside K1 (note 01 Checks)."""
    widths = [128, 32, 128, 32, 128]
    net = pdlt.MLP("tanh", depth=6, width=widths, input_dim=1)
    m = pdlt.metric(net, [[1.0]])
    n_prev = np.array([1, *widths], dtype=float)
    np.testing.assert_allclose(m.G, m.K + m.K1 / n_prev[:, None, None], rtol=1e-14)
    # non-uniform widths change K1 relative to equal widths (ratio factors are used)
    eq = pdlt.kernel_correction(net.with_(width=64), [[1.0]])
    assert not np.allclose(m.K1[3:], eq.K1[3:], rtol=0.05)
    assert "Metric" in repr(m) and "G" in m.to_frame()


def test_pairs_index_roundtrip():
    pairs, index = input_pairs(4)
    assert pairs.shape == (10, 2)
    for p, (a, b) in enumerate(pairs.tolist()):
        assert index[a, b] == index[b, a] == p


@settings(max_examples=8)
@given(
    act=st.sampled_from(["tanh", "relu", "gelu", "linear", "sin"]),
    depth=st.integers(2, 3),
    n_inputs=st.integers(1, 3),
    C_W=st.floats(0.5, 2.5),
    C_b=st.floats(0.0, 0.5),
    scale=st.floats(0.0, 3.0),
)
def test_fuzz_finite_results(act, depth, n_inputs, C_W, C_b, scale):
    """Any valid spec gives finite V, K1 with V's pair symmetry, or a clear error."""
    net = pdlt.MLP(act, depth=depth, width=8, input_dim=2, C_W=C_W, C_b=C_b)
    x = scale * np.linspace(-1, 1, 2 * n_inputs).reshape(n_inputs, 2)
    kc = pdlt.kernel_correction(net, x)
    assert np.isfinite(kc.K1).all() and np.isfinite(kc.V_pairs).all()
    np.testing.assert_allclose(kc.V_pairs, kc.V_pairs.transpose(0, 2, 1), atol=1e-12)


def test_validation_errors():
    with pytest.raises(ValueError, match="linear"):
        pdlt.deep_linear(pdlt.MLP("tanh", depth=2, width=4, input_dim=1), [[1.0]])
    net = pdlt.MLP("linear", depth=2, width=4, input_dim=1)
    with pytest.raises(ValueError, match="m must be"):
        pdlt.deep_linear_moments(net, [[1.0]], 0)
    with pytest.raises(ValueError, match="input_dim"):
        pdlt.four_point_vertex(net, np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        pdlt.kernel_correction(net, [[float("nan")]])


def test_zero_input_is_finite():
    """A zero input with C_b = 0 has K_aa = 0 in every layer: finite results, V = 0 there."""
    net = pdlt.MLP("tanh", depth=4, width=8, input_dim=2)
    kc = pdlt.kernel_correction(net, [[0.0, 0.0], [1.0, 0.5]])
    assert np.isfinite(kc.K1).all() and np.isfinite(kc.V_pairs).all()
    assert np.abs(pairs_to_tensor(kc.V_pairs, 2)[:, 0, 0, 0, 0]).max() == 0
    torch.testing.assert_close(torch.as_tensor(kc.K1[:, 0, 0]), torch.zeros(4, dtype=torch.float64))


def test_cli_finite_width():
    from typer.testing import CliRunner

    from pdlt.cli import app

    res = CliRunner().invoke(app, ["finite-width", "tanh", "--depth", "3", "--width", "50"])
    assert res.exit_code == 0, res.output
    assert "1.2128" in res.output  # V/K² at ℓ = 3 (note 01 table A: 1.212823)
    bad = CliRunner().invoke(app, ["finite-width", "tanh", "--K1", "0"])
    assert bad.exit_code != 0
