"""``layers=`` and ``max_memory=`` of pdlt.kernel / pdlt.ntk, and the regressors' train × test
route: the same numbers as the one-pass walk of the full kernel, in less memory."""

from __future__ import annotations

import numpy as np
import pytest

import pdlt


def _inputs(n: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n, 4))
    x[3] = x[2]  # parallel
    x[5] = -x[6]  # anti-parallel
    x[7] = 0.0  # zero variance with C_b = 0 below
    return x


@pytest.mark.parametrize(
    "act,cw,cb", [("relu", 2.0, 0.0), ("tanh", 1.0, 0.1), ("gelu", 1.6, 0.1), ("swish", 1.8, 0.1)]
)
def test_blocks_and_layer_selection_match_the_full_walk(act: str, cw: float, cb: float) -> None:
    net = pdlt.MLP(act, depth=5, width=8, input_dim=4, C_W=cw, C_b=cb)
    x = _inputs(260)  # 1 MiB cap → blocks of ~17 columns: ~15 blocks
    full = pdlt.ntk(net, x)
    part = pdlt.ntk(net, x, layers=[2, -1], max_memory=2**20)
    assert part.layers == (2, 5) and part.Theta.shape == (2, 260, 260)
    for got, want in ((part.K, full.K[[1, 4]]), (part.Theta, full.Theta[[1, 4]])):
        # the Mehler series is certified to 1e-12 per layer; blocks may truncate it elsewhere
        assert np.abs(got - want).max() <= 1e-11 * np.abs(want).max()
    last = pdlt.kernel(net, x, layers="last")
    assert np.array_equal(last.K[0], pdlt.kernel(net, x).K[-1])
    assert set(part.to_frame()["layer"]) == {2, 5}


def test_layers_argument_is_validated() -> None:
    net = pdlt.MLP("relu", depth=3, width=8, input_dim=4)
    x = _inputs(10)
    for bad, err in (
        ([0], ValueError),
        ([3, 2], ValueError),
        ("first", ValueError),
        ([1.5], TypeError),
    ):
        with pytest.raises(err):
            pdlt.kernel(net, x, layers=bad)
    with pytest.raises(ValueError, match="max_memory"):
        pdlt.ntk(net, x, max_memory=100)


@pytest.mark.parametrize("cls", [pdlt.NNGPRegressor, pdlt.NTKRegressor])
def test_regressor_std_from_the_diagonal_matches_the_covariance(cls) -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 4)), rng.normal(size=40)
    Xt = rng.normal(size=(30, 4))
    net = pdlt.MLP("gelu", depth=4, width=8, input_dim=4, C_W=1.6, C_b=0.1)
    model = cls(net).fit(X, y)
    mean_c, cov = model.predict(Xt, return_cov=True)
    mean_s, std = model.predict(Xt, return_std=True)
    assert np.allclose(mean_c, mean_s, rtol=0, atol=1e-10 * np.abs(mean_c).max())
    assert np.allclose(std**2, np.clip(np.diag(cov), 0, None), rtol=1e-8, atol=1e-10)
    prior_mean, prior_std = cls(net).predict(Xt, return_std=True)
    _, prior_cov = cls(net).predict(Xt, return_cov=True)
    assert np.allclose(prior_std**2, np.diag(prior_cov), rtol=1e-12)


def test_pdlt_num_threads(monkeypatch) -> None:
    """PDLT_NUM_THREADS decides the walk's threads; torch's setting is restored after."""
    import torch

    from pdlt._threads import threads_for, walk_threads

    before = torch.get_num_threads()
    assert threads_for(100) == 1
    monkeypatch.setenv("PDLT_NUM_THREADS", "2")
    with walk_threads(100) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    net = pdlt.MLP("relu", depth=3, width=8, input_dim=4)
    assert np.isfinite(pdlt.kernel(net, _inputs(10)).K).all()
    monkeypatch.setenv("PDLT_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="PDLT_NUM_THREADS"):
        pdlt.kernel(net, _inputs(10))


def test_ensembles_run_on_pdlt_threads(monkeypatch) -> None:
    """measure and empirical_ntk run on pdlt's thread choice (one thread for small chunks,
    PDLT_NUM_THREADS when set) and leave torch's setting as it was."""
    import torch

    import pdlt._threads as threads

    seen: list[int] = []
    real = threads.threads_for

    def spy(entries: int) -> int:
        seen.append(entries)
        return real(entries)

    monkeypatch.setattr(threads, "threads_for", spy)
    before = torch.get_num_threads()
    net = pdlt.MLP("tanh", depth=3, width=16, input_dim=4)
    x = np.random.default_rng(1).normal(size=(5, 4))
    pdlt.measure(net, x, n_networks=8, seed=0, progress=False)
    pdlt.empirical_ntk(net, x, n_networks=1, seed=0)
    assert torch.get_num_threads() == before
    # one decision per call, sized by networks × width × inputs of a chunk
    assert seen == [8 * 16 * 5, 1 * 16 * 5]
    monkeypatch.setenv("PDLT_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="PDLT_NUM_THREADS"):
        pdlt.measure(net, x, n_networks=8, seed=0, progress=False)
