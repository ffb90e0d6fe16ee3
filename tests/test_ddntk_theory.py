"""The ddNTK means R, S, T, U (book §∞.1, §∞.3): reference values, the exact layer-2 local
terms for several inputs, and real networks at two widths (multi-input; smooth and kinked σ;
off-critical).

Bars: 4 standard errors from the ensemble plus the neglected order. Layer 2 is exact at O(1/n_1)
(its statistics are local terms), so it gets the statistical bar alone; deeper layers carry
O(1/n) relative corrections of n·E[…], growing like ℓ/n (02-ntk.md §7, §9 C4: tanh T at ℓ = 4,
n = 16 is 40 % high), so the bar adds (ℓ/n)·scale with scale = max(|R|, |S|, |T|, |U|) of the
layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdlt
from pdlt.activations import BUILTIN_ACTIVATIONS
from test_dntk import _layer2_terms

X1 = np.ones((1, 4))
X2 = np.array([[1.0, 0.3, -0.5, 0.2], [0.1, 1.1, 0.4, -0.6]]) * 1.2
STATS = ("R", "S", "T", "U")


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_single_input_reference_values():
    """02-ntk.md §8.1–8.2 (an independent single-input code): tanh C_W = 1 and ReLU C_W = 2,
    λ_b = λ_W = 1, |x|²/n_0 = 1, to the tables' 6 digits, and the normalized ratios at ℓ = 10,
    n = 100."""
    d = pdlt.ddntk(pdlt.MLP("tanh", 10, 100, 4, C_W=1.0), X1)
    ell = [1, 2, 3, 4, 9]
    table = {
        "R": [-4.225296, -13.294748, -32.417579, -69.176366, -1047.23364],
        "S": [2.447099, 7.018769, 15.252270, 28.945048, 267.438964],
        "T": [0.465680, 1.562783, 4.359454, 10.637090, 242.254970],
        "U": [1.081062, 2.565594, 4.872464, 8.290754, 51.740616],
    }
    for s, want in table.items():
        got = getattr(d, s)[ell, 0, 0, 0, 0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6, err_msg=s)
        assert np.all(getattr(d, s)[0] == 0)
    norm = d.normalized()
    for key, want in [
        ("R K/Theta^3", -0.00293825),
        ("S K/Theta^3", 0.00075036),
        ("T K/Theta^3", 0.000679701),
        ("U K/Theta^3", 0.00014517),
    ]:
        np.testing.assert_allclose(norm[key][-1, 0], want, rtol=2e-5)
    relu = pdlt.ddntk(pdlt.MLP("relu", 10, 100, 4, C_W=2.0), X1)
    np.testing.assert_allclose(relu.S[ell, 0, 0, 0, 0], [4, 24, 80, 200, 3300], rtol=1e-10)
    np.testing.assert_allclose(relu.T[ell, 0, 0, 0, 0], [2, 12, 40, 100, 1650], rtol=1e-10)
    assert np.abs(relu.R).max() == 0.0 and np.abs(relu.U).max() == 0.0  # explicit σ'' = σ''' = 0
    np.testing.assert_allclose(relu.normalized()["S K/Theta^3"][-1, 0], 0.00825, rtol=1e-10)


def test_symmetries_api_and_errors():
    """dd_I's symmetry in its last two slots makes R_{abcd} = R_{abdc}; dd_II's (13) ↔ (24)
    symmetry makes S_{abcd} = S_{badc}, T_{abcd} = T_{dcba}, U_{abcd} = U_{cdab}."""
    net = pdlt.MLP("gelu", 4, 20, 4, C_W=1.7, C_b=0.1, lambda_b=0.5)
    x = np.array([[1.0, 0.3, -0.5, 0.2], [0.1, 1.1, 0.4, -0.6], [-0.4, 0.2, 1.0, 0.5]])
    d = pdlt.ddntk(net, x)
    assert d.R.shape == (4, 3, 3, 3, 3) and d.statistics == STATS
    for s, perm in [("R", (0, 1, 2, 4, 3)), ("S", (0, 2, 1, 4, 3)), ("T", (0, 4, 3, 2, 1))]:
        np.testing.assert_allclose(getattr(d, s), getattr(d, s).transpose(perm), atol=1e-12)
    np.testing.assert_allclose(d.U, d.U.transpose(0, 3, 4, 1, 2), atol=1e-12)
    frame = d.to_frame()
    assert set(STATS) <= set(frame.columns) and len(frame) == 4 * 3**4
    assert "DDNTKStatistics(depth=4, inputs=3)" == repr(d)
    with pytest.raises(ValueError, match="at most 8 inputs"):
        pdlt.ddntk(net, np.random.default_rng(0).normal(size=(9, 4)))
    with pytest.raises(ValueError):
        pdlt.ddntk(net, np.ones((2, 3)))  # wrong input dimension


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_layer2_multi_input_equals_exact_local_terms(act):
    """Two inputs, per-layer constants: layer 2 of the recursion equals the local terms derived
    independently from the layer-2 forward equation (tests/test_dntk.py), sampled over
    z^{(1)} ~ N(0, K^{(1)}), within 4 sampling errors."""
    x = np.array([[1.0, 0.5, -0.3], [0.2, -1.1, 0.8]])
    net = pdlt.MLP(act, 2, 16, 3, C_b=0.1, C_W=[1.2, 1.5], lambda_b=[0.5, 0.8], lambda_W=[1.5, 0.7])
    ref = _layer2_terms(net, x, samples=150_000)
    d = pdlt.ddntk(net, x)
    for s in STATS:
        want, err = ref[s]
        got = getattr(d, s)[1]
        assert (np.abs(got - want) <= 4 * err + 1e-12).all(), (s, got, want, err)
    if act == "relu":
        assert np.abs(d.R).max() == 0 and np.abs(d.U).max() == 0


def _check_layers(th, ms, width):
    for s in STATS:
        T, M, E = getattr(th, s), getattr(ms, s), getattr(ms, s + "_err")
        for ell in range(1, T.shape[0]):  # index ell is layer ell + 1
            scale = max(np.abs(getattr(th, q)[ell]).max() for q in STATS)
            allowance = 0.0 if ell == 1 else (ell + 1) / width * scale
            dev = np.abs(M[ell] - T[ell])
            bar = 4 * E[ell] + allowance
            assert (dev <= bar).all(), (s, ell + 1, width, float((dev - bar).max()))


@pytest.mark.parametrize("act, C_W, C_b", [("tanh", 1.5, 0.2), ("relu", 2.0, 0.1)])
def test_multi_input_R_S_T_U_match_real_networks(act, C_W, C_b):
    """Two inputs, depth 3, widths 16 and 32, 1000 networks each (float64): every entry of
    R, S, T, U at layers 2 (exact) and 3 (ℓ/n allowance) against n_{ℓ−1}·E[ddĤ] of real
    networks; pdlt.compare pairs the two results."""
    for width in (16, 32):
        net = pdlt.MLP(act, 3, width, 4, output_dim=4, C_W=C_W, C_b=C_b)
        th = pdlt.ddntk(net, X2)
        ms = pdlt.measure(net, X2, 1000, seed=width, statistics=("ddntk",), dtype="float64")
        _check_layers(th, ms, width)
        table = pdlt.compare(th, ms)
        assert set(table.statistic) == set(STATS)


@pytest.mark.slow
@pytest.mark.parametrize("act, C_W, C_b", [("tanh", 1.5, 0.2), ("relu", 2.0, 0.1)])
def test_multi_input_depth4_and_extrapolation_slow(act, C_W, C_b):
    """Two inputs, depth 4, widths 16 and 32, 4000 networks each (~2 min): every entry within
    4 se + (ℓ/n)·scale at both widths, and the 1/n extrapolation 2X₃₂ − X₁₆ within 4σ plus the
    neglected order (2(X₁₆ − X₃₂)²/max(|X₃₂|, scale/10), the 1/n² term if the series is
    geometric) — this resolves the mixed-input entries far more sharply than the bar above."""
    res, th = {}, None
    for width in (16, 32):
        net = pdlt.MLP(act, 4, width, 4, output_dim=4, C_W=C_W, C_b=C_b)
        th = pdlt.ddntk(net, X2)
        res[width] = pdlt.measure(
            net, X2, 4000, seed=width + 3, statistics=("ddntk",), dtype="float64"
        )
        _check_layers(th, res[width], width)
    for s in STATS:
        for ell in (2, 3):
            scale = max(np.abs(getattr(th, q)[ell]).max() for q in STATS)
            a, b = (getattr(res[n], s)[ell] for n in (16, 32))
            ea, eb = (getattr(res[n], s + "_err")[ell] for n in (16, 32))
            extrap, err = 2 * b - a, np.hypot(2 * eb, ea)
            neglected = 2 * (a - b) ** 2 / np.maximum(np.abs(b), scale / 10)
            dev = np.abs(extrap - getattr(th, s)[ell])
            assert (dev <= 4 * err + neglected).all(), (s, ell + 1, extrap, getattr(th, s)[ell])


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_third_derivative_of_every_builtin(name):
    """σ''' (needed by R): the closed forms equal nested autograd of σ itself away from kinks;
    a user callable gets it by autograd; order 4 is refused."""
    act = pdlt.activation(name)
    z = torch.linspace(-3.1, 2.9, 61, dtype=torch.float64)  # avoids the kink at 0
    user = pdlt.activation(lambda t: act.fn(t), name="copy")
    torch.testing.assert_close(act.derivative(3)(z), user.derivative(3)(z), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="0, 1, 2 or 3"):
        act.derivative(4)
