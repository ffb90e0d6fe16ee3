"""pdlt.information (book App. A.3, eqs. A.66–A.67) against an independent computation: the
entropy and mutual information of the scale mixture z | Ĝ ~ N(0, Ĝ I_m), integrated by
Gauss–Laguerre quadrature over |z|² with no expansion in the fluctuations of Ĝ — for Ĝ drawn
from a known distribution (fast) and for Ĝ^{(ℓ)} = C_b + C_W Σσ²/n sampled from real networks
at two widths (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln

import pdlt
from pdlt.theory.information import Information, information


def mixture_entropy(G: np.ndarray, m: int, points: int = 3000) -> float:
    """−E log p(z) for p(z) = mean_s N(z; 0, G_s I_m), as a 1-D integral over u = |z|²:
    −∫ ρ(u) log p(u) du with ρ(u) = mean_s of the χ²_m density of u/G_s, by the trapezoid rule
    in log u (spectrally accurate for this smooth, decaying integrand)."""
    Gt = torch.as_tensor(G, dtype=torch.float64)
    lu = torch.linspace(
        math.log(float(Gt.min()) * 1e-40),
        math.log(float(Gt.max()) * 200),
        points,
        dtype=torch.float64,
    )
    u = torch.exp(lu)
    # log N(z; 0, G_s) at |z|² = u, and the χ²_m density of u: ρ_s(u) = N · u^{m/2−1} · area
    logN = -0.5 * m * torch.log(2 * math.pi * Gt)[None, :] - u[:, None] / (2 * Gt[None, :])
    log_area = math.log(math.pi) * m / 2 - gammaln(m / 2)  # dz = π^{m/2}/Γ(m/2) u^{m/2−1} du
    logp = torch.logsumexp(logN, 1) - math.log(len(G))
    log_rho = logp + log_area + (m / 2 - 1) * lu
    integrand = torch.exp(log_rho + lu) * logp  # d u = u d log u
    return float(-torch.trapezoid(integrand, lu))


def mixture_mi(G: np.ndarray, m1: int, m2: int) -> float:
    return mixture_entropy(G, m1) + mixture_entropy(G, m2) - mixture_entropy(G, m1 + m2)


@pytest.mark.parametrize("m1, m2", [(1, 1), (2, 3)])
def test_expansion_against_exact_mixture(m1, m2):
    # Ĝ = G(1 + ε) with Gaussian ε of variance v (its cumulants beyond the 2nd vanish): the
    # exact mixture MI/entropy must equal the O(v²) formulas up to O(v³)
    rng = np.random.default_rng(0)
    for v in (0.02, 0.01):
        eps = rng.standard_normal(2000)
        eps = (eps - eps.mean()) / eps.std() * math.sqrt(v)  # exact mean 0, variance v
        G = 1.7 * (1 + eps)
        mi = mixture_mi(G, m1, m2)
        assert mi == pytest.approx(m1 * m2 * v**2 / 8, rel=6 * v)
        S = mixture_entropy(G, m1 + m2)
        m = m1 + m2
        gauss = 0.5 * m * math.log(2 * math.pi * math.e * 1.7)
        assert gauss - S == pytest.approx(m * (m + 2) * v**2 / 16, rel=6 * v)


def test_information_result_and_errors():
    net = pdlt.MLP("tanh", depth=5, width=32, input_dim=2)
    info = information(net, [[1.0, 1.0]], m1=2, m2=3)
    assert isinstance(info, Information) and info.layers == (1, 2, 3, 4)  # output width 1
    assert info.mutual_information[0] == 0.0  # layer 1 is Gaussian at any width
    assert np.all(np.diff(info.mutual_information) > 0)  # grows with depth (νr grows)
    assert np.allclose(info.mutual_information, 6 * info.v**2 / 8)
    assert len(info.to_frame()) == 4
    assert pdlt.information is information
    with pytest.raises(ValueError, match="one input"):
        information(net, np.ones((2, 2)))
    with pytest.raises(ValueError, match="m1"):
        information(net, [[1.0, 1.0]], m1=0)
    with pytest.raises(TypeError, match="m2"):
        information(net, [[1.0, 1.0]], m2=1.5)
    with pytest.raises(ValueError, match="do not fit"):
        information(net, [[1.0, 1.0]], m1=20, m2=20)
    with pytest.raises(TypeError, match="pdlt.MLP"):
        information("tanh", [[1.0, 1.0]])


def sample_metric(net: pdlt.MLP, x: np.ndarray, n_networks: int, seed: int) -> np.ndarray:
    """Ĝ^{(ℓ)} = C_b + (C_W/n_{ℓ−1}) Σ_j σ(z_j^{(ℓ−1)})² of real networks, ℓ = 2 … L−1:
    (n_networks, L−2). A direct forward of independently drawn networks, float64."""
    gen = torch.Generator().manual_seed(seed)
    sig = net.activation.fn
    xt = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    out = []
    for start in range(0, n_networks, 250):
        S = min(250, n_networks - start)
        n0, n = net.widths[0], net.widths[1]
        W = torch.randn(S, n, n0, generator=gen, dtype=torch.float64) * math.sqrt(net.C_W[0] / n0)
        b = torch.randn(S, n, generator=gen, dtype=torch.float64) * math.sqrt(net.C_b[0])
        z = W @ xt + b
        Gs = []
        for ell in range(1, net.depth - 1):
            s = sig(z)
            Gs.append(net.C_b[ell] + net.C_W[ell] * (s**2).mean(1))
            W = torch.randn(S, n, n, generator=gen, dtype=torch.float64) * math.sqrt(
                net.C_W[ell] / n
            )
            b = torch.randn(S, n, generator=gen, dtype=torch.float64) * math.sqrt(net.C_b[ell])
            z = (W @ s[:, :, None])[:, :, 0] + b
        out.append(torch.stack(Gs, 1))
    return torch.cat(out).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("width", [32, 64])
def test_mutual_information_against_real_networks(width):
    torch.set_num_threads(1)
    act, depth, S = "tanh", 5, 3000
    net = pdlt.MLP(act, depth=depth, width=width, input_dim=2, C_W=1.0, C_b=0.0)
    x = np.array([[1.0, 1.0]])
    info = information(net, x, m1=1, m2=2)
    G = sample_metric(net, x, S, seed=width)
    for k, ell in enumerate(range(2, depth)):
        g = G[:, k]
        mi = mixture_mi(g, 1, 2)
        # statistical error of MI ∝ v̂²: twice the relative error of the sample variance
        d2 = (g - g.mean()) ** 2
        rel_var = d2.std() / math.sqrt(S) / d2.mean()
        th = info.mutual_information[info.layers.index(ell)]
        v = info.v[info.layers.index(ell)]
        # statistics (3σ) plus the neglected order, O(v) relative (coefficient (20 + 3m)/6 ≈ 5
        # in the book's A.71–A.72) and O(1/n) corrections to V
        tol = 3 * 2 * rel_var + 5 * v + 2 / width
        assert mi == pytest.approx(th, rel=tol), (width, ell, mi, th, tol)


def test_residual_information_uses_the_residual_vertex():
    """Residual tanh (odd σ): information runs on v = V/(nG²) of the residual vertex and metric;
    a non-odd σ (ReLU) raises, naming the third cumulant the formulas miss."""
    net = pdlt.MLP("tanh", depth=5, width=32, input_dim=2, C_W=0.75, skip=0.5)
    x = [[1.0, 1.0]]
    info = information(net, x, m1=1, m2=2)
    V = pdlt.four_point_vertex(net, x).V[:, 0, 0, 0, 0]
    G = pdlt.metric(net, x).G[:, 0, 0]
    assert np.allclose(info.v, (V / 32 / G**2)[:4], rtol=1e-12)
    assert np.all(np.diff(info.mutual_information) > 0)
    assert not np.allclose(info.v, information(net.with_(skip=0.0), x, m1=1, m2=2).v)
    with pytest.raises(NotImplementedError, match="third cumulant"):
        information(net.with_(activation="relu", C_W=1.5), x)


def _residual_layers(net: pdlt.MLP, n_networks: int, seed: int) -> torch.Tensor:
    """z^{(ℓ)} of real residual networks on the input (1, 1), float64: (S, L−1, n), ℓ < L."""
    gen = torch.Generator().manual_seed(seed)
    n, sig = net.widths[1], net.activation.fn
    out = []
    for _ in range(n_networks // 500):
        W = torch.randn(500, n, 2, generator=gen, dtype=torch.float64) * math.sqrt(net.C_W[0] / 2)
        z = W.sum(-1)  # x = (1, 1), C_b = 0
        zs = [z]
        for ell in range(1, net.depth - 1):
            W = torch.randn(500, n, n, generator=gen, dtype=torch.float64)
            z = (W @ sig(z)[:, :, None])[:, :, 0] * math.sqrt(net.C_W[ell] / n) + net.skip[ell] * z
            zs.append(z)
        out.append(torch.stack(zs, 1))
    return torch.cat(out)


@pytest.mark.slow
def test_residual_tanh_fourth_cumulants_against_real_networks():
    """What information uses for a residual net, measured on real residual tanh networks
    (γ = 0.5, C_W = 0.75) at two widths: the cross-neuron Cov(z_i², z_j²)/K² (i ≠ j; it alone
    sets I) and the single-neuron excess kurtosis /3 (which the entropy assumes equal to it)
    against v = V/(nG²) of information. Bar: 4 se (20 batches) + 2(ℓ/n)·v (the neglected
    O(1/n²), pdlt.agreement's 1/n rule)."""
    for n in (16, 32):
        net = pdlt.MLP("tanh", depth=6, width=n, input_dim=2, C_W=0.75, skip=0.5)
        info = information(net, [[1.0, 1.0]])
        Z = _residual_layers(net, 20000, seed=n)  # (S, 5, n): layers 1 … 5
        z2 = Z**2
        batches = []
        for b in z2.reshape(20, -1, *z2.shape[1:]):
            K = b.mean((0, 2))
            T = b.sum(2)
            cross = ((T**2 - (b**2).sum(2)).mean(0) / (n * (n - 1)) - K**2) / K**2
            kurt = ((b**2).mean((0, 2)) / K**2 - 3) / 3
            batches.append(torch.stack([cross, kurt]))
        B = torch.stack(batches).numpy()  # (20, 2, 5)
        mean, se = B.mean(0), B.std(0, ddof=1) / math.sqrt(20)
        ell = np.arange(1, 6)
        v = info.v[:5]
        for row in range(2):
            bar = 4 * se[row] + 2 * ell / n * v
            assert np.all(np.abs(mean[row] - v) <= bar), (n, row, mean[row], v, bar)
        assert v[-1] > 10 * se[0, -1]  # the effect is resolved, not noise
