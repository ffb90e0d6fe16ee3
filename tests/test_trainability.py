"""The trainability phase diagram: tiny grids through the sweep engine, the theory overlay, the
CLI command, and bad input."""

import numpy as np
import pytest
from typer.testing import CliRunner

from pdlt.cli import app
from pdlt.experiment.trainability import (
    digits,
    stored_trainability,
    theory_overlay,
    trainability,
    trainability_row,
)
from pdlt.theory.criticality import criticality

TINY = dict(width=32, steps=80, n_train=64, n_networks=2)


def test_tiny_diagram_separates_trainable_from_untrainable(tmp_path):
    # Ordered side deep beyond 6ξ⊥ (C_W = 0.5: ξ⊥ ≈ 1.2, so 6ξ⊥ ≈ 7 < depth 16) against a
    # shallow near-critical network (depth 3 ≪ 6ξ⊥).
    res = trainability([0.5, 1.75], [3, 16], store=tmp_path, progress=False, **TINY)
    assert res.accuracy.shape == (2, 2)
    chance = 0.1
    assert res.accuracy[0, 1] > 0.6  # depth 3, C_W = 1.75: trains
    assert res.accuracy[1, 0] < chance + 0.1  # depth 16, C_W = 0.5: stuck near chance
    frame = res.to_frame()
    assert set(frame.columns) >= {"depth", "C_W", "accuracy", "chi_perp", "six_xi_perp"}
    assert 0.0 <= res.agreement() <= 1.0
    fig = res.plot()
    assert fig.axes
    # everything is stored: the same call is read back, and stored_trainability finds it
    again = trainability([0.5, 1.75], [3, 16], store=tmp_path, progress=False, **TINY)
    np.testing.assert_array_equal(again.accuracy, res.accuracy)
    assert stored_trainability(tmp_path, [0.5, 1.75], [3, 16], **TINY) is not None
    assert stored_trainability(tmp_path, [0.5, 1.75], [3, 32], **TINY) is None
    assert stored_trainability(tmp_path / "nothing") is None


def test_batched_row_equals_one_network_spec_at_a_time():
    # A depth's C_W row trains as one batched program; each C_W must give what training that
    # spec alone with pdlt.train_ensemble (the per-cell route) gives: the same networks, the
    # same updates, so the same accuracies (float32: a prediction at an argmax tie could flip;
    # one training example of 64 is allowed).
    import torch

    from pdlt.experiment.train import train_ensemble
    from pdlt.network import MLP

    settings = dict(C_b=0.05, width=16, steps=40, learning_rate=2.0, n_train=64, n_networks=3)
    cws, depth = [0.6, 1.75, 3.5], 5
    row = trainability_row(depth, C_W=cws, seed=2, loss="cross_entropy", **settings)
    X, labels = digits(64)
    Y = np.eye(10)[labels]
    for i, c in enumerate(cws):
        net = MLP(
            "tanh", depth=depth, width=16, input_dim=64, output_dim=10, C_W=c, C_b=0.05,
            lambda_b=1 / depth, lambda_W=1 / depth,
        )  # fmt: skip
        alone = train_ensemble(
            net, X, Y, steps=40, learning_rate=2.0 / 64, loss="cross_entropy", n_networks=3,
            seed=2, dtype=torch.float32, progress=False,
        )  # fmt: skip
        assert row["accuracy"][i] == pytest.approx(alone.train_accuracy[-1].mean(), abs=1 / 64)
        assert row["initial_accuracy"][i] == pytest.approx(alone.train_accuracy[0].mean())


def test_theory_overlay_boundary_is_chi_perp_one():
    ov = theory_overlay(np.linspace(0.5, 4.0, 120), 0.05)  # (runs on one torch thread)
    # independent route: the criticality analysis at the interpolated boundary; linear
    # interpolation on a 0.03-spaced grid of a smooth χ⊥(C_W) is accurate to ~1e-4.
    assert criticality("tanh", C_b=0.05, C_W=ov["critical_C_W"]).chi_perp == pytest.approx(
        1, abs=1e-3
    )
    # Schoenholz et al. (2016) report the tanh critical point at σ_w² ≈ 1.76 for σ_b² = 0.05
    assert ov["critical_C_W"] == pytest.approx(1.76, abs=0.01)
    i = np.argmin(np.abs(ov["C_W"] - 0.5))
    assert ov["xi_perp"][i] == pytest.approx(
        criticality("tanh", C_b=0.05, C_W=0.5).xi_perp, rel=1e-9
    )


def test_user_data_arrays(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] > 0).astype(int)
    res = trainability(
        [1.75], [3], X=X, y=y, store=None, progress=False, width=16, steps=60, n_train=60
    )
    assert res.cells.chance.iloc[0] == 0.5
    assert res.accuracy[0, 0] > 0.75  # a linearly separable problem, shallow critical net


def test_cli_phase_diagram_writes_figure_and_table(tmp_path):
    out = tmp_path / "pd.png"
    result = CliRunner().invoke(
        app,
        [
            "phase-diagram", "--C-W-min", "1.0", "--C-W-max", "2.0", "--C-W-num", "2",
            "--depth", "3", "--width", "16", "--steps", "20", "--n-train", "64",
            "--scheduler", "serial", "--store", str(tmp_path / "store"), "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".csv").exists()
    assert "critical C_W" in result.output
    bad = CliRunner().invoke(app, ["phase-diagram", "--C-W-min", "-1", "--out", str(out)])
    assert bad.exit_code != 0 and "C-W-min" in bad.output


def test_bad_input():
    with pytest.raises(ValueError, match="C_W"):
        trainability([-1.0], [4], store=None)
    with pytest.raises(ValueError, match="depth"):
        trainability([1.0], [1], store=None)
    with pytest.raises(TypeError, match="unknown settings"):
        trainability([1.0], [4], store=None, widht=3)
    with pytest.raises(ValueError, match="both X and y"):
        trainability([1.0], [4], X=np.ones((3, 2)), store=None)
    with pytest.raises(ValueError, match="steps"):
        trainability([1.0], [4], store=None, steps=0)
    with pytest.raises(ValueError, match="device"):
        trainability([1.0], [4], store=None, device="tpu")
    with pytest.raises(ValueError, match="labels"):
        trainability([1.0], [4], X=np.eye(3), y=np.array([0.5, 1, 2]), store=None)
