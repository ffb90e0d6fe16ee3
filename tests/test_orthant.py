"""The relu family's four-point expectations in closed form (pdlt.gaussian.orthant): orthant
probabilities and truncated moments, against exact identities and independent quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdlt.gaussian import expect_product, multisets
from pdlt.gaussian.orthant import (
    _orthant4,
    _orthant4_path,
    _path_rule,
    homogeneous_product,
    orthant_probability,
)
from pdlt.gaussian.rules import homogeneous_smoothing

DT = torch.float64


def _sheppard(r: float) -> float:
    return 0.25 + math.asin(r) / (2 * math.pi)


def _gram(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x @ x.T / x.shape[1], dtype=DT)


def test_orthant_exact_cases():
    """Equicorrelation 1/2: P_4 = 1/5; block-diagonal: the product of two Sheppard terms; a
    perfectly correlated pair: P_3 of the rest; 3-D against Monte Carlo-free Sheppard sums."""
    R = torch.full((4, 4), 0.5, dtype=DT).fill_diagonal_(1.0)
    assert abs(float(orthant_probability(R[None])) - 0.2) < 1e-13
    R = torch.eye(4, dtype=DT)
    R[0, 1] = R[1, 0] = 0.999999
    R[2, 3] = R[3, 2] = -0.7
    assert abs(float(orthant_probability(R[None])) - _sheppard(0.999999) * _sheppard(-0.7)) < 1e-12
    # equicorrelation 1/2 in 3-D: 1/4
    R3 = torch.full((3, 3), 0.5, dtype=DT).fill_diagonal_(1.0)
    assert abs(float(orthant_probability(R3[None])) - 0.25) < 1e-15


def _correlations(seed: int) -> torch.Tensor:
    """Random 4×4 correlation matrices from generic to nearly singular (smallest eigenvalue
    down to ~1e-8): a nearly dependent fourth input, a nearly parallel pair, four nearly equal
    inputs, and generic Gram matrices."""
    rng = np.random.default_rng(seed)
    out = []
    for eps in np.logspace(-6, 0, 90):
        b, w = rng.normal(size=(3, 8)), rng.normal(size=3)
        kind = len(out) % 3
        if kind == 0:
            x = np.vstack([b, w @ b + np.sqrt(eps) * rng.normal(size=8)])
        elif kind == 1:
            x = np.vstack([b[0], b[0] + np.sqrt(eps) * rng.normal(size=8), b[1], b[2]])
        else:
            x = b[0] + np.sqrt(eps) * rng.normal(size=(4, 8))
        out.append(x @ x.T)
    for _ in range(30):
        g = rng.normal(size=(4, int(rng.integers(4, 9))))
        out.append(g @ g.T)
    S = torch.tensor(np.array(out), dtype=DT)
    d = torch.sqrt(torch.diagonal(S, dim1=1, dim2=2))
    return S / (d[:, :, None] * d[:, None, :])


def test_orthant4_rule_converged():
    """The tiered default rule against 40 nodes per piece on a finer grading, by smallest
    eigenvalue λ of R: ≲1e-10 for λ ≥ 1e-4, ≲1e-8 below (measured 4e-11, 2e-9)."""
    R = _correlations(2)
    lam = torch.linalg.eigvalsh(R)[:, 0]
    fine = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0)
    ref = _orthant4_path(R, *_path_rule(fine, 40))
    err = (_orthant4(R) - ref).abs()
    assert float(err[lam >= 1e-4].max()) < 1e-10
    assert float(err.max()) < 1e-8


@pytest.mark.parametrize("a_plus,a_minus", [(1.0, 1.0), (0.7, -1.3)])
def test_wick_limit_exact(a_plus, a_minus):
    """σ(z) = a z (a₊ = a₋): Isserlis for every multiset; any member on one input:
    E σ(z)⁴ = 3K²(a₊⁴ + a₋⁴)/2."""
    rng = np.random.default_rng(0)
    K = _gram(rng.normal(size=(6, 6)))
    idx = multisets(6, 4)
    i, j, k, l = idx.T
    wick = K[i, j] * K[k, l] + K[i, k] * K[j, l] + K[i, l] * K[j, k]
    got = expect_product(lambda z: a_plus * z, K, idx, homogeneous=(a_plus, a_plus))
    assert float(((got - a_plus**4 * wick).abs() / wick.abs()).max()) < 1e-13
    f = lambda z: torch.where(z > 0, a_plus * z, a_minus * z)  # noqa: E731
    diag = expect_product(f, K, [[0, 0, 0, 0]], homogeneous=(a_plus, a_minus))
    ref = 3 * K[0, 0] ** 2 * (a_plus**4 + a_minus**4) / 2
    assert abs(float(diag) - float(ref)) < 1e-13 * float(ref)


def _quadrature(ap: float, am: float, K: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The kink-split quadrature (independent code), wide window and 40 nodes per piece."""
    f = lambda z: torch.where(z > 0, ap * z, am * z)  # noqa: E731
    return expect_product(
        f,
        K,
        idx,
        kinks=(0.0,),
        smooth=homogeneous_smoothing(ap, am),
        split_nodes={3: 40, 4: 40},
        tol=1e-16,
    )


@pytest.mark.parametrize(
    "case,a_plus,a_minus",
    [("generic", 1.0, 0.0), ("near", 1.0, 0.0), ("generic", 1.0, 0.1), ("near", 0.5, -1.3)],
)
def test_homogeneous_against_quadrature(case, a_plus, a_minus):
    """3- and 4-input expectations against the kink-split quadrature on a generic correlated
    kernel and on nearly parallel inputs (cosines ≥ 0.996): ≲3e-9 relative (measured ≲1e-9;
    the quadrature itself is ~1e-9 there)."""
    rng = np.random.default_rng(1)
    if case == "generic":
        K = _gram(rng.normal(size=(5, 5)))
    else:
        x0 = rng.normal(size=8)
        K = _gram(np.vstack([x0, x0 + 0.045 * rng.normal(size=(4, 8))]))
    idx = multisets(5, 4)
    distinct = (torch.sort(idx, 1).values.diff(dim=1) != 0).sum(1) + 1
    idx = idx[distinct >= 3]
    f = lambda z: torch.where(z > 0, a_plus * z, a_minus * z)  # noqa: E731
    got = expect_product(f, K, idx, kinks=(0.0,), homogeneous=(a_plus, a_minus))
    ref = _quadrature(a_plus, a_minus, K, idx)
    scale = torch.sqrt(torch.diagonal(K)[idx].prod(dim=1))
    assert float(((got - ref).abs() / scale).max()) < 3e-9


def test_singular_subkernels():
    """Exactly dependent inputs (sub-kernels singular: regularized and extrapolated):
    x_d = 2 x_c gives 2⟨σ_a σ_b σ_c²⟩ (a 3-input tuple, a different route); x_d = −x_c gives 0
    for relu; four inputs in 3 dimensions against a sphere-average reference (degree-4
    homogeneity: E = E r⁴ · mean over S² of Π relu(a_i·θ), E r⁴ = 15)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 8))
    x[4] = 2 * x[2]
    x[5] = -x[3]
    K = _gram(x)
    got = expect_product(
        torch.relu, K, [[0, 1, 2, 4], [0, 1, 2, 2], [0, 1, 3, 5]], homogeneous=(1.0, 0.0)
    )
    assert abs(float(got[0] - 2 * got[1])) < 1e-10 * float(got[0])
    assert abs(float(got[2])) < 1e-10 * float(K[0, 0] * K[3, 3])

    a = rng.normal(size=(4, 3))
    K3 = torch.tensor(a @ a.T, dtype=DT)
    got = float(expect_product(torch.relu, K3, [[0, 1, 2, 3]], homogeneous=(1.0, 0.0)))
    n = 1500
    th = (np.arange(n) + 0.5) * np.pi / n
    ph = (np.arange(2 * n) + 0.5) * np.pi / n
    T, P = np.meshgrid(th, ph, indexing="ij")
    X = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1).reshape(-1, 3)
    w = (np.sin(T) * (np.pi / n) ** 2).reshape(-1) * 15 / (4 * np.pi)
    ref = float((w * np.prod(np.maximum(X @ a.T, 0.0), axis=1)).sum())
    assert abs(got - ref) < 1e-5 * ref, (got, ref)


def test_homogeneous_product_vectorized_patterns():
    """homogeneous_product on repeated-input patterns agrees with the 1-D closed form
    E relu(z)^4 = 3K²/2 and with the pair closed form E relu(z_a)² relu(z_b)² (d = 2 rung)
    against quadrature."""
    K = torch.tensor([[1.3, 0.4], [0.4, 0.8]], dtype=DT)
    one = homogeneous_product(1.0, 0.0, K, torch.tensor([[0]]), (4,))
    assert abs(float(one) - 1.5 * 1.3**2) < 1e-14
    two = homogeneous_product(1.0, 0.0, K, torch.tensor([[0, 1]]), (2, 2))
    ref = expect_product(
        torch.relu, K, [[0, 0, 1, 1]], kinks=(0.0,), split_nodes={2: 48}, tol=1e-16
    )
    assert abs(float(two - ref)) < 1e-11 * float(ref)


def test_even_product_halving_is_exact():
    """The cubature's half grid for even integrands (odd σ in all four slots) gives the full
    grid's sum; non-symmetric functions are not halved."""
    from pdlt.gaussian import products

    assert products.even_product([torch.tanh] * 4)
    assert products.even_product([torch.tanh, torch.tanh, torch.cos, torch.cos])
    assert not products.even_product([torch.tanh] * 3)
    assert not products.even_product([torch.nn.functional.softplus] * 4)
    rng = np.random.default_rng(3)
    K = _gram(rng.normal(size=(5, 5)))
    idx = torch.combinations(torch.arange(5), r=4)
    from pdlt.gaussian.rules import cholesky

    L = cholesky(K[idx[:, :, None], idx[:, None, :]])
    codes = products.direction_rules(L, 20, 1e-7, kinked=False)
    for t in range(idx.shape[0]):
        cv = tuple(codes[t].tolist())
        full = products._nested_sum([torch.tanh] * 4, L[t : t + 1], cv, 1e-7, False)
        half = products._nested_sum([torch.tanh] * 4, L[t : t + 1], cv, 1e-7, True)
        assert abs(float(full - half)) < 1e-12 * abs(float(full))


def test_inner_table_matches_direct_sum():
    """The tabulated inner sums of the nested cubature against the direct sums (≲1e-10 of
    max|g| for tanh, sin, swish, erf; measured ≲2e-11), and the a-posteriori check rejects a function too sharp for
    the table's grid (tanh(40 z))."""
    from pdlt.gaussian import products

    g = torch.Generator().manual_seed(0)
    shift = 4 * (torch.rand(3, 5000, generator=g, dtype=DT) - 0.5)
    s = torch.tensor([0.05, 0.3, 0.7], dtype=DT)
    x, wx = products._rule_tensor(-8, 1e-7)
    for f in (torch.tanh, torch.sin, lambda z: z * torch.sigmoid(z)):
        direct = f(shift[..., None] + s[:, None, None] * x) @ wx
        table = products._inner_table(f, shift, s, x, wx)
        assert table is not None
        assert float((table - direct).abs().max()) < 1e-10 * float(direct.abs().max())
    sharp = lambda z: torch.tanh(40 * z)  # noqa: E731
    assert products._inner_table(sharp, shift, s * 0 + 0.01, x, wx) is None
