"""Residual MLPs (book App. B, eq. B.3 with ξ = 1): the spec, the sampler and the theory's
residual steps against ensembles of real torch networks at two widths."""

import math

import numpy as np
import pytest
import torch

import pdlt
from pdlt.compare import agreement
from pdlt.experiment.ensemble import forward_chunks

X2 = np.array([[1.0, 0.0], [0.6, 0.8]]) * math.sqrt(2)


def test_skip_spec_scalar_per_layer_and_errors():
    net = pdlt.MLP("relu", depth=4, width=8, input_dim=3, skip=0.5)
    assert net.skip == (0.0, 0.5, 0.5, 0.0)  # layer 1 reads x; the output layer is 8 → 1
    assert pdlt.MLP("relu", depth=4, width=8, input_dim=3, output_dim=8, skip=0.5).skip[-1] == 0.5
    assert pdlt.MLP("relu", depth=4, width=8, input_dim=3, skip=[0.5, 0.2, 0]).skip == (
        0.0,
        0.5,
        0.2,
        0.0,
    )
    assert net.with_(depth=6).skip == (0.0,) + (0.5,) * 4 + (0.0,)
    assert net.describe()["skip γ"] == 0.5
    assert not pdlt.MLP("relu", depth=4, width=8, input_dim=3).residual
    with pytest.raises(ValueError, match="n_3 = 8 ≠ n_4 = 1"):
        pdlt.MLP("relu", depth=4, width=8, input_dim=3, skip=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="layer 1 reads the input"):
        pdlt.MLP("relu", depth=4, width=8, input_dim=8, skip=[0.5, 0.5, 0.5, 0])
    with pytest.raises(ValueError, match="one value per layer"):
        pdlt.MLP("relu", depth=4, width=8, input_dim=3, skip=[0.5, 0.5])
    with pytest.raises(TypeError):
        pdlt.MLP("relu", depth=4, width=8, input_dim=3, skip="0.5")
    with pytest.raises(ValueError, match="finite"):
        pdlt.MLP("relu", depth=4, width=8, input_dim=3, skip=float("nan"))


def test_torch_module_is_the_sampled_network():
    """The residual torch module computes z^{(L)} = … + γ z^{(L−1)} exactly as the sampler."""
    net = pdlt.MLP("tanh", depth=4, width=6, input_dim=2, output_dim=6, skip=0.7, C_b=0.1)
    mod = net.torch_module(seed=0, dtype=torch.float64)
    assert sum(isinstance(m, pdlt.network.ResidualBlock) for m in mod) == 3
    x = torch.as_tensor(X2)
    # rebuild the forward by hand from the module's own parameters
    lins = [
        m if isinstance(m, torch.nn.Linear) else m.linear
        for m in mod
        if hasattr(m, "weight") or hasattr(m, "linear")
    ]
    z = lins[0](x)
    for lin in lins[1:]:
        z = lin(torch.tanh(z)) + 0.7 * z
    assert torch.allclose(mod(x), z)
    # the sampler: the same recursion on drawn parameters
    ch = next(forward_chunks(net, x, 2, 0, dtype=torch.float64))
    W, b = ch.W, ch.b
    z = W[0][0] @ x.T + b[0][0]
    for ell in range(1, 4):
        z = W[ell][0] @ torch.tanh(z) + b[ell][0] + 0.7 * z
    assert torch.allclose(ch.z[-1][0], z)


def test_theory_residual_steps_exact_cases():
    """Deterministic checks of the residual steps: K' = F(K) + γ²K (so K is constant at
    C_W = 1 − γ² for linear σ); linear V^{(2)} = 2K²(C_W² + 2γ²C_W) (a two-line direct
    computation), V grows by 2(1 − γ⁴)K² per layer at criticality; Θ gains γ²Θ."""
    g = 0.6
    net = pdlt.MLP("linear", depth=5, width=10, input_dim=1, output_dim=10, C_W=1 - g**2, skip=g)
    x = np.array([[1.0]])
    K = pdlt.kernel(net, x).K[:, 0, 0]
    assert np.allclose(K, K[0])
    V = pdlt.four_point_vertex(net, x).normalized[:, 0]
    CW = 1 - g**2
    assert V[1] == pytest.approx(2 * (CW**2 + 2 * g**2 * CW))
    assert np.allclose(np.diff(V[1:]), 2 * (1 - g**4))
    th = pdlt.ntk(net, x).Theta[:, 0, 0]  # Θ' = 1 + K + (C_W + γ²)Θ = 1 + K + Θ
    assert np.allclose(np.diff(th), 1 + K[0])
    with pytest.raises(NotImplementedError, match="residual"):  # dNTK: one input only
        pdlt.dntk(net, np.array([[1.0], [-0.5]]))


@pytest.mark.slow
@pytest.mark.parametrize("act,A2", [("relu", 0.5), ("tanh", 1.0)])
def test_residual_kernel_and_ntk_mean_mc(act, A2):
    """K and Θ of residual networks (γ = 0.5, C_W = (1 − γ²)/A₂) at two widths: 4 se + the
    neglected O(ℓ/n) (pdlt.compare.agreement)."""
    g = 0.5
    for n in (32, 96):
        net = pdlt.MLP(act, depth=6, width=n, input_dim=2, C_W=(1 - g**2) / A2, C_b=0.0, skip=g)
        ms = pdlt.measure(net, X2, n_networks=600, seed=n, statistics=("K", "Theta"))
        for th in (pdlt.kernel(net, X2), pdlt.ntk(net, X2)):
            table = pdlt.compare(th, ms)
            ok = agreement(table, net)
            assert ok.all(), table[~ok]


@pytest.mark.slow
@pytest.mark.parametrize("act,A2", [("linear", 1.0), ("tanh", 1.0)])
def test_residual_vertex_mc(act, A2):
    """V of residual networks with odd σ at two widths (4 se + O(ℓ/n)). Not vacuous: for linear
    σ the recursion without the skip–metric term γ²(MJᵀ + JM) of the fresh term would give
    V/K² = 2C_W²(ℓ − 1) = 4.5 at ℓ = 5 instead of 2(1 − γ⁴)(ℓ − 1) = 7.5, many bars away."""
    g = 0.5
    for n in (48, 128):
        net = pdlt.MLP(
            act, depth=5, width=n, input_dim=2, output_dim=n, C_W=(1 - g**2) / A2, skip=g
        )
        ms = pdlt.measure(net, X2, n_networks=3000, seed=n, statistics=("V",))
        th = pdlt.four_point_vertex(net, X2)
        table = pdlt.compare(th, ms, statistics=("V",))
        ok = agreement(table, net)
        assert ok.all(), table[~ok]
        if act == "linear":
            K = th.K[-1, 0, 0]
            naive = 2 * (1 - g**2) ** 2 * 4
            assert th.normalized[-1, 0] == pytest.approx(2 * (1 - g**4) * 4)
            assert (ms.V[-1, 0, 0, 0, 0] / K**2 - naive) > 5 * ms.V_err[-1, 0, 0, 0, 0] / K**2


def test_residual_critical_point_and_aspect_ratio():
    """C_W(γ) = (1 − γ²)/A₂ (B.20) and (1 − γ²)/σ₁² (B.21); ν(γ) = (2/3)(1 − γ⁴) for K* = 0
    (B.35) is what the residual vertex recursion gives deep in the network (slope at ℓ ≈ 300);
    r* = (4/(20 + 3n_L))/ν (A.73, B.36)."""
    assert pdlt.critical_point("relu", skip=0.5).C_W == pytest.approx(1.5)
    cp = pdlt.critical_point("tanh", skip=0.5)
    assert cp.C_W == pytest.approx(0.75) and cp.C_b == 0.0
    assert cp.vertex_growth == pytest.approx(0.625)
    net = pdlt.MLP("tanh", depth=300, width=100, input_dim=1, output_dim=100, C_W=0.75, skip=0.5)
    v = pdlt.four_point_vertex(net, [[1.0]]).normalized[:, 0]
    assert np.diff(v)[-1] == pytest.approx(0.625, rel=0.01)
    lin = pdlt.critical_point("linear", skip=0.5)
    assert lin.vertex_growth == pytest.approx(2 * (1 - 0.5**4))
    assert pdlt.optimal_aspect_ratio("tanh") == pytest.approx(4 / 23 / (2 / 3))
    assert pdlt.optimal_aspect_ratio("relu", output_dim=10) == pytest.approx(4 / 50 / 5)
    assert pdlt.optimal_aspect_ratio("tanh", skip=0.5) == pytest.approx(4 / 23 / 0.625)
    # ReLU: ν(γ) from the path recursion (not the book's (1 − γ²)(5 − γ²) = 3.5625): the slope
    # of V/K² deep in the network, and r* with it
    nu = pdlt.critical_point("relu", skip=0.5).vertex_growth
    net = pdlt.MLP("relu", depth=60, width=100, input_dim=1, output_dim=100, C_W=1.5, skip=0.5)
    v = pdlt.four_point_vertex(net, [[1.0]]).normalized[:, 0]
    assert np.diff(v)[-1] == pytest.approx(nu, rel=1e-6)
    assert nu == pytest.approx(6.4963, abs=1e-3)
    assert pdlt.optimal_aspect_ratio("relu", skip=0.5) == pytest.approx(4 / 23 / nu)
    with pytest.raises(ValueError, match="no criticality"):
        pdlt.optimal_aspect_ratio("sigmoid")
    with pytest.raises(ValueError, match="γ² < 1"):
        pdlt.critical_point("tanh", skip=1.2)
