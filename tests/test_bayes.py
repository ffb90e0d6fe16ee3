"""Bayesian inference at finite width (book §6.4): the O(1/n) posterior against (1) an exact
Gaussian mixture with the same V (the algebra), (2) the exact posterior of real networks
(importance-weighted ensembles, `pdlt.measure_posterior`) at several widths (the 1/n scaling).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdlt
from pdlt.gaussian import input_pairs
from pdlt.theory import bayes as B
from pdlt.theory.layers import gram, propagate
from pdlt.theory.vertex import VERTEX

NOISE = 1e-2


def task(act: str, n0: int = 6, seed: int = 1):
    """3 training and 2 test inputs with |x|² = n_0 in n_0 = 6 > N (so K^{(1)} is full rank and
    K̃ well conditioned), 2 outputs with targets of the kernel's scale."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, n0))
    x *= np.sqrt(n0) / np.linalg.norm(x, axis=1, keepdims=True)
    Y = np.array([[1.0, -0.5], [-0.8, 0.7], [0.4, 0.9]]) * (1.0 if act == "relu" else 0.4)
    return x[:3], Y, x[3:]


def net_for(act: str, width: int, depth: int = 3) -> pdlt.MLP:
    return pdlt.MLP(
        act, depth=depth, width=width, input_dim=6, output_dim=2, C_W=2.0 if act == "relu" else 1.0
    )


# --------------------------------------------------------------------------------------------
# the algebra: exact Gaussian mixture with the network's own V, antithetic, small 1/n


def test_expansion_matches_gaussian_mixture():
    """Ĝ = K + √ε Δ with Δ Gaussian of covariance V (PSD part), ε → 0: the exact mixture
    posterior (importance weights, antithetic pairs so odd orders cancel exactly) has
    (E[·|y] − zeroth)/ε → the O(1/n) coefficients. Bar: 5 batch standard errors plus the
    O(ε) remainder (ε = 1e-5 × coefficients² ≪ the bar)."""
    X, Y, Xt = task("relu")
    net = net_for("relu", 64)
    x = torch.from_numpy(np.concatenate([X, Xt]))
    Vp = propagate(net, gram(x), [VERTEX]).states[-1].V.numpy()
    lam, U = np.linalg.eigh(Vp)
    Lf = U * np.sqrt(np.clip(lam, 0, None))
    _, index = input_pairs(5)
    index = index.numpy()
    V = (Lf @ Lf.T)[index[:, :, None, None], index[None, None, :, :]]
    stats = B.prior_statistics(net, x)
    G, nA = stats.K, 3
    c = B._condition(G, nA, Y, NOISE)
    m0, m1 = B.posterior_mean(c, Y, V, 1.0, nA)
    cov0, cov1 = B.posterior_covariance(c, G, V, 1.0, nA, 2)
    ev1 = B.log_evidence_correction(c, V, 1.0, nA)
    sh1 = B.representation_shift(c, V[None], nA)[0]
    ev0 = B.gaussian_log_evidence(c, Y)
    eps, rng = 1e-5, np.random.default_rng(0)
    batches = []
    for _ in range(10):
        xi = rng.normal(size=(10000, Vp.shape[0]))
        xi = np.concatenate([xi, -xi])
        Gh = G + (np.sqrt(eps) * xi @ Lf.T)[:, index]
        GA = Gh[:, :nA, :nA] + NOISE * np.eye(nA)
        al = np.linalg.solve(GA, Y)
        logw = (
            -0.5 * np.einsum("ai,mai->m", Y, al) - np.linalg.slogdet(GA)[1] - 3 * np.log(2 * np.pi)
        )
        w = np.exp(logw - ev0)
        m = Gh[:, nA:, :nA] @ al
        S = Gh[:, nA:, nA:] - Gh[:, nA:, :nA] @ np.linalg.solve(GA, Gh[:, :nA, nA:])
        sec = np.einsum("mbc,ik->mbick", S, np.eye(2)) + np.einsum("mbi,mck->mbick", m, m)
        W = w.sum()
        mean = np.einsum("m,mbi->bi", w, m) / W
        cov = np.einsum("m,mbick->bick", w, sec) / W - np.einsum("bi,ck->bick", mean, mean)
        batches.append(
            np.concatenate(
                [
                    ((mean - m0) / eps).ravel(),
                    ((cov - cov0) / eps).ravel(),
                    ((np.einsum("m,mab->ab", w, Gh) / W - G) / eps).ravel(),
                    [np.log(W / len(w)) / eps],
                ]
            )
        )
    b = np.array(batches)
    est, se = b.mean(0), b.std(0, ddof=1) / np.sqrt(len(b))
    theory = np.concatenate([m1.ravel(), cov1.ravel(), sh1.ravel(), [ev1]])
    bar = 5 * se + 1e-3 * np.abs(theory).max()
    assert np.all(np.abs(est - theory) <= bar), (est - theory, bar)


# --------------------------------------------------------------------------------------------
# the inter-layer vertex recursion against real networks


def test_cross_vertex_matches_networks():
    """V^{(ℓ,L)} = n_{ℓ−1} Cov[Ĝ^{(ℓ)}, Ĝ^{(L)}] (CROSS_VERTEX) against 4000 ReLU networks at two
    widths. Bar: 4 standard errors (delta method over networks) + the O(1/n) relative
    remainder 3·V/n."""
    from pdlt.experiment.bayes import layer_metrics
    from pdlt.experiment.ensemble import forward_chunks

    X, _, Xt = task("relu")
    x = torch.from_numpy(np.concatenate([X, Xt])[:3])
    for width in (32, 96):
        net = net_for("relu", width, depth=4)
        cross = B.prior_statistics(net, x).V_cross
        G = torch.cat(
            [layer_metrics(net, ch.z, gram(x)) for ch in forward_chunks(net, x, 4000, 3)]
        ).numpy()
        d = G - G.mean(0)
        for ell in (2, 3):
            prod = np.einsum("mab,mcd->mabcd", d[:, ell - 1], d[:, -1]) * width
            meas, err = prod.mean(0), prod.std(0) / np.sqrt(len(prod))
            bar = 4 * err + 3 * np.abs(cross[ell - 1]).max() / width
            assert np.all(np.abs(meas - cross[ell - 1]) <= bar), (ell, width)


# --------------------------------------------------------------------------------------------
# the API


def test_finite_width_false_is_todays_regressor():
    X, Y, Xt = task("tanh")
    net = net_for("tanh", 32)
    a = pdlt.NNGPRegressor(net, noise=NOISE).fit(X, Y)
    b = pdlt.NNGPRegressor(net, noise=NOISE, finite_width=False).fit(X, Y)
    np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))
    assert a.log_evidence_ == b.log_evidence_


def test_regressor_finite_width_shapes_and_identities():
    X, Y, Xt = task("relu")
    net = net_for("relu", 128)
    reg = pdlt.NNGPRegressor(net, noise=NOISE, finite_width=True).fit(X, Y)
    mean, std = reg.predict(Xt, return_std=True)
    _, cov = reg.predict(Xt, return_cov=True)
    assert mean.shape == std.shape == (2, 2) and cov.shape == (2, 2, 2)
    np.testing.assert_allclose(std**2, np.einsum("bbi->bi", cov), rtol=1e-12)
    post = reg.predict_joint(Xt)
    np.testing.assert_allclose(post.mean, mean)
    assert np.isfinite(reg.log_evidence_)
    assert np.isclose(reg.log_evidence_, post.log_evidence[0])
    assert reg.representation_shift(layer=3).shape == (3, 3)
    assert reg.representation_shift(layer=2, X=Xt).shape == (5, 5)
    np.testing.assert_array_equal(reg.representation_shift(layer=1), 0.0)
    # wiring: changing output 2's targets moves output 1's prediction (not at infinite width)
    Y2 = Y.copy()
    Y2[:, 1] *= 2.0  # (a sign flip would not do: the posterior is even in each output)
    m2 = pdlt.NNGPRegressor(net, noise=NOISE, finite_width=True).fit(X, Y2).predict(Xt)
    g1 = pdlt.NNGPRegressor(net, noise=NOISE).fit(X, Y).predict(Xt)
    g2 = pdlt.NNGPRegressor(net, noise=NOISE).fit(X, Y2).predict(Xt)
    np.testing.assert_allclose(g1[:, 0], g2[:, 0])
    assert np.abs(m2[:, 0] - mean[:, 0]).max() > 1e-4


def test_wide_limit_is_the_gp():
    """At width → ∞ every O(1/n) term vanishes like 1/n."""
    X, Y, Xt = task("tanh")
    post = [
        pdlt.bayesian_posterior(net_for("tanh", n), X, Y, Xt, noise=NOISE) for n in (10**4, 10**6)
    ]
    d = [np.abs(p.mean - p.gp_mean).max() for p in post]
    assert d[1] < 2e-2 * d[0] + 1e-12
    np.testing.assert_allclose(post[1].mean, post[1].gp_mean, atol=1e-5)
    np.testing.assert_allclose(post[1].log_evidence[0], post[1].gp_log_evidence, atol=1e-4)


def test_measure_posterior_small_agrees_and_compares():
    """A small default-run check: width 64, 5000 ReLU networks; theory within 4 errors plus
    the O(1/n²) remainder, bounded by the 1/n effect itself × 8/n (the slow test fits it)."""
    X, Y, Xt = task("relu")
    net = net_for("relu", 64)
    ms = pdlt.measure_posterior(net, X, Y, Xt, noise=NOISE, n_networks=5000, seed=0)
    th = pdlt.bayesian_posterior(net, X, Y, Xt, noise=NOISE)
    assert ms.ess > 1000 and ms.mean.shape == (2, 2) and ms.cov.shape == (2, 2, 2, 2)
    assert set(ms.representation_shift) == {1, 2, 3}
    table = pdlt.compare(th, ms)
    assert set(table.statistic) == {"mean", "cov", "shift", "log_evidence"}
    effect = np.abs(th.mean - th.gp_mean).max()
    assert np.all(np.abs(ms.mean - th.mean) <= 4 * ms.mean_err + 8 / 64 * effect)


def test_measure_posterior_is_seeded():
    X, Y, Xt = task("relu")
    net = net_for("relu", 32)
    a = pdlt.measure_posterior(net, X, Y, Xt, noise=NOISE, n_networks=300, seed=5)
    b = pdlt.measure_posterior(net, X, Y, Xt, noise=NOISE, n_networks=300, seed=5, max_memory=2**20)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input():
    X, Y, Xt = task("relu")
    net = net_for("relu", 32)
    with pytest.raises(ValueError, match="Y must have shape"):
        pdlt.bayesian_posterior(net, X, Y[:2], Xt, noise=NOISE)
    with pytest.raises(ValueError, match="Y must have shape"):
        pdlt.measure_posterior(net, X, Y[:, :1], Xt, noise=NOISE, n_networks=10)
    with pytest.raises(ValueError, match="noise"):
        pdlt.measure_posterior(net, X, Y, Xt, noise=0.0, n_networks=10)
    with pytest.raises(ValueError, match="noise"):
        pdlt.bayesian_posterior(net, X, Y, Xt, noise=-1.0)
    with pytest.raises(ValueError, match="input_dim"):
        pdlt.bayesian_posterior(net, X[:, :3], Y, Xt, noise=NOISE)
    with pytest.raises(ValueError, match="output_dim"):
        pdlt.NNGPRegressor(net, noise=NOISE, finite_width=True).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="needs a network"):
        pdlt.NNGPRegressor(noise=NOISE, finite_width=True).fit(X, Y)
    with pytest.raises(ValueError, match="Y contains NaN"):
        pdlt.bayesian_posterior(net, X, np.full_like(Y, np.nan), Xt, noise=NOISE)
    with pytest.raises(ValueError, match="depth"):
        pdlt.bayesian_posterior(net.with_(depth=1), X, Y, Xt, noise=NOISE)
    reg = pdlt.NNGPRegressor(net, noise=NOISE).fit(X, Y)
    with pytest.raises(ValueError, match="finite_width=True"):
        reg.representation_shift(layer=2)
    with pytest.raises(ValueError, match="effective sample size"):  # far-off targets
        pdlt.measure_posterior(net, X, 30 * Y, Xt, noise=NOISE, n_networks=200)
    with pytest.warns(RuntimeWarning, match="too narrow"):
        pdlt.bayesian_posterior(net_for("relu", 4), X, Y, Xt, noise=NOISE)


# --------------------------------------------------------------------------------------------
# the 1/n scaling against real networks (slow)


def _slope(n, d, err):
    """Least-squares slope of log d against log n, weighted by d/err (relative precision)."""
    w = np.minimum(d / np.maximum(err, 1e-300), 30.0)
    return np.polyfit(np.log(n), np.log(d), 1, w=w)[0]


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_posterior_scaling_against_real_networks(act):
    """Exact posterior of 60000 real networks at three widths (2 outputs, so wiring is in; ReLU,
    whose V/K² = 10 at depth 3 is large, at 32, 64, 128, tanh at 16, 32, 64):
    |exact − GP| falls like 1/n (slope in [−1.5, −0.5]); after the 1/n correction the residual
    falls like 1/n² (slope < −1.5) or is within 3 standard errors at the widest; the same for
    the joint covariance and the representation shift of the last hidden layer."""
    X, Y, Xt = task(act)
    widths = np.array([32, 64, 128] if act == "relu" else [16, 32, 64])
    rows = []
    for n in widths:
        net = net_for(act, int(n))
        th = pdlt.bayesian_posterior(net, X, Y, Xt, noise=NOISE)
        ms = pdlt.measure_posterior(net, X, Y, Xt, noise=NOISE, n_networks=60000, seed=int(n))
        rows.append(
            {
                "mean": (ms.mean, ms.mean_err, th.gp_mean, th.mean),
                "cov": (ms.cov, ms.cov_err, th.gp_cov, th.cov),
                "shift": (ms.shift[-1], ms.shift_err[-1], 0 * th.shift[-1], th.shift[-1]),
            }
        )
    for stat in ("mean", "cov", "shift"):
        d_gp, d_1, err = [], [], []
        for r in rows:
            ex, e, gp, t1 = r[stat]
            d_gp.append(np.abs(ex - gp).max())
            d_1.append(np.abs(ex - t1).max())
            err.append(e.max())
        d_gp, d_1, err = map(np.array, (d_gp, d_1, err))
        print(act, stat, "GP residual", d_gp, "1/n residual", d_1, "MC error", err)
        assert -1.5 <= _slope(widths, d_gp, err) <= -0.5, (stat, d_gp)
        assert np.all(d_1 < d_gp), (stat, d_1, d_gp)
        assert _slope(widths, d_1, err) < -1.5 or d_1[-1] <= 3 * err[-1], (stat, d_1, err)
