"""Network m of an ensemble is a function of (seed, m) only (issue 15, items 5, 6, 13)."""

import numpy as np
import pytest
import torch

import pdlt
from pdlt.experiment.ensemble import chunk_size, draw_parameters, forward_chunks

# wide enough that 1 MiB holds fewer than 8 networks: chunks of 3, not aligned to anything
NET = pdlt.MLP("tanh", 3, 200, 2, C_W=1.5, C_b=0.1)
X = np.array([[1.0, 0.2], [0.3, -0.4], [-0.5, 0.9]])


def test_small_chunks_really_are_small():
    assert chunk_size(NET, len(X), torch.float32, 2**20) < 8


def test_measure_does_not_depend_on_chunking():
    a = pdlt.measure(NET, X, 24, seed=3)
    b = pdlt.measure(NET, X, 24, seed=3, max_memory=2**20)
    # same networks, statistics merged over different chunk boundaries: float64 round-off only
    np.testing.assert_allclose(a.K, b.K, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.K_err, b.K_err, rtol=1e-9, atol=1e-14)


def test_network_m_is_the_same_in_any_ensemble():
    first = pdlt.empirical_ntk(NET, X, 1, seed=3).H[0]
    many = pdlt.empirical_ntk(NET, X, 24, seed=3)
    assert torch.equal(first, many.H[0])
    small = pdlt.empirical_ntk(NET, X, 24, seed=3, max_memory=2**20)
    assert torch.equal(small.H, many.H)
    other = pdlt.empirical_ntk(NET, X, 2, seed=4).H[0]
    assert not torch.equal(first, other)


def test_parameters_depend_on_seed_and_index_only():
    Ws, bs = draw_parameters(NET, 7, 0, 10, torch.float64)
    Ws5, bs5 = draw_parameters(NET, 7, 5, 3, torch.float64)
    for W, W5, b, b5 in zip(Ws, Ws5, bs, bs5, strict=True):
        assert torch.equal(W[5:8], W5) and torch.equal(b[5:8], b5)
    # distinct networks are distinct draws
    assert not torch.equal(Ws[0][0], Ws[0][1])


def test_draws_have_the_spec_variances():
    # W^{(2)} entries ~ N(0, C_W/n_1): over 200 × 200 × 10 draws the sample variance has relative
    # standard error sqrt(2/4e5) = 0.0022; allow 5 of them
    Ws, bs = draw_parameters(NET, 0, 0, 10, torch.float64)
    var = Ws[1].var().item() * NET.widths[1] / NET.C_W[1]
    assert var == pytest.approx(1.0, abs=5 * (2 / Ws[1].numel()) ** 0.5)
    assert abs(Ws[1].mean().item()) < 5 * (NET.C_W[1] / NET.widths[1] / Ws[1].numel()) ** 0.5


def test_float32_networks_are_the_float64_ones_rounded():
    W32, b32 = draw_parameters(NET, 11, 0, 4, torch.float32)
    W64, b64 = draw_parameters(NET, 11, 0, 4, torch.float64)
    for a, b in zip(W32 + b32, W64 + b64, strict=True):
        assert a.dtype == torch.float32 and b.dtype == torch.float64
        assert torch.equal(a, b.to(torch.float32))
    c32 = next(forward_chunks(NET, torch.as_tensor(X), 4, 11, dtype=torch.float32))
    c64 = next(forward_chunks(NET, torch.as_tensor(X), 4, 11, dtype=torch.float64))
    # the same networks: the outputs differ by float32 arithmetic rounding only (~1e-6 relative)
    torch.testing.assert_close(c32.z[-1].double(), c64.z[-1], rtol=1e-4, atol=1e-5)


def test_measure_float32_and_float64_agree_to_rounding():
    a = pdlt.measure(NET, X, 16, seed=2, dtype="float32")
    b = pdlt.measure(NET, X, 16, seed=2, dtype="float64")
    # with different networks they would differ by ~K_err (a few percent); with the same ones
    # by float32 rounding
    assert np.abs(a.K - b.K).max() < 1e-4 * np.abs(b.K).max()
    assert np.abs(a.K - b.K).max() < 1e-2 * b.K_err.min()


def test_empirical_ntk_overflow_raises():
    with pytest.raises(FloatingPointError, match="not finite"):
        pdlt.empirical_ntk(pdlt.MLP("relu", 200, 8, 3, C_W=40.0), np.eye(3), 2)
