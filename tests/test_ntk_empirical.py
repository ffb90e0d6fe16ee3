"""The structured empirical NTK (forward activations × backpropagated signals) against the
parameter-Jacobian NTK of torch.func, and the estimators' bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

import pdlt
from pdlt.experiment.ensemble import forward_chunks
from pdlt.experiment.ntk import chunk_ntk
from pdlt.network import validate_inputs


def _jacobian_ntk(net: pdlt.MLP, chunk, m: int, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Ĥ^{(ℓ)}_{i1i2;δ1δ2} = Σ_μν λ_μν ∂z_{i1;δ1}/∂θ_μ ∂z_{i2;δ2}/∂θ_ν with the book's
    λ_b and λ_W/n_{ℓ−1}, from the full parameter Jacobian of network m of the chunk, built by
    torch.func on an nn.Sequential holding that network's weights."""
    module = net.torch_module(dtype=torch.float64)
    linears = [mod for mod in module if isinstance(mod, torch.nn.Linear)][:layer]
    params = {}
    for ell, lin in enumerate(linears):
        name = dict(module.named_children())
        key = next(k for k, v in name.items() if v is lin)
        params[f"{key}.weight"] = chunk.W[ell][m]
        params[f"{key}.bias"] = chunk.b[ell][m][:, 0]
    last = next(k for k, v in module.named_children() if v is linears[-1])
    sub = torch.nn.Sequential(*list(module.children())[: int(last) + 1])

    def f(p):
        return functional_call(sub, p, (x,))  # (N, n_ℓ)

    J = jacrev(f)(params)
    H = 0
    for key, jac in J.items():
        ell = [k for k, v in module.named_children() if isinstance(v, torch.nn.Linear)].index(
            key.split(".")[0]
        )
        flat = jac.reshape(x.shape[0], net.widths[layer], -1)
        lam = net.lambda_b[ell] if key.endswith("bias") else net.lambda_W[ell] / net.widths[ell]
        H = H + lam * torch.einsum("aip,bjp->ijab", flat, flat)
    return H


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_structured_ntk_equals_jacobian_ntk(act):
    """Same networks, float64: equal to round-off (values O(1–10), so 1e-12 absolute)."""
    net = pdlt.MLP(
        act,
        depth=4,
        width=[7, 6, 5],
        input_dim=3,
        output_dim=3,
        C_b=0.3,
        C_W=1.5,
        lambda_b=[0.7, 0.2, 1.1, 0.4],
        lambda_W=[1.3, 0.5, 0.9, 2.0],
    )
    x = validate_inputs(net, np.random.default_rng(0).normal(size=(4, 3)))
    chunk = next(forward_chunks(net, x, 3, seed=5, dtype=torch.float64))
    for layer in (1, 2, 4):
        H = chunk_ntk(net, chunk, layer)
        parts = chunk_ntk(net, chunk, layer, contributions=True)
        assert parts.shape == (3, layer, net.widths[layer], net.widths[layer], 4, 4)
        torch.testing.assert_close(parts.sum(1), H, rtol=0, atol=1e-13)
        for m in range(3):
            ref = _jacobian_ntk(net, chunk, m, x, layer)
            torch.testing.assert_close(H[m], ref, rtol=0, atol=1e-12)
    # a subset of neurons is the corresponding block
    sub = chunk_ntk(net, chunk, 3, neurons=[4, 1])
    full = chunk_ntk(net, chunk, 3)
    torch.testing.assert_close(sub, full[:, [4, 1]][:, :, [4, 1]], rtol=0, atol=1e-14)


def test_empirical_ntk_api():
    net = pdlt.MLP("tanh", 3, 16, 4, output_dim=2)
    x = np.random.default_rng(1).normal(size=(5, 4))
    e = pdlt.empirical_ntk(net, x, n_networks=10, seed=3)
    assert e.H.shape == (10, 2, 2, 5, 5) and e.H.dtype == torch.float32
    torch.testing.assert_close(e.H, e.H.permute(0, 2, 1, 4, 3))  # symmetric under (iδ) swaps
    e64 = pdlt.empirical_ntk(net, x, 10, 3, layer=2, neurons=8, contributions=True, dtype="float64")
    assert e64.H.shape == (10, 8, 8, 5, 5) and e64.contributions.shape == (10, 2, 8, 8, 5, 5)
    # the same seed gives the same networks as measure(), whose Θ estimator averages the
    # diagonal of the first NEURONS = 8 neurons
    ms = pdlt.measure(net, x, 10, seed=3, statistics=("Theta",), dtype="float64")
    diag = torch.diagonal(e64.H, dim1=1, dim2=2).mean(-1).mean(0).numpy()
    np.testing.assert_allclose(ms.Theta[1], diag, rtol=1e-12)
    for bad, match in [
        (dict(layer=0), "layer"),
        (dict(layer=4), "layer"),
        (dict(neurons=[16]), "neurons"),
        (dict(neurons=0), "neurons"),
        (dict(dtype="float16"), "dtype"),
    ]:
        with pytest.raises(ValueError, match=match):
            pdlt.empirical_ntk(net, x, 2, 0, **bad)
    with pytest.raises(ValueError, match="n_networks"):
        pdlt.empirical_ntk(net, x, 0)


def test_fluctuation_estimator_needs_two_neurons():
    net = pdlt.MLP("tanh", 3, 16, 4)  # output_dim = 1: no cross-neuron statistics at layer L
    with pytest.raises(ValueError, match="output_dim"):
        pdlt.measure(net, np.ones((1, 4)), 4, statistics=("ntk_fluctuations",))


def test_first_layer_is_deterministic():
    """Ĥ^{(1)} = δ_ij (λ_b + λ_W x·x/n_0) in every network (eq. 8.23)."""
    net = pdlt.MLP("relu", 2, 8, 4, output_dim=3, C_W=2.0, lambda_b=0.5, lambda_W=2.0)
    x = np.random.default_rng(2).normal(size=(2, 4))
    ms = pdlt.measure(net, x, 16, statistics=("ntk_fluctuations",), dtype="float64")
    np.testing.assert_allclose(ms.Theta[0], 0.5 + 2.0 * x @ x.T / 4, rtol=1e-12)
    np.testing.assert_allclose(ms.Theta_err[0], 0, atol=1e-14)
    for s in "ABDF":
        assert (getattr(ms, s)[0] == 0).all() and (getattr(ms, s + "_err")[0] == 0).all()
