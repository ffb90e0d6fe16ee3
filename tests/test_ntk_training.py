"""The mean NTK change during gradient descent at O(1/n) (book §∞.2.2) against real trained
tanh networks: dNTK (P, Q) plus the ddNTK means (R, S, T, U) through O(η²) per step."""

import numpy as np
import pytest

import pdlt
from pdlt.compare import agreement, comparison_frame

X2 = np.array([[1.0, 0.4, -0.3, 0.2], [0.2, -0.9, 0.5, 0.6]])
Y2 = np.array([[1.0, -0.6], [-0.8, 1.2]])
ETA = 0.02  # η λ_max(Θ̃) = 0.11 for the net below
IU = np.triu_indices(2)


def _net(width: int) -> pdlt.MLP:
    return pdlt.MLP("tanh", 3, width, 4, output_dim=2, C_W=1.5, C_b=0.2)


def _measure(width: int, steps: list[int], n_networks: int, seed: int = 1):
    return pdlt.train_ensemble(
        _net(width),
        X2,
        Y2,
        steps=max(steps),
        learning_rate=ETA,
        n_networks=n_networks,
        seed=seed,
        record_ntk=True,
        dtype="float64",
        record_steps=[0, *steps],
    )


def test_ntk_change_over_five_steps_vanishes_like_one_over_n():
    """After t = 5 steps (η λ_max t = 0.55) the measured E[Ĥ(t) − Ĥ(0)] agrees with the
    prediction at widths 16 and 32 within 4 se + (ℓ/n)|prediction| and halves with the
    width; the O(η) part alone would be ~60% too large (measured 4+ se away)."""
    measured = {}
    for width in (16, 32):
        pred = pdlt.ddntk(_net(width), X2).ntk_change(ETA, 5, Y2)
        ens = _measure(width, [5], 2000)
        mean, err = ens.ntk_change(5)
        frame = comparison_frame("ntk_change", 3, pred[IU], mean[IU], err[IU])
        assert agreement(frame, width).all(), frame
        assert (np.abs(mean[IU]) > 4 * err[IU]).all()  # the NTK does move
        measured[width] = mean
    ratio = measured[16][IU] / measured[32][IU]
    assert np.all((ratio > 1.5) & (ratio < 2.6))


def test_ntk_change_first_step_matches_dntk():
    """At t = 1 the O(η) part is dntk's one-step change; the O(η²) ddNTK term is the rest."""
    net = _net(16)
    one = pdlt.ddntk(net, X2).ntk_change(ETA, 1, Y2)
    first = pdlt.dntk(net, X2).ntk_change(ETA)
    assert np.allclose(one, first, rtol=0.3)
    assert not np.allclose(one, first, rtol=1e-6)
    assert np.allclose(pdlt.ddntk(net, X2).ntk_change(ETA, 0, Y2), 0.0)


def test_ntk_change_bad_input():
    dd = pdlt.ddntk(_net(16), X2)
    with pytest.raises(ValueError, match="y must have shape"):
        dd.ntk_change(ETA, 3, np.zeros(2))
    with pytest.raises((TypeError, ValueError)):
        dd.ntk_change(ETA, 2.5, Y2)


@pytest.mark.slow
def test_ntk_change_three_widths_slow():
    """t = 2, 5, 10 (η λ_max t ≤ 1.1) at widths 16, 32, 64: agreement within 4 se +
    (ℓ/n)|prediction| at every width and step."""
    for width in (16, 32, 64):
        pred = pdlt.ddntk(_net(width), X2)
        ens = _measure(width, [2, 5, 10], 4000, seed=width)
        for t in (2, 5, 10):
            p = pred.ntk_change(ETA, t, Y2)
            mean, err = ens.ntk_change(t)
            frame = comparison_frame("ntk_change", 3, p[IU], mean[IU], err[IU])
            assert agreement(frame, width).all(), (width, t, frame)
