"""The NTK theory (book ch. 8–9) against independent routes: exact closed forms of the
scale-invariant class, an independent single-input implementation, reference tables computed by
separate code (shared/theory/02-ntk.md §8 and C3), and exact identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.gaussian import expect


@pytest.fixture(autouse=True)
def _one_thread():
    """Theory works on tensors of a few hundred nodes: one torch thread avoids the thread
    start-up and wait cost that dominates them on a loaded machine (runs after conftest's)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


X1 = np.ones((1, 4))  # |x|²/n_0 = 1
X2 = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, -1.0]])  # the two inputs of 02-ntk.md C3


# --------------------------------------------------------------------------------------------
# Θ


@pytest.mark.parametrize("act,slope", [("relu", 0.0), ("leaky_relu", 0.3), ("linear", 1.0)])
def test_scale_invariant_closed_forms(act, slope):
    """02-ntk.md §4.2: the recursions solved exactly for σ = a₊z θ(z) + a₋z θ(−z), C_b = 0,
    C_W = 1/A_2, one input with |x|²/n_0 = q, constant λ's. Quadrature accuracy ~1e-12, so
    compare at 1e-9 relative."""
    params = {"slope": slope} if act == "leaky_relu" else {}
    sigma = pdlt.activation(act, **params)
    A2, A4 = (1 + slope**2) / 2, (1 + slope**4) / 2
    lam_b, lam_W, q, L = 0.5, 1.5, 1.7, 7
    net = pdlt.MLP(sigma, L, 50, 4, C_W=1 / A2, lambda_b=lam_b, lambda_W=lam_W)
    fl = pdlt.ntk_fluctuations(net, X1 * math.sqrt(q))
    Ks = q / A2  # K* = C_W q
    theta = lam_b + lam_W * A2 * Ks
    rho, rr = lam_W * A2 * Ks / theta, A4 / A2**2
    v = 3 * rr - 1
    cA = (rr - 1) * (1 + rho) + v * rho**2
    ell = np.arange(1, L + 1, dtype=float)
    expected = {
        "Theta": theta * ell,
        "V": v * Ks**2 * (ell - 1),
        "F": rr / 2 * Ks * theta * ell * (ell - 1),
        "D": 0.5 * Ks * theta * (v * rho + rr - 1) * ell * (ell - 1),
        "B": rr * theta**2 * (ell - 1) * ell * (2 * ell - 1) / 6,
        "A": theta**2
        * ell
        * (ell - 1)
        * (2 * cA * ell - v * rho**2 + (rr - 1) * (2 * rho - 1))
        / 6,
    }
    for name, exp in expected.items():
        got = getattr(fl, name)[:, 0, 0] if name == "Theta" else getattr(fl, name)[:, 0, 0, 0, 0]
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-9 * np.abs(exp).max(), err_msg=name)
    np.testing.assert_allclose(
        pdlt.ntk(net, X1 * math.sqrt(q)).Theta[:, 0, 0], theta * ell, rtol=1e-12
    )


def test_relu_two_input_theta_is_the_arccosine_recursion():
    """Θ for two inputs from the arc-cosine closed forms (02-ntk.md §2), written out here."""
    net = pdlt.MLP("relu", 6, 64, 4, C_W=2.0, C_b=0.1, lambda_b=0.3, lambda_W=1.2)
    th = pdlt.ntk(net, X2)
    K = 0.1 + 2.0 * X2 @ X2.T / 4
    Theta = 0.3 + 1.2 * X2 @ X2.T / 4
    for ell in range(2, 7):
        norm = np.sqrt(np.outer(np.diag(K), np.diag(K)))
        cos = np.clip(K / norm, -1, 1)
        psi = np.arccos(cos)
        ss = norm / (2 * np.pi) * (np.sin(psi) + (np.pi - psi) * cos)
        dd = (np.pi - psi) / (2 * np.pi)
        K, Theta = 0.1 + 2.0 * ss, 0.3 + 1.2 * ss + 2.0 * dd * Theta
        np.testing.assert_allclose(th.Theta[ell - 1], Theta, rtol=1e-12)
        np.testing.assert_allclose(th.K[ell - 1], K, rtol=1e-12)


def test_theta_matches_kernel_and_shapes():
    net = pdlt.MLP("erf", 3, 32, 4, C_W=1.0)
    x = np.eye(4)[:3] * 2
    th = pdlt.ntk(net, x)
    assert th.Theta.shape == (3, 3, 3) and th.Theta.dtype == np.float64
    np.testing.assert_allclose(th.K, pdlt.kernel(net, x).K, rtol=1e-13)
    np.testing.assert_allclose(th.Theta, th.Theta.transpose(0, 2, 1))
    assert th.statistics == ("Theta",)
    assert len(th.to_frame()) == 3 * 6


# --------------------------------------------------------------------------------------------
# fluctuations, single input: an independent implementation of 02-ntk.md §3.4


def _single_input_recursions(C_W: float, lam_b: float, lam_W: float, L: int):
    """The compact single-input recursions of 02-ntk.md §3.4, with Gaussian derivatives by
    ⟨g'⟩ = ⟨gz⟩/K, ⟨g''⟩ = ⟨g(z² − K)⟩/K² and 1-D quadrature — a separate route from the
    library's tensor code."""
    s, d = torch.tanh, lambda z: 1 - torch.tanh(z) ** 2

    def E(f, K):
        return float(expect(f, torch.tensor([K], dtype=torch.float64))[0])

    K, Th, V, D, F, A, B = C_W, lam_b + lam_W, 0.0, 0.0, 0.0, 0.0, 0.0
    rows = [(K, Th, V, D, F, A, B)]
    for _ in range(L - 1):

        def X(z, Th=Th):
            return lam_W * s(z) ** 2 + C_W * Th * d(z) ** 2

        def dd2(g, K=K):  # ⟨g''⟩
            return E(lambda z: g(z) * (z**2 - K), K) / K**2

        chi_par = C_W / 2 * dd2(lambda z: s(z) ** 2)
        chi_perp = C_W * E(lambda z: d(z) ** 2, K)
        omega = 0.5 * dd2(X)
        s2, x_ = E(lambda z: s(z) ** 2, K), E(X, K)
        var_s2 = E(lambda z: s(z) ** 4, K) - s2**2
        cov_xs = E(lambda z: X(z) * s(z) ** 2, K) - x_ * s2
        var_x = E(lambda z: X(z) ** 2, K) - x_**2
        V, D, A = (
            C_W**2 * var_s2 + chi_par**2 * V,
            C_W * cov_xs + chi_par * (chi_perp * D + omega * V),
            var_x + chi_perp**2 * A + 2 * chi_perp * omega * D + omega**2 * V,
        )
        F = C_W**2 * Th * E(lambda z: s(z) ** 2 * d(z) ** 2, K) + chi_par**2 * F
        B = C_W**2 * Th**2 * E(lambda z: d(z) ** 4, K) + chi_perp**2 * B
        Th = lam_b + lam_W * s2 + chi_perp * Th
        K = C_W * s2
        rows.append((K, Th, V, D, F, A, B))
    return np.array(rows)


def test_tanh_single_input_against_independent_recursion():
    C_W, lam_b, lam_W, L = 1.3, 0.4, 0.9, 6  # off criticality, generic λ's
    net = pdlt.MLP("tanh", L, 40, 4, C_W=C_W, lambda_b=lam_b, lambda_W=lam_W)
    fl = pdlt.ntk_fluctuations(net, X1)
    ref = _single_input_recursions(C_W, lam_b, lam_W, L)
    got = np.stack(
        [fl.K[:, 0, 0], fl.Theta[:, 0, 0]] + [getattr(fl, s)[:, 0, 0, 0, 0] for s in "VDFAB"], 1
    )
    # both are quadratures accurate to ~1e-12; the recursions are well conditioned
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_tanh_reference_table():
    """02-ntk.md §8.2 (tanh, C_W = 1, λ = 1; computed by separate code, printed to 6 digits)."""
    net = pdlt.MLP("tanh", 10, 100, 4, C_W=1.0)
    fl = pdlt.ntk_fluctuations(net, X1)
    table = {
        "Theta": [2.323100, 2.715207, 3.139875, 3.582720, 5.913217],
        "V": [0.097524, 0.067807, 0.050147, 0.039398, 0.018589],
        "D": [-0.118597, -0.163767, -0.202927, -0.241389, -0.437020],
        "F": [0.150102, 0.209349, 0.258660, 0.306049, 0.542864],
        "A": [0.168638, 0.458826, 0.987308, 1.845171, 14.273452],
        "B": [1.366037, 3.247917, 6.106993, 10.250633, 60.231942],
    }
    layers = [1, 2, 3, 4, 9]
    for name, values in table.items():
        arr = getattr(fl, name)
        got = arr[layers, 0, 0] if name == "Theta" else arr[layers, 0, 0, 0, 0]
        np.testing.assert_allclose(got, values, atol=6e-7, err_msg=name)  # 6 printed digits
    norm = fl.normalized(width=100)
    # §8.2: normalised at ℓ = 10, n = 100
    assert norm["A/Theta^2"][-1, 0] == pytest.approx(0.00408208, abs=1e-8)
    assert norm["F/(K Theta)"][-1, 0] == pytest.approx(0.0158252, abs=1e-7)


# --------------------------------------------------------------------------------------------
# fluctuations, two inputs


def test_two_inputs_reference_values_and_symmetries():
    """Theory column of 02-ntk.md C3 (tanh, two inputs, separate code), 5 printed digits."""
    net = pdlt.MLP("tanh", 4, 32, 4, C_W=1.0)
    fl = pdlt.ntk_fluctuations(net, X2)
    refs = [
        ("V", 2, (0, 1, 0, 1), 0.13058),
        ("D", 2, (0, 1, 0, 1), 0.09412),
        ("F", 2, (0, 1, 0, 1), 0.30745),
        ("A", 2, (0, 0, 1, 1), 0.00452),
        ("B", 2, (0, 1, 1, 1), 0.59234),
        ("D", 3, (1, 1, 0, 0), -0.00873),
        ("F", 3, (1, 0, 1, 1), 0.05025),
        ("A", 3, (0, 1, 1, 1), 0.16916),
        ("B", 3, (0, 1, 1, 1), 1.85483),
        ("A", 4, (0, 0, 1, 1), 0.05370),
        ("B", 4, (0, 0, 1, 1), 2.90736),
    ]
    for name, layer, idx, value in refs:
        assert getattr(fl, name)[(layer - 1, *idx)] == pytest.approx(value, abs=6e-6), (name, idx)
    A, B, D, F = fl.A, fl.B, fl.D, fl.F
    tol = dict(rtol=1e-10, atol=1e-12)
    # A: two NTK pairs, each symmetric, exchangeable
    np.testing.assert_allclose(A, A.transpose(0, 3, 4, 1, 2), **tol)
    np.testing.assert_allclose(A, A.transpose(0, 2, 1, 3, 4), **tol)
    # D: symmetric within the NTK pair and within the preactivation pair
    np.testing.assert_allclose(D, D.transpose(0, 2, 1, 3, 4), **tol)
    np.testing.assert_allclose(D, D.transpose(0, 1, 2, 4, 3), **tol)
    # B[a,b,c,d] = E[H_ij;ac H_ij;bd]: swapping the two NTKs, or the two neurons
    np.testing.assert_allclose(B, B.transpose(0, 2, 1, 4, 3), **tol)
    np.testing.assert_allclose(B, B.transpose(0, 3, 4, 1, 2), **tol)
    np.testing.assert_allclose(F, F.transpose(0, 3, 4, 1, 2), **tol)


@pytest.mark.parametrize("act,C_W", [("tanh", 1.0), ("relu", 2.0)])
def test_two_input_diagonal_blocks_equal_single_input(act, C_W):
    """Entries with all four samples equal to δ need only input δ: they must equal the
    single-input result for δ (different quadrature: 2-D rule vs 1-D rule)."""
    net = pdlt.MLP(act, 5, 30, 4, C_W=C_W, C_b=0.05, lambda_b=0.7, lambda_W=1.1)
    two = pdlt.ntk_fluctuations(net, X2)
    for d in (0, 1):
        one = pdlt.ntk_fluctuations(net, X2[d : d + 1])
        for name in "VDFAB":
            np.testing.assert_allclose(
                getattr(two, name)[:, d, d, d, d], getattr(one, name)[:, 0, 0, 0, 0], rtol=1e-9
            )


def test_three_inputs_restrict_to_two_and_keep_symmetries():
    """N = 3 (four-point functions over three distinct inputs by cubature) restricted to two of
    the inputs is the N = 2 result (pair quadrature only); tanh, so both are ≲1e-9 accurate."""
    x3 = np.vstack([X2, [[0.5, -1.0, 1.0, 0.2]]])
    net = pdlt.MLP("tanh", 3, 32, 4, C_W=1.0, C_b=0.1, lambda_b=0.5)
    three = pdlt.ntk_fluctuations(net, x3)
    two = pdlt.ntk_fluctuations(net, x3[[0, 2]])
    sub = np.ix_(range(3), [0, 2], [0, 2], [0, 2], [0, 2])
    for name in "VDFAB":
        np.testing.assert_allclose(getattr(three, name)[sub], getattr(two, name), atol=1e-10)
    np.testing.assert_allclose(three.A, three.A.transpose(0, 3, 4, 1, 2), atol=1e-12)
    np.testing.assert_allclose(three.B, three.B.transpose(0, 3, 4, 1, 2), atol=1e-12)
    assert np.abs(three.A[2, 0, 1, 1, 2]) > 1e-4  # a genuinely three-input entry is non-trivial


def test_fluctuations_validation():
    net = pdlt.MLP("tanh", 3, 16, 4)
    with pytest.raises(ValueError, match="at most 8 inputs"):
        pdlt.ntk_fluctuations(net, np.random.default_rng(0).normal(size=(9, 4)))
    with pytest.raises(ValueError, match="parallel"):
        pdlt.ntk_fluctuations(net, np.vstack([X1[0], 2 * X1[0]]))
    with pytest.raises(ValueError, match="zero variance"):
        pdlt.ntk_fluctuations(net, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shape"):
        pdlt.ntk_fluctuations(net, np.ones((1, 3)))


# --------------------------------------------------------------------------------------------
# criticality and learning rates (ch. 9)


def test_universality_classes():
    """learning_rates reports the activation's class (the one classifier) and uses the book's
    formula where the class has one (§9.2–9.4), the numerical rule otherwise."""
    lr = pdlt.learning_rates("relu", 4)
    assert (lr.universality_class, lr.p_perp, lr.method) == ("scale-invariant", 0.0, "book")
    for name in ("tanh", "sin", "erf"):  # σ1 ≠ 0, σ2 = 0, σ3 < 0: p_⊥ = b1/a1 = 1
        lr = pdlt.learning_rates(name, 4)
        assert lr.universality_class == "K*=0" and lr.p_perp == pytest.approx(1.0, abs=1e-6)
    for name in ("gelu", "swish"):
        lr = pdlt.learning_rates(name, 4, C_W=1.9, C_b=0.2)
        assert (lr.universality_class, lr.method) == ("half-stable", "numerical")
    for name in ("sigmoid", "softplus"):
        lr = pdlt.learning_rates(name, 4, C_W=1.0)
        assert (lr.universality_class, lr.method) == ("none", "numerical")
    # σ = tanh(z) + 0.2 tanh(z)²: σ1 = 1, σ2 = 0.4, σ3 = −2: a1 = −1.88, b1 = −1.84
    lr = pdlt.learning_rates(lambda z: torch.tanh(z) + 0.2 * torch.tanh(z) ** 2, 4)
    assert lr.universality_class == "K*=0" and lr.p_perp == pytest.approx(1.84 / 1.88, rel=1e-6)


def test_learning_rates_formulas_and_depth_independence():
    lr = pdlt.learning_rates("relu", depth=8, lambda_b=2.0, lambda_W=4.0)
    assert lr.lambda_b == (0.25,) * 8 and lr.lambda_W == (0.5,) * 8
    lr = pdlt.learning_rates("tanh", depth=4)
    assert lr.lambda_b == pytest.approx((1, 1 / 2, 1 / 3, 1 / 4)) and lr.lambda_W == (1.0,) * 4
    # scale-invariant: Θ^(L) = λ̃_b + λ̃_W A_2 K* exactly, at every depth (02-ntk.md §4.2)
    for L in (3, 30, 100):
        net = pdlt.learning_rates("relu", L).apply(pdlt.MLP("relu", L, 64, 4, C_W=2.0))
        assert pdlt.ntk(net, X1).Theta[-1, 0, 0] == pytest.approx(2.0, rel=1e-12)
    # tanh: Θ^(L) → Θ_∞ = λ̃_b + λ̃_W/2 slowly (§4.3); without the scaling Θ grows ~ L/2
    with_, without = [], []
    for L in (10, 40, 120):
        base = pdlt.MLP("tanh", L, 64, 4, C_W=1.0)
        with_.append(pdlt.ntk(pdlt.learning_rates("tanh", L).apply(base), X1).Theta[-1, 0, 0])
        without.append(pdlt.ntk(base, X1).Theta[-1, 0, 0])
    assert max(with_) / min(with_) < 1.15 and 1.4 < min(with_) < 1.7
    assert without[2] / without[0] > 8  # ≈ linear growth, λ_b ℓ/2 + λ_W/2
    assert without[2] / 120 == pytest.approx(0.5, rel=0.05)


def test_learning_rates_numerical_rule_any_activation():
    """method='numerical': every layer contributes (λ̃_b + λ̃_W)/L, so Θ^(L) = λ̃_b + λ̃_W at the
    reference input norm, for any activation and C_W (here gelu off any criticality)."""
    for L in (3, 12):
        lr = pdlt.learning_rates("gelu", L, method="numerical", C_W=1.7, C_b=0.1, lambda_b=0.5)
        assert lr.method == "numerical" and lr.universality_class == "half-stable"
        net = lr.apply(pdlt.MLP("gelu", L, 32, 4, C_W=1.7, C_b=0.1))
        crit = pdlt.ntk_criticality(net, X1)
        np.testing.assert_allclose(crit.contributions[:, 0, 0], 1.5 / L, rtol=1e-8)


def test_learning_rates_validation():
    with pytest.raises(ValueError, match="needs the network's C_W"):
        pdlt.learning_rates("gelu", 10)
    with pytest.raises(ValueError, match="neither"):
        pdlt.learning_rates("swish", 10, method="book")
    with pytest.raises(ValueError, match="depth"):
        pdlt.learning_rates("tanh", 0)
    with pytest.raises(ValueError, match="method"):
        pdlt.learning_rates("tanh", 3, method="magic")
    with pytest.raises(ValueError, match="lambda_b"):
        pdlt.learning_rates("tanh", 3, lambda_b=-1.0)
    with pytest.raises(ValueError, match="unknown activation"):
        pdlt.learning_rates("nope", 3)


@pytest.mark.parametrize(
    "act,C_W,regime",
    [
        ("relu", 2.0, "critical"),
        ("relu", 1.5, "vanishing"),
        ("relu", 2.5, "exploding"),
        ("tanh", 1.0, "critical"),
        ("tanh", 0.8, "vanishing"),
        ("tanh", 1.5, "exploding"),
    ],
)
def test_ntk_criticality_regimes(act, C_W, regime):
    x = X2 if act == "relu" else X1  # two tanh inputs cost seconds of quadrature
    crit = pdlt.ntk_criticality(pdlt.MLP(act, 12, 32, 4, C_W=C_W), x)
    assert crit.regime == regime
    # the layers' contributions add up to Θ^(L): eq. 8.50 unrolled (exact identity)
    theta = pdlt.ntk(pdlt.MLP(act, 12, 32, 4, C_W=C_W), x).Theta[-1]
    np.testing.assert_allclose(crit.contributions.sum(0), theta, rtol=1e-12)
    if act == "relu":  # χ_⊥ = C_W/2 exactly for ReLU (book §5.2)
        np.testing.assert_allclose(crit.chi_perp, C_W / 2, rtol=1e-12)
        assert crit.depth_scale == (
            np.inf if C_W == 2.0 else pytest.approx(1 / abs(np.log(C_W / 2)))
        )
    assert len(crit.to_frame()) == 12


@settings(max_examples=25)
@given(
    act=st.sampled_from(["relu", "linear", "erf", "leaky_relu"]),
    depth=st.integers(1, 6),
    C_W=st.floats(0.1, 3.0),
    C_b=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 2.0),
    scale=st.floats(-3.0, 3.0),
)
def test_ntk_fuzz_finite_symmetric_psd(act, depth, C_W, C_b, lam, scale):
    """Any valid spec gives a finite, symmetric, positive semi-definite Θ (a Gram matrix of
    gradients) with the first layer exactly λ_b + λ_W x·x/n_0."""
    net = pdlt.MLP(act, depth, 8, 3, C_W=C_W, C_b=C_b, lambda_b=lam, lambda_W=1.0)
    x = np.array([[1.0, 0.5, -0.2], [0.3, -1.0, 0.8], [0.0, 0.0, 0.0]]) * scale
    Theta = pdlt.ntk(net, x).Theta
    assert np.isfinite(Theta).all()
    np.testing.assert_allclose(Theta, Theta.transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(Theta[0], lam + x @ x.T / 3, atol=1e-12)
    assert (np.linalg.eigvalsh(Theta) >= -1e-9 * np.abs(Theta).max()).all()
