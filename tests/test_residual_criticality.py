"""criticality / critical_line / phase_diagram with ``skip`` = γ (book App. B): the map
F(K) = C_b + C_W g(K) + γ²K, checked against the layer-by-layer kernel of residual MLPs
(pdlt.kernel runs the residual kernel step, an independent code path)."""

import math

import numpy as np
import pytest

import pdlt

GAMMA = 0.5


def _kernel(act, C_b, C_W, x, depth=160):
    net = pdlt.MLP(act, depth=depth, width=64, input_dim=x.shape[1], C_b=C_b, C_W=C_W, skip=GAMMA)
    return pdlt.kernel(net, x).K[:-1]  # the output layer (64 → 1) has no skip


@pytest.mark.parametrize(
    "act, C_b, C_W", [("tanh", 0.1, 1.0), ("gelu", 0.2, 1.2), ("tanh", 0.1, 2.0)]
)
def test_fixed_point_and_susceptibilities_match_the_residual_kernel(act, C_b, C_W):
    c = pdlt.criticality(act, C_b, C_W, skip=GAMMA)
    assert c.skip == GAMMA and c.C_W == C_W
    # K*: the deep kernel of a residual network
    K = _kernel(act, C_b, C_W, np.array([[1.0]]))[:, 0, 0]
    assert K[-1] == pytest.approx(c.K_star, rel=1e-9)
    # χ_∥: the ratio of successive deviations of two inputs of different norm, near K*
    x = np.array([[1.0], [1.0 + 1e-3]]) * math.sqrt(c.K_star)  # K^(1) near K*·C_W…
    K2 = _kernel(act, C_b, C_W, x, depth=40)
    dpar = K2[:, 1, 1] - K2[:, 0, 0]
    ell = 25
    assert dpar[ell + 1] / dpar[ell] == pytest.approx(c.chi_parallel, rel=1e-3)
    # χ_⊥ (ordered) or χ_c (chaotic): the ratio of successive D = K_aa + K_bb − 2K_ab of two
    # nearly equal inputs (ordered) or the correlation's approach to c* (chaotic)
    y = np.array([[1.0, 0.0], [math.cos(1e-3), math.sin(1e-3)]])
    Ky = _kernel(act, C_b, C_W, y, depth=60)
    if c.phase == "ordered":
        D = Ky[:, 0, 0] + Ky[:, 1, 1] - 2 * Ky[:, 0, 1]
        assert D[41] / D[40] == pytest.approx(c.chi_perp, rel=1e-3)
    else:
        Ko = _kernel(act, C_b, C_W, np.eye(2), depth=300)  # c^(1) < c*: flows up to c*
        corr = Ko[:, 0, 1] / np.sqrt(Ko[:, 0, 0] * Ko[:, 1, 1])
        assert corr[-1] == pytest.approx(c.c_star, abs=1e-8)
        dc = corr - c.c_star
        assert dc[101] / dc[100] == pytest.approx(c.chi_c, rel=1e-3)


def test_gamma_zero_is_plain_and_chi_maps():
    plain = pdlt.criticality("tanh", 0.1, 1.2)
    assert pdlt.criticality("tanh", 0.1, 1.2, skip=0.0).chi_perp == plain.chi_perp
    eq = pdlt.criticality("tanh", 0.1 / 0.75, 1.2 / 0.75, K_first=1.3)
    res = pdlt.criticality("tanh", 0.1, 1.2, skip=GAMMA)
    assert res.K_star == pytest.approx(eq.K_star, rel=1e-12)
    assert res.chi_perp == pytest.approx(0.75 * eq.chi_perp + 0.25, rel=1e-12)


def test_critical_line_and_point_with_skip():
    line = pdlt.critical_line("tanh", np.array([0.0, 0.1, 0.3]), skip=GAMMA)
    for b, w in zip(line.C_b, line.C_W, strict=True):
        assert pdlt.criticality("tanh", b, w, skip=GAMMA).chi_perp == pytest.approx(1, abs=1e-9)
    assert line.C_W[0] == pytest.approx(0.75)  # = C_W of critical_point(tanh, skip=0.5), B.21
    assert pdlt.critical_line("relu", 0.0, skip=GAMMA).C_W == pytest.approx(1.5)  # B.20


def test_phase_diagram_matches_criticality_pointwise():
    cb, cw = np.array([0.0, 0.1]), np.array([0.5, 1.0, 2.0])
    pdg = pdlt.phase_diagram("tanh", C_b=cb, C_W=cw, skip=GAMMA)
    assert pdg.critical.skip == GAMMA
    for i, b in enumerate(cb):
        for j, w in enumerate(cw):
            c = pdlt.criticality("tanh", b, w, skip=GAMMA)
            assert pdg.phase[i, j] == c.phase
            for name in ("K_star", "chi_parallel", "chi_perp", "chi_c"):
                assert getattr(pdg, name)[i, j] == pytest.approx(
                    getattr(c, name), rel=1e-8, abs=1e-12
                )


@pytest.mark.parametrize("fn", [pdlt.criticality, pdlt.critical_line, pdlt.phase_diagram])
@pytest.mark.parametrize(
    "bad, exc", [(1.0, ValueError), (float("nan"), ValueError), ("a", TypeError)]
)
def test_bad_skip(fn, bad, exc):
    with pytest.raises(exc, match="skip"):
        fn("tanh", skip=bad)
