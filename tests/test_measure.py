"""Monte Carlo: the kernel recursion against ensembles of real torch networks."""

import math

import numpy as np
import pytest
import torch

import pdlt
from pdlt.experiment.ensemble import forward_chunks, progress_enabled

# Three inputs with distinct norms and angles, so off-diagonal entries are tested too.
X = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, -0.9, 1.5]]) * math.sqrt(3)

CASES = {
    "relu": dict(activation="relu", C_W=2.0, C_b=0.0),
    "tanh": dict(activation="tanh", C_W=1.0, C_b=0.0),
    "gelu": dict(activation="gelu", C_W=1.7, C_b=0.1),
    "user": dict(activation=lambda z: torch.tanh(z) + 0.3 * torch.sin(2 * z), C_W=1.2, C_b=0.05),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("width", [32, 128])
def test_kernel_matches_real_networks(case, width):
    """|measured − theory| ≤ 4·error + c/n at every layer and input pair.

    The measured two-point function is G = K + G^{1}/n + O(1/n²) (theory note 01 §4.1). The
    reference tables bound |G^{1}| ≤ max_ℓ|K^{(ℓ)}| for depth ≤ 6 (tanh: |G1/K| = 0.53 at ℓ = 5;
    relu off-diagonal G1_12 ≈ −0.97 at ℓ = 6 with K_diag = 1), so c = 2·max|K| with room for
    the O(1/n²) terms.
    """
    net = pdlt.MLP(depth=6, width=width, input_dim=3, **CASES[case])
    th = pdlt.kernel(net, X)
    ms = pdlt.measure(net, X, n_networks=1500, seed=11)
    table = pdlt.compare(th, ms)
    c = 2.0 * np.abs(th.K).max()
    allowed = 4 * table.error + c / width
    worst = table.assign(excess=(table.measured - table.theory).abs() - allowed)
    bad = worst[worst.excess > 0]
    assert bad.empty, f"{case}, n={width}: theory and measurement disagree:\n{bad}"
    # every layer, and off-diagonal pairs, are in the comparison
    assert set(table.layer) == set(range(1, 7)) and (table.a != table.b).sum() == 6 * 3


def test_first_layer_is_exactly_gaussian_so_errors_are_honest():
    """Layer 1 has no finite-width correction: z-scores must look standard normal."""
    net = pdlt.MLP("tanh", depth=2, width=16, input_dim=3)
    ms = pdlt.measure(net, X, n_networks=4000, seed=3)
    z = pdlt.compare(pdlt.kernel(net, X), ms).query("layer == 1").z_score
    assert z.abs().max() < 4.0
    # and the standard errors are what Wick's theorem says: Var(z_a z_b) = K_aa K_bb + K_ab²,
    # averaged over 16 iid neurons (layer 1 neurons are independent) and 4000 networks.
    K1 = pdlt.kernel(net, X).K[0]
    expected = np.sqrt((np.outer(np.diag(K1), np.diag(K1)) + K1**2) / (16 * 4000))
    np.testing.assert_allclose(ms.K_err[0], expected, rtol=0.1)  # ±~4% sampling error of a std


def test_same_seed_same_numbers_whatever_the_chunking():
    net = pdlt.MLP("relu", depth=3, width=64, input_dim=3, C_W=2.0)
    a = pdlt.measure(net, X, n_networks=40, seed=5)
    b = pdlt.measure(net, X, n_networks=40, seed=5, max_memory=2**20)  # many small chunks
    c = pdlt.measure(net, X, n_networks=40, seed=6)
    # identical networks; only the float64 merge order of chunk means differs (round-off)
    np.testing.assert_allclose(a.K, b.K, rtol=1e-12)
    assert not np.allclose(a.K, c.K)
    xt = torch.as_tensor(X)
    big = [ch.z[-1] for ch in forward_chunks(net, xt, 40, seed=5)]
    small = [ch.z[-1] for ch in forward_chunks(net, xt, 40, seed=5, max_memory=2**20)]
    assert len(small) > len(big)
    torch.testing.assert_close(torch.cat(big), torch.cat(small), rtol=0, atol=0)


def test_float64_networks_match_theory():
    # float64 draws its own normals (a different stream from float32), so compare with theory:
    # same bound as above, c = 2·max|K|.
    net = pdlt.MLP("tanh", depth=3, width=32, input_dim=3)
    ms = pdlt.measure(net, X, n_networks=400, seed=1, dtype=torch.float64)
    assert ms.dtype == "float64"
    t = pdlt.compare(pdlt.kernel(net, X), ms)
    assert ((t.measured - t.theory).abs() <= 4 * t.error + 2 * t.theory.abs().max() / 32).all()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"n_networks": 1}, ValueError, "n_networks must be ≥ 2"),
        ({"n_networks": 10.0}, TypeError, "n_networks must be an int"),
        ({"seed": -1}, ValueError, "seed must be ≥ 0"),
        ({"seed": 1.0}, TypeError, "seed must be an int"),
        ({"dtype": "float16"}, ValueError, "dtype"),
        ({"statistics": ("Q",)}, ValueError, "unknown statistics"),
        ({"max_memory": 10}, ValueError, "max_memory"),
        ({"device": "tpu"}, ValueError, "device"),
    ],
)
def test_bad_measure_arguments(kwargs, error, match):
    net = pdlt.MLP("tanh", depth=2, width=4, input_dim=3)
    args = {"n_networks": 4, "seed": 0} | kwargs
    with pytest.raises(error, match=match):
        pdlt.measure(net, X, **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    net = pdlt.MLP("tanh", depth=2, width=4, input_dim=3)
    with pytest.raises(ValueError, match="no CUDA device"):
        pdlt.measure(net, X, n_networks=4, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_theory():
    net = pdlt.MLP("relu", depth=4, width=128, input_dim=3, C_W=2.0)
    ms = pdlt.measure(net, X, n_networks=500, seed=0, device="cuda")
    table = pdlt.compare(pdlt.kernel(net, X), ms)
    assert ((table.measured - table.theory).abs() <= 4 * table.error + 4 / 128).all()


def test_compare_table_arithmetic_and_errors():
    net = pdlt.MLP("tanh", depth=2, width=8, input_dim=3)
    th, ms = pdlt.kernel(net, X), pdlt.measure(net, X, n_networks=8, seed=0)
    t = pdlt.compare(th, ms)
    assert list(t.columns) == [
        "statistic",
        "layer",
        "a",
        "b",
        "theory",
        "measured",
        "error",
        "z_score",
        "relative",
    ]
    np.testing.assert_allclose(t.z_score, (t.measured - t.theory) / t.error)
    other = pdlt.kernel(net, X[:2])
    with pytest.raises(ValueError, match="shape"):
        pdlt.compare(other, ms)
    with pytest.raises(ValueError, match="not in both"):
        pdlt.compare(th, ms, statistics=("V",))
    with pytest.raises(AttributeError, match="no statistic 'V'"):
        _ = ms.V


def test_progress_bars_stay_quiet_in_ci_and_on_request(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled(False) is False
    assert progress_enabled(True) is True
    monkeypatch.setenv("CI", "true")
    assert progress_enabled(True) is False
