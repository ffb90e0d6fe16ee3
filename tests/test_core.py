"""Cross-route tests of the theory core: two routes to one number must agree.

* the four-point vertex of the NTK-fluctuation walk equals :func:`pdlt.four_point_vertex`;
* the kernel map's Jacobian from first derivatives (Price's theorem and the scaling identity)
  equals the book's Stein form (C_W/2)⟨∂∂(σσ)⟩ (eq. 4.119's ⟨σσ(zz − K)⟩), layer by layer;
* the multi-input 1/n correction at N = 1 equals the single-input recursions of book eq.
  5.109–5.110, written here independently on 1-D quadrature;
* every API that classifies an activation gives one answer (built-ins and user callables).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pdlt
from pdlt.gaussian import LayerMoments, expect, input_pairs

X3 = np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.5], [0.0, 0.4, 1.2]])
ACTS = [("tanh", 1.0, 0.1), ("relu", 2.0, 0.1), ("gelu", 1.9, 0.2), ("elu", 1.0, 0.1)]


@pytest.mark.parametrize("name, C_W, C_b", ACTS)
@pytest.mark.parametrize("N", [2, 3])
def test_fluctuation_walk_vertex_equals_four_point_vertex(name, C_W, C_b, N):
    net = pdlt.MLP(name, 4, 32, 3, C_W=C_W, C_b=C_b)
    V_fl = pdlt.ntk_fluctuations(net, X3[:N]).V
    V = pdlt.four_point_vertex(net, X3[:N]).V
    np.testing.assert_allclose(V_fl, V, rtol=0, atol=1e-12 * np.abs(V).max())


@pytest.mark.parametrize("name, C_W, C_b", ACTS)
def test_jacobian_equals_stein_projection(name, C_W, C_b):
    """J_{(ab),(cd)} = (C_W/2)(2 − δ_cd)⟨∂_c∂_d(σ_aσ_b)⟩: the Jacobian of the vertex recursion
    (first derivatives of σ, Price) against the 2-D kink-split Stein projection (σ itself), on
    the layer-2 kernel of three inputs. Both are exact routes: bar 1e-9 relative."""
    from pdlt.theory.vertex import kernel_jacobian

    net = pdlt.MLP(name, 3, 32, 3, C_W=C_W, C_b=C_b)
    K = torch.as_tensor(pdlt.kernel(net, X3).K[1])
    m = LayerMoments(net.activation, K)
    J = kernel_jacobian(m.derivatives, C_W)
    P = m.fluctuation_terms["P_ss"]
    pairs, _ = input_pairs(3)
    a, b = pairs[:, 0], pairs[:, 1]
    c, d = pairs[:, 0], pairs[:, 1]
    stein = (C_W / 2) * (2 - (c == d).double())[None, :] * P[a[:, None], b[:, None], c, d]
    np.testing.assert_allclose(J.numpy(), stein.numpy(), rtol=0, atol=1e-9 * float(J.abs().max()))


def _single_input_recursion(act, C_b, C_W, K1, depth):
    """Book eq. 5.108–5.110 for one input, on 1-D quadrature: K' = C_b + C_W g(K),
    V' = C_W²(⟨σ⁴⟩ − g²) + χ_∥² V, G1' = χ_∥ G1 + ½C_W g''(K) V, with g'' by a central
    difference of g (an independent route to the second derivative)."""
    act = pdlt.activation(act)

    def E(f, K):
        return float(expect(f, torch.tensor([K], dtype=torch.float64), kinks=act.kinks)[0])

    def g(K):
        return E(lambda z: act(z) ** 2, K)

    K, V, G1 = [K1], [0.0], [0.0]
    for _ in range(depth - 1):
        k = K[-1]
        gk = g(k)
        chi = C_W * E(lambda z: z * act(z) * act.d1(z), k) / k
        h = 1e-3 * k
        gpp = (g(k + h) - 2 * gk + g(k - h)) / h**2
        K.append(C_b + C_W * gk)
        V.append(C_W**2 * (E(lambda z: act(z) ** 4, k) - gk**2) + chi**2 * V[-1])
        G1.append(chi * G1[-1] + 0.5 * C_W * gpp * V[-2])
    return np.array(K), np.array(V), np.array(G1)


@pytest.mark.parametrize("name, C_W, C_b", ACTS)
def test_kernel_correction_single_input_paths(name, C_W, C_b):
    """kernel_correction at N = 1 equals (i) the diagonal of the N = 3 run (each input's own
    statistics do not depend on the others) and (ii) the single-input recursions of eq.
    5.108–5.110 on 1-D quadrature (bar: the central difference's O(h²) ~ 1e-6 relative)."""
    net = pdlt.MLP(name, 6, 32, 3, C_W=C_W, C_b=C_b)
    many = pdlt.kernel_correction(net, X3)
    _, index = input_pairs(3)
    for a in range(3):
        one = pdlt.kernel_correction(net, X3[a : a + 1])
        # K1's scale is H:V, V up to max|V|: the finite-difference H is good to ~1e-8 of it
        atol = 1e-9 * np.abs(many.V_pairs).max()
        np.testing.assert_allclose(one.K1[:, 0, 0], many.K1[:, a, a], rtol=1e-9, atol=atol)
        np.testing.assert_allclose(
            one.V_pairs[:, 0, 0], many.V_pairs[:, index[a, a], index[a, a]], rtol=1e-9, atol=1e-12
        )
    K1 = float(one.K[0, 0, 0])
    K, V, G1 = _single_input_recursion(name, C_b, C_W, K1, 6)
    np.testing.assert_allclose(one.K[:, 0, 0], K, rtol=1e-11)
    np.testing.assert_allclose(one.V_pairs[:, 0, 0], V, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(one.K1[:, 0, 0], G1, rtol=1e-5, atol=1e-7 * np.abs(V).max())


# ---------------------------------------------------------------------------------------------
# one classifier


def _elu(z):
    return torch.where(z >= 0, z, torch.expm1(torch.clamp(z, max=0.0)))


CLASSES = [
    ("relu", "scale-invariant"),
    ("leaky_relu", "scale-invariant"),
    ("linear", "scale-invariant"),
    ("tanh", "K*=0"),
    ("sin", "K*=0"),
    ("erf", "K*=0"),
    ("elu", "K*=0"),
    ("selu", "K*=0"),
    ("gelu", "half-stable"),
    ("swish", "half-stable"),
    ("sigmoid", "none"),
    ("softplus", "none"),
    ("cos", "none"),
    (lambda z: torch.relu(z), "scale-invariant"),
    (lambda z: torch.tanh(z), "K*=0"),
    (pdlt.activation(_elu, kinks=(0.0,)), "K*=0"),
]


@pytest.mark.parametrize("spec, klass", CLASSES, ids=lambda v: v if isinstance(v, str) else "fn")
def test_one_classifier(spec, klass):
    """universality_class, critical_point, learning_rates and init.critical_ agree on the class
    and the critical point, for built-ins and the same activations written as callables."""
    cp = pdlt.critical_point(spec)
    assert cp.universality_class == klass
    assert pdlt.universality_class(spec) == klass
    cw = cp.C_W if cp.exists else 1.0
    lr = pdlt.learning_rates(spec, 5, C_W=cw, C_b=cp.C_b or 0.0)
    assert lr.universality_class == klass
    assert lr.method == ("book" if klass in ("scale-invariant", "K*=0") else "numerical")
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    if cp.exists:
        init = pdlt.init.critical_(model, spec)
        assert init.universality_class == klass
        assert (init.C_W, init.C_b) == (cp.C_W, cp.C_b)
    else:
        with pytest.raises(ValueError, match="no critical initialization"):
            pdlt.init.critical_(model, spec)


def test_callables_match_builtins():
    """A ReLU, a tanh and an ELU written as callables give the built-ins' critical points and
    kernels (a scale-invariant callable gets the family's closed forms)."""
    for fn, name in ((lambda z: torch.relu(z), "relu"), (torch.tanh, "tanh"), (_elu, "elu")):
        user = pdlt.activation(fn, kinks=(0.0,) if name == "elu" else ())
        a, b = pdlt.critical_point(user), pdlt.critical_point(name)
        assert a.C_W == pytest.approx(b.C_W, rel=1e-9) and a.C_b == pytest.approx(b.C_b, abs=1e-12)
        assert a.p_perp == pytest.approx(b.p_perp, rel=1e-6)
        net_u = pdlt.MLP(user, 5, 16, 3, C_W=b.C_W, C_b=0.1)
        net_b = pdlt.MLP(name, 5, 16, 3, C_W=b.C_W, C_b=0.1)
        np.testing.assert_allclose(pdlt.kernel(net_u, X3).K, pdlt.kernel(net_b, X3).K, rtol=1e-10)
    assert pdlt.activation(lambda z: torch.relu(z)).homogeneous == (1.0, 0.0)


def test_kinked_k_zero_class_exponents():
    """ELU at criticality (C_W = 1): F(K) − K ≈ −√(2/π) K^{3/2}, χ_⊥ ≈ 1 − √(2K/π), hence
    K^{(ℓ)} ≈ 2π/ℓ² and p_⊥ = 2 (derived in classes.py's docstring); checked against the kernel
    recursion itself: ℓ(1 − χ_⊥^{(ℓ)}) → p_⊥ (within 3 % at ℓ = 400, the O(ℓ^{-1/2}) drift)."""
    cp = pdlt.critical_point("elu")
    A, p = cp.kink_power
    # fitted at K = 1e-7, 1e-6: the next order is O(K^{1/2}) relative (~1e-3, times its
    # coefficient), so a 1 % bar on the amplitudes
    assert p == pytest.approx(1.5, abs=2e-3) and A == pytest.approx(
        -math.sqrt(2 / math.pi), rel=1e-2
    )
    assert cp.p_perp == pytest.approx(2.0, rel=1e-2)
    net = pdlt.MLP("elu", 400, 8, 1, C_W=cp.C_W, C_b=0.0)
    crit = pdlt.ntk_criticality(net, [[1.0]])
    assert 400 * (1 - crit.chi_perp[-1, 0]) == pytest.approx(cp.p_perp, rel=0.03)
    assert crit.regime == "critical"
    lr = pdlt.learning_rates("elu", 10)
    assert lr.method == "book" and lr.lambda_b[-1] == pytest.approx(
        10 ** (cp.p_perp - 1) / 10**cp.p_perp
    )


def test_ntk_criticality_deep_networks_regression():
    """Issue 15 item 2: past depth ~334 exploding gradients were called "critical" because κ was
    compared at ℓ = L + (D − L)/2 and D instead of D/2 and D. The gradient product of tanh at
    C_W = 1.5 over 340 layers is ~1e51: exploding; C_W = 0.8, C_b = 0.1 at depth 1000 vanishes;
    the K*=0 critical point stays critical at depth 500."""
    x = np.ones((1, 4))
    assert pdlt.ntk_criticality(pdlt.MLP("tanh", 340, 8, 4, C_W=1.5), x).regime == "exploding"
    net = pdlt.MLP("tanh", 1000, 8, 4, C_W=0.8, C_b=0.1)
    assert pdlt.ntk_criticality(net, x).regime == "vanishing"
    assert pdlt.ntk_criticality(pdlt.MLP("tanh", 500, 8, 4, C_W=1.0), x).regime == "critical"
