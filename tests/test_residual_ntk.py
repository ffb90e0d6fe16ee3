"""NTK fluctuations D, F, A, B (one and several inputs) and dNTK statistics P, Q (one input) of
residual MLPs (each neuron's path through the skips, pdlt.theory.residual_ntk and pdlt.theory.dntk): the
γ → 0 limit is the book's plain recursion, several inputs restrict to one, layer 2 is exact at O(1/n_1), and Monte Carlo on real torch networks at
two widths (slow).

Tolerances as in tests/test_ntk_mc.py: layer 2 is exact at O(1/n_1) (|z| ≤ 4.5 over ≤ 8
entries); deeper layers at each width within pdlt.agreement (4 SE + 2(ℓ/n)·|theory|, the
neglected O(1/n²) of a 1/n statistic), and the Richardson extrapolation 2X(2n) − X(n) within
4 SE + 2(ℓ/n)²|theory|."""

from __future__ import annotations

import numpy as np
import pytest

import pdlt
from pdlt.compare import agreement

X1 = np.array([[1.0, -0.4]])
STATS = ("A", "B", "D", "F")


def _diag(t: np.ndarray) -> np.ndarray:
    return t[:, 0, 0, 0, 0]


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_vanishing_skip_is_the_plain_recursion(act):
    """γ = 1e-300 on every layer runs the residual path recursion (every term of the derivation,
    with the path cut at each layer) and must give the plain recursion of the book (§8.3–8.4),
    computed by a different formula, to round-off: C_b, λ's ≠ 1 so that no term vanishes."""
    kw = dict(C_W=1.3, C_b=0.2, lambda_b=0.6, lambda_W=1.4)
    plain = pdlt.MLP(act, 5, 16, 2, output_dim=16, **kw)
    res = pdlt.MLP(act, 5, 16, 2, output_dim=16, skip=1e-300, **kw)
    assert res.residual
    a, b = pdlt.ntk_fluctuations(plain, X1), pdlt.ntk_fluctuations(res, X1)
    for s in STATS:
        ref = getattr(a, s)
        assert np.abs(ref[1:]).min() > 1e-4  # every statistic is nonzero past layer 1
        assert np.allclose(getattr(b, s), ref, rtol=1e-12, atol=1e-14), s


def test_residual_layers_after_plain_ones_keep_the_plain_prefix():
    """Skips only on the last two layers: layers 1–4 are the plain network's to round-off,
    layers 5–6 differ."""
    kw = dict(C_W=1.0, C_b=0.1)
    plain = pdlt.MLP("tanh", 6, 16, 2, output_dim=16, **kw)
    res = pdlt.MLP("tanh", 6, 16, 2, output_dim=16, skip=[0, 0, 0, 0, 0.5, 0.5], **kw)
    a, b = pdlt.ntk_fluctuations(plain, X1), pdlt.ntk_fluctuations(res, X1)
    for s in STATS:
        assert np.allclose(getattr(b, s)[:4], getattr(a, s)[:4], rtol=1e-12, atol=1e-14), s
        assert not np.allclose(getattr(b, s)[4:], getattr(a, s)[4:], rtol=1e-3), s


@pytest.mark.parametrize("name", ["relu", "tanh", "gelu", "elu"])
def test_path_slot_covariances_agree_with_the_other_engines(name):
    """The cross-layer covariances of the NTK bookkeeping (σσ and σ'σ' slots, relu family by
    truncated moments, others by cubature) against the vertex's four-point engine (σσ·σσ, two
    inputs) and the one-input 2-D kink-split rule (every slot combination, on the diagonal)."""
    import torch

    from pdlt.gaussian import LayerMoments
    from pdlt.theory.residual_ntk import path_expectations, path_slot_covariances
    from pdlt.theory.vertex import path_covariance

    act = pdlt.activation(name)
    pK = torch.tensor([[[0.5, 0.2], [0.2, 0.7]], [[1.0, 0.4], [0.4, 0.9]]], dtype=torch.float64)
    pg = torch.tensor([0.8, 0.5], dtype=torch.float64)
    K = torch.tensor([[1.7, 0.6], [0.6, 1.2]], dtype=torch.float64)
    mine = path_slot_covariances(act, pK, pg, K, 1e-10)
    ss = [LayerMoments(act, k).ss[[0, 0, 1], [0, 1, 1]] for k in pK]
    ref = path_covariance(act, pK, pg, torch.stack(ss), K, ss[0] * 0 + LayerMoments(act, K).ss[
        [0, 0, 1], [0, 1, 1]], 1e-10)  # fmt: skip
    tol = 1e-3 if name == "elu" else 1e-7  # elu: kinked cubature on 4 distinct variables
    torch.testing.assert_close(mine["ss"], ref, rtol=tol, atol=tol * 1e-2)
    for a, p in ((0, 0), (1, 2)):  # input a, its pair index
        E = path_expectations(
            act, pK[:, a : a + 1, a : a + 1], pg, K[a, a],
            [(x, y) for x in ("ss", "dd", "1") for y in ("ss", "dd", "1")],
        )  # fmt: skip
        for x, y in ((xx, yy) for xx in ("ss", "dd") for yy in ("ss", "dd")):
            cov = E[(x, y)] - E[(x, "1")] * E[("1", y)]
            key = x[0] + y[0]
            torch.testing.assert_close(mine[key][:, p, p], cov, rtol=1e-8, atol=1e-11)


def test_multi_input_residual_dntk_is_refused():
    net = pdlt.MLP("relu", 3, 8, 2, skip=0.5, C_W=1.5)
    with pytest.raises(NotImplementedError, match="at most 1 input"):
        pdlt.dntk(net, np.array([[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(NotImplementedError, match="residual"):
        pdlt.ntk_correction(net, X1)
    with pytest.raises(ValueError, match="at most 8"):
        pdlt.ntk_fluctuations(net, np.ones((9, 2)))


X3 = np.array([[1.0, -0.4], [0.3, 0.9], [-0.7, 0.2]])
KW = dict(C_W=1.3, C_b=0.2, lambda_b=0.6, lambda_W=1.4)


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_several_inputs_restrict_to_one_input(act):
    """Three inputs, per-layer γ (0.7, 0.5, plain, 0.6) with C_b, λ's ≠ 1: each input's
    entries of D, F, A, B equal the one-input recursion on that input (≲1e-11 measured), and
    the pair-exchange symmetries hold (A, B, F: (ab)(cd) ↔ (cd)(ab); D: a ↔ b, c ↔ d)."""
    net = pdlt.MLP(act, 5, 16, 2, output_dim=16, skip=[0, 0.7, 0.5, 0, 0.6], **KW)
    fl = pdlt.ntk_fluctuations(net, X3)
    for a in range(3):
        one = pdlt.ntk_fluctuations(net, X3[a : a + 1])
        for s in STATS:
            ref = _diag(getattr(one, s))
            assert np.allclose(getattr(fl, s)[:, a, a, a, a], ref, rtol=1e-10, atol=1e-13), s
    for s in ("A", "B", "F"):
        t = getattr(fl, s)
        assert np.allclose(t, t.transpose(0, 3, 4, 1, 2), rtol=1e-12, atol=1e-13), s
    assert np.allclose(fl.D, fl.D.transpose(0, 2, 1, 3, 4), rtol=1e-12, atol=1e-13)
    assert np.allclose(fl.D, fl.D.transpose(0, 1, 2, 4, 3), rtol=1e-12, atol=1e-13)
    assert np.abs(fl.F[1:, 0, 1, 2, 0]).min() > 1e-3  # the cross-input entries are not trivial


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_vanishing_skip_several_inputs_is_the_plain_recursion(act):
    """γ = 1e-300 on three inputs: the residual path recursion over input pairs must give the
    book's plain multi-input recursion (§8.3–8.4, a different formula) to round-off."""
    a = pdlt.ntk_fluctuations(pdlt.MLP(act, 5, 16, 2, output_dim=16, **KW), X3)
    b = pdlt.ntk_fluctuations(pdlt.MLP(act, 5, 16, 2, output_dim=16, skip=1e-300, **KW), X3)
    for s in STATS:
        ref = getattr(a, s)
        assert np.allclose(getattr(b, s), ref, rtol=1e-11, atol=1e-13 * np.abs(ref).max()), s


def _two_inputs(dim: int, cosine: float = 0.6) -> np.ndarray:
    """Two inputs of equal norm √dim at the given cosine."""
    u = np.zeros(dim)
    v = np.zeros(dim)
    u[0], v[0], v[1] = 1.0, cosine, np.sqrt(1 - cosine**2)
    return np.sqrt(dim) * np.stack([u, v])


def _rotated_pair(x: np.ndarray, cosine: float) -> np.ndarray:
    """x and x turned by arccos(cosine) in its first two coordinates (same norm)."""
    c, s = cosine, np.sqrt(1 - cosine**2)
    y = x.copy()
    y[0], y[1] = c * x[0] - s * x[1], s * x[0] + c * x[1]
    return np.stack([x, y])


@pytest.mark.parametrize("act,C_W", [("relu", 1.5), ("tanh", 0.75)])
def test_residual_layer_two_is_exact_two_inputs(act, C_W):
    """Two inputs at cosine 0.6, input_dim = width so layer 2 is residual (γ = 0.5): every
    entry of D, F, A, B of layer 2 (the first-step skip terms with their input indices: G⁻¹ε,
    s_{c'c}, Θ_acΘ_bd(D_ab + D_cd), K P_X K) is exact at O(1/n_1) at any width."""
    for width in (8, 24):
        net = pdlt.MLP(act, 2, width, width, output_dim=width, C_W=C_W, C_b=0.1, skip=0.5)
        x = _two_inputs(width)
        th = pdlt.ntk_fluctuations(net, x)
        ms = pdlt.measure(
            net, x, 4000, seed=width + 1, statistics=("ntk_fluctuations",), dtype="float64"
        )
        for s in STATS:
            t, m, e = (getattr(o, k)[1] for o, k in ((th, s), (ms, s), (ms, s + "_err")))
            assert (np.abs(m - t) < 4.5 * e).all(), (act, width, s, t, m, e)


def test_deep_residual_path_cut(monkeypatch):
    """Depth 30 at γ = 0.3: the path drops layers with |g| < 1e-13 (from ℓ ≈ 27; a dropped
    layer's s, u, t, σ'² become their means in the forms of F, P and Q). B, F, P, Q equal the
    uncut recursion to ~1e-10; A, D stay finite and A/Θ² grows about linearly."""
    import pdlt.theory.vertex as vertex

    cp = pdlt.critical_point("relu", skip=0.3)
    net = pdlt.MLP("relu", 30, 64, 2, output_dim=64, C_W=cp.C_W, C_b=cp.C_b, skip=0.3)
    fl = pdlt.ntk_fluctuations(net, X1)
    cut = pdlt.dntk(net, X1)
    monkeypatch.setattr(vertex, "_PATH_CUTOFF", 0.0)
    full = pdlt.dntk(net, X1)
    for s in ("B", "F", "P", "Q"):
        assert np.allclose(getattr(cut, s), getattr(full, s), rtol=1e-10, atol=0), s
    assert np.allclose(cut.B, fl.B, rtol=1e-12) and np.isfinite(fl.D).all()
    r = fl.normalized(width=1)["A/Theta^2"][:, 0]
    slope = np.diff(r[10:])
    assert (slope > 0).all() and slope.max() / slope.min() < 1.5


@pytest.mark.parametrize("act,C_W", [("relu", 1.5), ("tanh", 0.75), ("gelu", 1.2)])
def test_residual_layer_two_is_exact_at_two_widths(act, C_W):
    """input_dim = width, so layer 2 is residual (γ = 0.5): z^{(1)} is exactly Gaussian and the
    first-step skip terms (2γ²C_WΘ²⟨σ'²⟩ in B, γ²K²⟨X''⟩ in D, the γW σ'Ĥ cross term in F) are
    exact at O(1/n_1) at any width."""
    for width in (8, 24):
        net = pdlt.MLP(act, 2, width, width, output_dim=width, C_W=C_W, C_b=0.1, skip=0.5)
        x = np.linspace(-1.0, 1.2, width)[None, :]
        th = pdlt.ntk_fluctuations(net, x)
        ms = pdlt.measure(
            net, x, 3000, seed=width, statistics=("ntk_fluctuations",), dtype="float64"
        )
        for s in STATS:
            t, m, e = (_diag(getattr(o, k))[1] for o, k in ((th, s), (ms, s), (ms, s + "_err")))
            assert abs(m - t) < 4.5 * e, (act, width, s, t, m, e)


def _measure(net_of, x, widths, n_networks, seed):
    th = pdlt.ntk_fluctuations(net_of(widths[0]), x)
    ms = [
        pdlt.measure(
            net_of(w),
            x,
            n_networks,
            seed=seed + w,
            statistics=("ntk_fluctuations",),
            dtype="float64",
        )  # fmt: skip
        for w in widths
    ]
    return th, ms


def _check_two_widths(net_of, x, widths, n_networks, seed=0):
    """At each width: pdlt.agreement (4 SE + 2(ℓ/n)·scale). Extrapolated 2X(2n) − X(n): every
    entry within 4 SE + 2(ℓ/n)²|theory|. Returns the theory and the measurements."""
    th, ms = _measure(net_of, x, widths, n_networks, seed)
    for w, m in zip(widths, ms, strict=True):
        table = pdlt.compare(pdlt.ntk_fluctuations(net_of(w), x), m, statistics=STATS)
        ok = agreement(table, net_of(w))
        assert ok.all(), (w, table[~ok])
    ell = np.arange(1, th.A.shape[0] + 1).reshape(-1, 1, 1, 1, 1)
    for s in STATS:
        t = getattr(th, s)
        (a, b), (ea, eb) = ([getattr(m, k) for m in ms] for k in (s, s + "_err"))
        ext, err = 2 * b - a, np.sqrt(4 * eb**2 + ea**2)
        bound = 4 * err + 2 * (ell / widths[0]) ** 2 * np.abs(t) + 1e-12
        assert (np.abs(ext - t) <= bound).all(), (s, t, a, b, ext, err)
    return th, ms


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_critical_residual_mc_two_widths(act):
    """γ = 0.5 at the residual critical point, depth 5, one input, n = 32 and 64, 20000
    networks each. For ReLU the per-neuron path terms carry A and D: without the cross-layer
    covariances A^{(5)} would be 159 instead of 282 (measured ≈ 282 ± 11 extrapolated)."""
    cp = pdlt.critical_point(act, skip=0.5)

    def net_of(w):
        return pdlt.MLP(act, 5, w, 1, output_dim=w, C_W=cp.C_W, C_b=cp.C_b, skip=0.5)

    th, ms = _check_two_widths(net_of, [[1.0]], (32, 64), 20000, seed=5)
    if act == "relu":  # the path terms are not small: A without them is 0.56 × theory
        a32, a64 = (_diag(m.A)[-1] for m in ms)
        assert abs(2 * a64 - a32 - _diag(th.A)[-1]) < 0.2 * _diag(th.A)[-1]


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_critical_residual_two_inputs_mc_two_widths(act):
    """Two inputs at cosine 0.6, γ = 0.5 at the residual critical point, depth 5, n = 32 and
    64, 20000 networks each (~12 s per activation): all 16 entries of D, F, A, B per layer.
    Measured (extrapolated, in SE): max |z| ≤ 2.3; without the cross-layer covariances of
    the χ, φ_b bookkeeping A and D were off by 14 and 11 SE (ReLU), without the cross-layer
    σσ'·σσ' functions of the F forms F was off by 9 SE (both activations)."""
    cp = pdlt.critical_point(act, skip=0.5)

    def net_of(w):
        return pdlt.MLP(act, 5, w, 2, output_dim=w, C_W=cp.C_W, C_b=cp.C_b, skip=0.5)

    _check_two_widths(net_of, _two_inputs(2), (32, 64), 20000, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_three_inputs_mc_two_widths(act):
    """Three generic inputs (every index pattern, all distinct included: 81 entries per
    statistic and layer), γ = 0.5 at the residual critical point with λ_W = 1.3, λ_b = 0.5,
    depth 4, n = 32 and 64, 10000 networks each (~8 s per activation). Measured: extrapolated
    max |z| 2.8 (relu D), 2.3 (tanh D, F)."""
    cp = pdlt.critical_point(act, skip=0.5)
    x = np.array([[1.0, 0.0, 0.2], [0.6, 0.8, -0.3], [-0.2, 0.5, 0.9]])

    def net_of(w):
        return pdlt.MLP(
            act, 4, w, 3, output_dim=w, C_W=cp.C_W, C_b=cp.C_b, skip=0.5, lambda_W=1.3,
            lambda_b=0.5,
        )  # fmt: skip

    _check_two_widths(net_of, x, (32, 64), 10000, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "act,inputs", [("relu", 1), ("tanh", 1), ("gelu", 1), ("gelu", 2)]
)  # fmt: skip
def test_mixed_skips_mc_two_widths(act, inputs):
    """Per-layer γ = (0.5, 0.7, plain, 0.6, plain output), C_b = 0.1, λ_b = 0.6, λ_W = 1.3,
    C_W = 0.8 (off criticality), n = 32 and 64, 20000 networks each; one input, and (gelu) two
    at cosine 0.6 (every entry; relu and tanh two-input pass as well, ~15 s each). At a larger
    input norm (|x|²/n_0 = 1 instead of 0.58) gelu's per-width deviation at n = 32 exceeds
    2(ℓ/n)|theory| (B^{(6)}: 1.26 measured vs 0.86, then 1.07, 0.95, 0.90 at n = 64, 128,
    256: an O(1/n²) remainder, not a bias of the O(1/n) theory)."""
    x = X1 if inputs == 1 else _rotated_pair(X1[0], 0.6)

    def net_of(w):
        return pdlt.MLP(
            act, 6, w, 2, output_dim=2, C_W=0.8, C_b=0.1, lambda_b=0.6, lambda_W=1.3,
            skip=[0, 0.5, 0.7, 0, 0.6, 0],
        )  # fmt: skip

    _check_two_widths(net_of, x, (32, 64), 20000, seed=100)


# --------------------------------------------------------------------------------------------
# the dNTK (book ch. 11) of residual MLPs

DSTATS = ("P", "Q")


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_dntk_vanishing_skip_is_the_plain_recursion(act):
    """γ = 1e-300 runs the residual dNTK path recursion; it must be the book's eq. 11.49, 11.52
    (a different formula) to round-off."""
    kw = dict(C_W=1.3, C_b=0.2, lambda_b=0.6, lambda_W=1.4)
    a = pdlt.dntk(pdlt.MLP(act, 5, 16, 2, output_dim=16, **kw), X1)
    b = pdlt.dntk(pdlt.MLP(act, 5, 16, 2, output_dim=16, skip=1e-300, **kw), X1)
    assert np.abs(a.Q[1:]).min() > 1e-3
    for s in DSTATS:
        assert np.allclose(getattr(b, s), getattr(a, s), rtol=1e-12, atol=1e-14), s


@pytest.mark.parametrize("act,C_W", [("tanh", 0.75), ("gelu", 1.2)])
def test_residual_dntk_layer_two_is_exact(act, C_W):
    """input_dim = width so layer 2 is residual (γ = 0.5): P, Q of layer 2 are exact at O(1/n_1)
    (the first-step skip terms γλ_WΘ s, γC_WΘ² σ'σ'' in κ; C_Wγ²Θ² σσ'' in p)."""
    for width in (8, 24):
        net = pdlt.MLP(act, 2, width, width, output_dim=width, C_W=C_W, C_b=0.1, skip=0.5)
        x = np.linspace(-1.0, 1.2, width)[None, :]
        th = pdlt.dntk(net, x)
        ms = pdlt.measure(net, x, 4000, seed=width, statistics=("dntk",), dtype="float64")
        for s in DSTATS:
            t, m, e = (_diag(getattr(o, k))[1] for o, k in ((th, s), (ms, s), (ms, s + "_err")))
            assert abs(m - t) < 4.5 * e, (act, width, s, t, m, e)


def _check_dntk_two_widths(net_of, x, n_networks, seed):
    """At each width within 4 SE + 2(ℓ/n)·S, the Richardson extrapolation within
    4 SE + 2(ℓ/n)²·S, S = max(|P|, |Q|) of the layer (so that a statistic that is 0 at this
    order, ReLU's P, gets the size of the layer's dNTK correlations)."""
    widths = (32, 64)
    th = pdlt.dntk(net_of(widths[0]), x)
    ms = [
        pdlt.measure(net_of(w), x, n_networks, seed=w + seed, statistics=("dntk",),
                     dtype="float64")
        for w in widths
    ]  # fmt: skip
    ell = np.arange(1, th.P.shape[0] + 1)
    S = np.maximum(np.abs(_diag(th.P)), np.abs(_diag(th.Q)))
    for s in DSTATS:
        t = _diag(getattr(th, s))
        (a, b), (ea, eb) = ([_diag(getattr(m, k)) for m in ms] for k in (s, s + "_err"))
        for v, e, w in ((a, ea, 32), (b, eb, 64)):
            assert (np.abs(v - t) <= 4 * e + 2 * (ell / w) * S + 1e-12).all(), (s, w, t, v, e)
        ext, err = 2 * b - a, np.sqrt(4 * eb**2 + ea**2)
        assert (np.abs(ext - t) <= 4 * err + 2 * (ell / 32) ** 2 * S + 1e-12).all(), (s, t, ext)


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_critical_residual_dntk_mc_two_widths(act):
    """γ = 0.5 at the residual critical point, depth 5, one input, n = 32 and 64, 8000 networks
    each (ReLU's P is 0 at this order: σ'' = 0; measured n·P falls like 1/n)."""
    cp = pdlt.critical_point(act, skip=0.5)

    def net_of(w):
        return pdlt.MLP(act, 5, w, 1, output_dim=w, C_W=cp.C_W, C_b=cp.C_b, skip=0.5)

    _check_dntk_two_widths(net_of, [[1.0]], 8000, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_mixed_skips_dntk_mc_two_widths(act):
    """Per-layer γ = (0.5, 0.7, plain, 0.6, plain output), C_b = 0.1, λ_b = 0.6, λ_W = 1.3,
    C_W = 0.8, n = 32 and 64, 8000 networks each."""

    def net_of(w):
        return pdlt.MLP(
            act, 6, w, 2, output_dim=2, C_W=0.8, C_b=0.1, lambda_b=0.6, lambda_W=1.3,
            skip=[0, 0.5, 0.7, 0, 0.6, 0],
        )  # fmt: skip

    _check_dntk_two_widths(net_of, X1, 8000, seed=3)
