"""User activations whose derivatives are constant (issue 15, item 4).

σ = 2z is the linear network with its weights doubled after the first layer: z^{(ℓ+1)} =
b + W·2z^{(ℓ)} has the law of b + W'z^{(ℓ)} with C_W' = 4 C_W. So every statistic of the
preactivations (K, V, K^{1}, G) must equal the linear network's with C_W^{(ℓ≥2)} multiplied by 4,
to quadrature round-off; χ_∥ = χ_⊥ = 4 C_W.
"""

import numpy as np
import pytest
import torch

import pdlt

X = np.array([[1.0, 0.3], [0.2, -0.5], [-0.7, 0.4]])
DEPTH, WIDTH = 3, 8
C_W, C_B = 0.3, 0.1


def _pair():
    doubled = pdlt.MLP(lambda z: 2 * z, DEPTH, WIDTH, 2, C_W=C_W, C_b=C_B)
    linear = pdlt.MLP("linear", DEPTH, WIDTH, 2, C_W=(C_W, 4 * C_W, 4 * C_W), C_b=C_B)
    return doubled, linear


# The user callable goes down the quadrature ladder, the built-in linear through closed forms:
# 2-point expectations agree to ~1e-12; the 3- and 4-input cubature behind V is stated to 1e-7
# relative (pdlt.gaussian4.DEFAULT_TOL) and V = ⟨σσσσ⟩ − ⟨σσ⟩⟨σσ⟩ loses a digit or so to the
# subtraction. K^{1} vanishes for a linear network, so it is compared on the scale of K (~1).
@pytest.mark.parametrize(
    "f, field, rtol, atol",
    [
        (pdlt.kernel, "K", 1e-10, 1e-12),
        (pdlt.four_point_vertex, "V", 1e-6, 1e-12),
        (pdlt.kernel_correction, "K1", 0.0, 1e-9),
        (pdlt.metric, "G", 1e-10, 1e-12),
    ],
)
def test_doubled_identity_matches_scaled_linear(f, field, rtol, atol):
    doubled, linear = _pair()
    a = np.asarray(getattr(f(doubled, X), field))
    b = np.asarray(getattr(f(linear, X), field))
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("fn", [lambda z: z, lambda z: 2 * z, lambda z: torch.clamp(z, -1, 1)])
def test_constant_derivative_callables_run_everywhere(fn):
    net = pdlt.MLP(fn, DEPTH, WIDTH, 2, C_W=1.0)
    pdlt.criticality(fn)
    for f in (pdlt.four_point_vertex, pdlt.kernel_correction, pdlt.metric):
        out = f(net, X)
        assert out is not None
    lr = pdlt.learning_rates(fn, DEPTH, method="numerical", C_W=1.0)
    assert np.isfinite(lr.lambda_b).all() and np.isfinite(lr.lambda_W).all()


def test_criticality_of_doubled_identity():
    a = pdlt.criticality(lambda z: 2 * z, C_W=0.25)
    b = pdlt.criticality("linear", C_W=1.0)
    assert a.chi_parallel == pytest.approx(b.chi_parallel, rel=1e-9)
    assert a.chi_perp == pytest.approx(b.chi_perp, rel=1e-9)
    assert a.phase == b.phase == "critical"


def test_clamp_derivatives_and_criticality():
    act = pdlt.activation(lambda z: torch.clamp(z, -1, 1), kinks=(-1.0, 1.0))
    z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(act.d1(z), torch.tensor([0.0, 1, 1, 1, 0], dtype=torch.float64))
    torch.testing.assert_close(act.d2(z), torch.zeros_like(z))
    # χ_⊥ = C_W ⟨σ'²⟩_K = C_W P(|z| < 1) = C_W erf(1/√(2K)); at C_b = 0 and K → 0 the fixed
    # point is K* = 0 where σ' = 1, so χ = C_W.
    c = pdlt.criticality(act, C_W=0.5)
    assert c.K_star == pytest.approx(0.0, abs=1e-12)
    assert c.chi_perp == pytest.approx(0.5, rel=1e-9)


def test_constant_activation_derivatives_are_zero():
    act = pdlt.activation(lambda z: torch.zeros_like(z) + 0.5)
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(act.d1(z), torch.zeros_like(z))
    torch.testing.assert_close(act.d2(z), torch.zeros_like(z))
