"""pdlt.recommend and ``pdlt recommend``: a network sized by r* (A.73, B.36) within a parameter
budget, initialized at criticality, with the rule behind each number and warnings where the
request cannot be met."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import pdlt
from pdlt.cli import app
from pdlt.theory.design import parameter_count

BUDGET = dict(n_params=1_000_000, input_dim=784, output_dim=10)


def _torch_count(rec: pdlt.Recommendation) -> int:
    return sum(p.numel() for p in rec.module(seed=0).parameters())


@pytest.mark.parametrize("act", ["gelu", "tanh", "relu", "sigmoid"])
def test_budget_and_aspect_ratio(act):
    rec = pdlt.recommend(act, **BUDGET)
    # the count the reasons quote is the real module's, within a few % of the budget
    assert _torch_count(rec) == rec.n_params
    assert abs(rec.n_params - 1_000_000) <= 0.03 * 1_000_000
    assert rec.n_params == parameter_count(rec.depth, rec.width, 784, 10)
    # L/n near r*: one layer of rounding
    assert rec.r_star is not None
    assert abs(rec.depth - rec.r_star * rec.width) <= 1.0
    assert len(rec.lambda_b) == len(rec.lambda_W) == rec.depth
    for key in ("C_b, C_W", "r*", "depth", "width", "lambda_b, lambda_W", "parameters"):
        assert any(r.startswith(key + ":") for r in rec.reasons), key
    frame = rec.to_frame()
    assert set(frame.columns) == {"quantity", "value", "rule"}
    assert "why" in repr(rec)


def test_rules_behind_the_numbers():
    tanh = pdlt.recommend("tanh", **BUDGET)
    # K*=0 class: C_W = 1/σ'(0)² = 1, ν = 2/3, r* = (4/(20 + 30))/ν = 0.12 (A.73)
    assert (tanh.C_b, tanh.C_W) == (0.0, 1.0)
    assert tanh.r_star == pytest.approx(0.12)
    assert tanh.warnings == ()
    # eq. 9.95 for tanh: λ_b = λ̃_b/ℓ, λ_W = λ̃_W
    assert tanh.lambda_b[1] == pytest.approx(0.5) and tanh.lambda_W[-1] == pytest.approx(1.0)
    relu = pdlt.recommend("relu", **BUDGET)
    assert relu.C_W == 2.0 and relu.r_star == pytest.approx(0.08 / 5)
    assert relu.lambda_W[0] == pytest.approx(1 / relu.depth)  # eq. 9.94
    # a residual tanh: C_W (1 − γ²) (B.21) and a larger r* from ν(γ) = (2/3)(1 − γ⁴) (B.35–36)
    res = pdlt.recommend("tanh", skip=0.5, **BUDGET)
    assert res.C_W == pytest.approx(0.75)
    assert res.r_star == pytest.approx(0.12 / (1 - 0.5**4))
    assert res.depth > tanh.depth
    m = res.mlp()
    assert m.skip[1] == 0.5 and m.C_W[0] == pytest.approx(0.75)


def test_warnings():
    sig = pdlt.recommend("sigmoid", **BUDGET)
    assert any("no criticality" in w and "order-to-chaos" in w for w in sig.warnings)
    gelu = pdlt.recommend("gelu", **BUDGET)
    assert gelu.warnings == () and gelu.C_b > 0
    small = pdlt.recommend("tanh", n_params=3_000, input_dim=784, output_dim=10)
    assert small.depth == 2
    assert any("too small for the recommended depth" in w for w in small.warnings)
    deep = pdlt.recommend("tanh", depth=100, **BUDGET)
    assert deep.depth == 100 and any("far from r*" in w for w in deep.warnings)
    wide = pdlt.recommend("tanh", width=1000, **BUDGET)
    assert wide.width == 1000 and wide.depth == 2
    assert any("far from r*" in w for w in wide.warnings)
    both = pdlt.recommend("tanh", depth=10, width=50, **BUDGET)
    assert any("not the budget" in w for w in both.warnings)
    # ELU: K*=0 class with a kink, ν not derived: sizing needs depth or width, and says so
    with pytest.raises(ValueError, match="give depth= or width="):
        pdlt.recommend("elu", **BUDGET)
    elu = pdlt.recommend("elu", depth=10, **BUDGET)
    assert elu.r_star is None and any("r*, is not available" in w for w in elu.warnings)
    relu_res = pdlt.recommend("relu", skip=0.5, **BUDGET)
    assert not any("ν" in w for w in relu_res.warnings)
    assert relu_res.nu == pytest.approx(6.4963, abs=1e-3)
    assert any("path recursion" in r for r in relu_res.reasons)
    gelu_res = pdlt.recommend("gelu", skip=0.5, **BUDGET)  # half-stable: ν(γ) at K*
    assert not any("ν" in w for w in gelu_res.warnings)
    assert gelu_res.nu == pytest.approx(6.2904, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(n_params=0, input_dim=3), ValueError, "n_params"),
        (dict(n_params=1.5e6, input_dim=3), TypeError, "n_params"),
        (dict(n_params=1000, input_dim=-1), ValueError, "input_dim"),
        (dict(n_params=1000, input_dim=3, output_dim=0), ValueError, "output_dim"),
        (dict(n_params=1000, input_dim=3, depth=1), ValueError, "depth"),
        (dict(n_params=1000, input_dim=3, skip=1.0), ValueError, "skip"),
        (dict(n_params=1000, input_dim=3, skip=float("nan")), ValueError, "skip"),
        (dict(n_params=100, input_dim=784, depth=5), ValueError, "too small for depth"),
        (dict(n_params=100, input_dim=784, width=50), ValueError, "too small for width"),
    ],
)
def test_bad_inputs(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        pdlt.recommend("tanh", **kwargs)


def test_module_is_initialized_at_the_recommendation():
    rec = pdlt.recommend("relu", n_params=200_000, input_dim=100, output_dim=1)
    mod = rec.module(seed=0)
    hidden = [m for m in mod if isinstance(m, torch.nn.Linear)][1]
    var = float(hidden.weight.detach().var()) * hidden.in_features
    assert var == pytest.approx(rec.C_W, rel=0.05)


def test_cli():
    res = CliRunner().invoke(
        app,
        ["recommend", "sigmoid", "--params", "1000000", "--input-dim", "784", "--output-dim", "10"],
    )
    assert res.exit_code == 0, res.output
    assert "r*" in res.output and "Warning:" in res.output and "no criticality" in res.output
    bad = CliRunner().invoke(
        app, ["recommend", "tanh", "--params", "10", "--input-dim", "784", "--depth", "5"]
    )
    assert bad.exit_code == 2 and "Error: n_params = 10 is too small" in bad.output
