"""pdlt.aspect_ratio_experiment: networks of (nearly) equal parameter count across aspect
ratios, trained on the digits, beside r* (book A.73, B.36). Plotted, not asserted to agree with
r*: the tests check the sizing, the bookkeeping, that training happened, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import pdlt
from pdlt.cli import app
from pdlt.experiment.aspect_ratio import shapes_for_ratios
from pdlt.theory.design import parameter_count

_SMALL = dict(n_networks=2, steps=30, n_train=64, n_test=64, progress=False)


def test_shapes_hold_the_budget_across_ratios():
    shapes = shapes_for_ratios([0.01, 0.025, 0.06, 0.15, 0.3, 0.6, 1.0], 6000, 64, 10)
    counts = [parameter_count(L, n, 64, 10) for L, n in shapes]
    assert all(abs(c - 6000) <= 0.05 * 6000 for c in counts), (shapes, counts)
    ratios = [L / n for L, n in shapes]
    assert ratios == sorted(ratios) and len(set(shapes)) == len(shapes)
    assert shapes[0][0] == 2 and shapes[-1][0] >= 15  # 0.01 and 0.025 both give L = 2: once
    assert len(shapes) == 6


def test_experiment_records_trained_networks_and_r_star(tmp_path):
    res = pdlt.aspect_ratio_experiment("tanh", 4000, (0.05, 0.5), learning_rate=1.0, **_SMALL)
    assert res.r_star == pytest.approx(pdlt.optimal_aspect_ratio("tanh", output_dim=10))
    assert res.nu == pytest.approx(2 / 3)
    assert res.test_loss.shape == (2, 2) and np.isfinite(res.test_loss).all()
    assert (res.test_loss < res.initial_test_loss).all()  # gradient descent did something
    assert np.all(np.abs(res.n_params - 4000) <= 0.05 * 4000)
    assert res.depths[0] < res.depths[1] and res.widths[0] > res.widths[1]
    df = res.to_frame()
    assert list(df["depth L"]) == list(res.depths) and "± error" in df and df["diverged"].sum() == 0
    assert res.best_ratio in res.aspect_ratios
    ax = res.plot()
    assert any("r*" in t.get_text() for t in ax.get_legend().get_texts())
    # residual: the residual critical point and ν(γ) for tanh (odd σ), and the note on rates
    g = pdlt.aspect_ratio_experiment("tanh", 2000, (0.5,), skip=0.5, **_SMALL)
    assert g.C_W == pytest.approx(0.75) and g.r_star == pytest.approx(
        0.08 / ((2 / 3) * (1 - 0.5**4))
    )
    assert "plain-MLP rule" in g.note


def test_experiment_without_nu_runs_and_says_why():
    """ELU has a critical point but no derived ν: the curve is trained, r* is None, the note says
    why (this used to fail on an unbound ν)."""
    res = pdlt.aspect_ratio_experiment("elu", 2000, (0.5,), **_SMALL)
    assert res.r_star is None and res.nu is None and res.note.startswith("no r*")
    assert np.isfinite(res.test_loss).all()


def test_experiment_errors():
    with pytest.raises(ValueError, match="no critical initialization"):
        pdlt.aspect_ratio_experiment("sigmoid", 2000, **_SMALL)
    with pytest.raises(ValueError, match="ratios must be > 0"):
        pdlt.aspect_ratio_experiment("tanh", 2000, (0.1, -1.0), **_SMALL)
    with pytest.raises(ValueError, match="1797"):
        pdlt.aspect_ratio_experiment("tanh", 2000, n_train=1500, n_test=400)
    with pytest.raises(ValueError, match="skip must satisfy"):
        pdlt.aspect_ratio_experiment("tanh", 2000, skip=1.0, **_SMALL)
    with pytest.raises(TypeError, match="activation must be a built-in name"):
        pdlt.aspect_ratio_experiment(np.tanh, 2000, **_SMALL)


def test_cli_aspect_ratio(tmp_path):
    out = tmp_path / "ar.png"
    res = CliRunner().invoke(
        app,
        ["aspect-ratio", "tanh", "--params", "1500", "--ratio", "0.1", "--ratio", "0.5",
         "--networks", "2", "--steps", "5", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "r* = 0.12" in res.output and out.exists() and out.with_suffix(".csv").exists()
    bad = CliRunner().invoke(app, ["aspect-ratio", "sigmoid", "--steps", "1"])
    assert bad.exit_code == 2 and "no critical initialization" in bad.output
