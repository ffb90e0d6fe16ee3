"""Four-input Gaussian expectations ⟨f_1(z_a) f_2(z_b) f_3(z_c) f_4(z_d)⟩_K (pdlt.gaussian4)
against independent routes: closed forms for sin (entire), Wick for polynomials, products of
2-input closed forms for block-diagonal kernels, and the 1-/2-input machinery."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from pdlt.activations import _arccos1
from pdlt.gaussian import KINKED_ERROR, expect_pairs, expect_product, multisets

torch.manual_seed(0)
_A = torch.randn(5, 5, dtype=torch.float64)
K5 = _A @ _A.T / 5 + 0.1 * torch.eye(5, dtype=torch.float64)
K5 = K5 / K5.diagonal().max()  # generic 5-input kernel, unit largest variance


def sin_product(K, idx):
    """⟨Π_j sin z_{idx_j}⟩ = (2i)^{-k} Σ_{s ∈ {±1}^k} Π s · exp(−wᵀKw/2), w = Σ_j s_j e_{idx_j}."""
    tot = 0.0
    for s in itertools.product((1, -1), repeat=len(idx)):
        w = torch.zeros(K.shape[0], dtype=torch.float64)
        for sj, j in zip(s, idx, strict=True):
            w[j] += sj
        tot += math.prod(s) * float(torch.exp(-0.5 * w @ K @ w))
    return (tot / (2j) ** len(idx)).real


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.0])
def test_sin_products_all_multisets_exact(scale):
    """Every repetition pattern (d = 1…4 distinct inputs) against the closed form. Tolerance 5e-8
    absolute: the default tol = 1e-7 relative (values are O(0.1)); measured ≤ 1.2e-8."""
    K = K5 * scale
    idx = multisets(5, 4)
    got = expect_product(torch.sin, K, idx)
    want = torch.tensor([sin_product(K, t.tolist()) for t in idx], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=5e-8, rtol=0)


def test_mixed_functions_and_polynomials_by_wick():
    """Different function per slot; z·z·z·z is Wick's K_abK_cd + K_acK_bd + K_adK_bc, and
    ⟨z_a z_b⟩-type products of fewer slots work too (k = 2, 3)."""
    K = K5
    idx = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 2], [4, 4, 4, 4], [1, 2, 1, 2]])
    got = expect_product(lambda z: z, K, idx)
    a, b, c, d = idx.T
    wick = K[a, b] * K[c, d] + K[a, c] * K[b, d] + K[a, d] * K[b, c]
    torch.testing.assert_close(got, wick, rtol=1e-7, atol=1e-12)  # tol = 1e-7 for d = 3, 4
    # ⟨z_a² z_b⟩ = 0 and ⟨z_a z_b⟩ = K_ab with k = 3 and 2
    odd = expect_product(lambda z: z, K, torch.tensor([[0, 0, 1], [1, 2, 3]]))
    assert odd.abs().max() < 1e-12
    two = expect_product([torch.tanh, torch.tanh], K, torch.tensor([[0, 1], [2, 3]]))
    pairs = expect_pairs(torch.tanh, None, K)
    torch.testing.assert_close(two, pairs[[0, 2], [1, 3]], rtol=1e-12, atol=1e-14)
    # one function per slot: ⟨z_a tanh(z_b) z_c tanh(z_d)⟩ against a tighter rule
    fns = [lambda z: z, torch.tanh, lambda z: z, torch.tanh]
    loose = expect_product(fns, K, idx[:2])
    tight = expect_product(fns, K, idx[:2], tol=1e-12, nodes={3: 80, 4: 40})
    torch.testing.assert_close(loose, tight, rtol=1e-6, atol=1e-9)


def test_tanh_converges_to_tolerance():
    """tanh has poles at ±iπ/2, the hardest smooth case: default tol 1e-7 against tol 1e-12 —
    measured ≤ 4e-8 relative (all five inputs, scales 0.3–2); assert 2e-7 (2× the stated tol).
    Four inputs keep the tight reference affordable."""
    idx = multisets(4, 4)
    for scale in (0.3, 2.0):
        K = K5[:4, :4] * scale
        loose = expect_product(torch.tanh, K, idx)
        tight = expect_product(torch.tanh, K, idx, tol=1e-11, nodes={3: 80, 4: 40})
        assert ((loose - tight).abs() / tight.abs().max()).max() < 2e-7


def test_kinked_four_inputs_block_diagonal_exact():
    """relu over 3 and 4 distinct inputs against products of the arc-cosine closed form, for a
    block-diagonal kernel (independent blocks), whose eigenvectors put the kinks at generic
    angles to the grid. The stated accuracy KINKED_ERROR (1e-6; measured 5e-7) must hold."""
    B = torch.tensor([[1.0, 0.6], [0.6, 1.3]], dtype=torch.float64)
    C = torch.tensor([[0.8, -0.3], [-0.3, 0.5]], dtype=torch.float64)
    K = torch.block_diag(B, C)

    def arc(k):
        return float(_arccos1(k[0, 0], k[1, 1], k[0, 1]))

    got = expect_product(torch.relu, K, [[0, 1, 2, 3], [0, 1, 2, 2]], kinks=(0.0,))
    want = torch.tensor([arc(B) * arc(C), arc(B) * 0.8 / 2], dtype=torch.float64)
    rel = ((got - want).abs() / want).max()
    assert rel < KINKED_ERROR, rel


def test_validation():
    with pytest.raises(ValueError, match="square"):
        expect_product(torch.tanh, torch.ones(2, 3), [[0, 1]])
    with pytest.raises(ValueError, match="index"):
        expect_product(torch.tanh, K5, [[0, 1, 2, 3, 4]])
    with pytest.raises(ValueError, match="0…4"):
        expect_product(torch.tanh, K5, [[0, 9]])
    with pytest.raises(ValueError, match="functions"):
        expect_product([torch.tanh], K5, [[0, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expect_product(torch.tanh, K5, np.zeros((0, 4), dtype=int)).shape == (0,)
    assert multisets(16, 4).shape == (math.comb(19, 4), 4)


def test_homogeneous_smoothing_against_quadrature():
    """E σ(m + s u) in closed form (relu, leaky relu; s = 0 included) against 1-D quadrature."""
    from pdlt.gaussian import expect
    from pdlt.gaussian.rules import homogeneous_smoothing

    def sigma(y, ap, am):
        return ap * torch.clamp(y, min=0.0) + am * torch.clamp(y, max=0.0)

    for a_plus, a_minus in ((1.0, 0.0), (1.0, 0.1)):
        g = homogeneous_smoothing(a_plus, a_minus)
        m = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0], dtype=torch.float64)
        for s in (0.0, 0.5, 2.0):
            got = g(m, torch.full_like(m, s))
            if s == 0:
                want = sigma(m, a_plus, a_minus)
            else:
                want = torch.stack(
                    [
                        expect(
                            lambda z, mi=mi, ap=a_plus, am=a_minus: sigma(z + mi, ap, am),
                            torch.tensor(s * s, dtype=torch.float64),
                            kinks=(-float(mi),),
                        )
                        for mi in m
                    ]
                )
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), (s, got, want)


def test_relu_closed_last_coordinate_on_correlated_kernel():
    """relu over 3 and 4 distinct inputs of a generic correlated kernel (all inputs coupled),
    with the last coordinate in closed form (the route four_point_vertex takes), against the
    full 4-level kink-split rule at 32 nodes per piece (an independent route; measured to
    converge to ~1e-11 there). The stated KINKED_ERROR must hold."""
    from pdlt.gaussian.rules import homogeneous_smoothing

    x = np.random.default_rng(3).normal(size=(6, 8))
    K = torch.tensor(2 * x @ x.T / 8)
    idx = [[0, 1, 2, 3], [1, 2, 4, 5], [0, 0, 2, 3], [1, 3, 3, 5]]
    ref = expect_product(torch.relu, K, idx, kinks=(0.0,), split_nodes={3: 32, 4: 32})
    got = expect_product(torch.relu, K, idx, kinks=(0.0,), smooth=homogeneous_smoothing(1.0, 0.0))
    rel = ((got - ref).abs() / ref.abs()).max()
    assert rel < KINKED_ERROR, rel
