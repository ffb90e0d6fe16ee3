"""pdlt.init: critical initialization of torch modules, torch's gains against criticality, the
``pdlt criticality`` command and the report section."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import pdlt
from pdlt.cli import app
from pdlt.init import compare_gains, critical_


def _mlp(act: torch.nn.Module, width: int = 64, depth: int = 3) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers.append(torch.nn.Linear(8 if i == 0 else width, width if i < depth - 1 else 1))
        if i < depth - 1:
            layers.append(act)
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize(
    "module, name, C_b, C_W",
    [
        (torch.nn.Tanh(), "tanh", 0.0, 1.0),
        (torch.nn.ReLU(), "relu", 0.0, 2.0),
        (torch.nn.LeakyReLU(0.2), "leaky_relu", 0.0, 2 / 1.04),
        (torch.nn.GELU(), "gelu", 0.1729223908, 1.9830582574),
        (torch.nn.SiLU(), "swish", 0.555143171, 1.988004678),
    ],
)
def test_detects_activation_and_sets_critical_values(module, name, C_b, C_W):
    net = _mlp(module)
    info = critical_(net, generator=torch.Generator().manual_seed(0))
    assert info.activation == name
    assert info.C_b == pytest.approx(C_b, abs=1e-9)
    assert info.C_W == pytest.approx(C_W, rel=1e-9)
    assert info.layers == ("0", "2", "4")
    assert "CriticalInit" in repr(info)


def test_weights_and_biases_have_the_stated_variances():
    """W ~ N(0, C_W/fan_in), b ~ N(0, C_b): sample variances of 512·512 weights and of 512·3
    biases pooled, each within 5 standard errors (se of a sample variance: σ²√(2/m))."""
    net = torch.nn.Sequential(
        torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 512), torch.nn.GELU()
    )
    info = critical_(net, generator=torch.Generator().manual_seed(1))
    W = net[2].weight.detach().double()
    target = info.C_W / 512
    assert W.var().item() == pytest.approx(target, abs=5 * target * math.sqrt(2 / W.numel()))
    assert abs(W.mean().item()) < 5 * math.sqrt(target / W.numel())
    b = torch.cat([net[0].bias, net[2].bias]).detach().double()
    assert b.var().item() == pytest.approx(info.C_b, abs=5 * info.C_b * math.sqrt(2 / b.numel()))
    assert net[0].weight.requires_grad and net[0].weight.grad_fn is None


def test_explicit_values_activation_argument_and_reproducibility():
    net = _mlp(torch.nn.Tanh())
    info = critical_(net, C_b=0.05, C_W=2.5)
    assert (info.C_b, info.C_W) == (0.05, 2.5)
    # sigmoid has no criticality: explicit values work, defaults do not
    sig = _mlp(torch.nn.Sigmoid())
    with pytest.raises(ValueError, match="no critical initialization"):
        critical_(sig)
    assert critical_(sig, C_b=0.1, C_W=3.0).C_W == 3.0
    # the activation given by name overrides detection; callables and Activations work too
    assert critical_(sig, "tanh").C_W == 1.0
    assert critical_(sig, pdlt.activation("erf")).C_W == pytest.approx(math.pi / 4)
    a, b = _mlp(torch.nn.Tanh()), _mlp(torch.nn.Tanh())
    critical_(a, C_b=0.1, generator=torch.Generator().manual_seed(3))
    critical_(b, C_b=0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[2].weight, b[2].weight) and torch.equal(a[2].bias, b[2].bias)
    # pdlt's own modules carry their activation
    mod = pdlt.MLP("gelu", depth=3, width=16, input_dim=4).torch_module(seed=0)
    assert critical_(mod).activation == "gelu"
    # any other torch activation is used as a callable
    assert critical_(_mlp(torch.nn.Mish())).universality_class == "half-stable"


def test_bad_modules():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        critical_("not a module")
    with pytest.raises(ValueError, match="no nn.Linear"):
        critical_(torch.nn.Sequential(torch.nn.Tanh()))
    mixed = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.ReLU()
    )
    with pytest.raises(ValueError, match="mixes activations"):
        critical_(mixed)
    with pytest.raises(ValueError, match="could not find an activation"):
        critical_(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(ValueError):
        critical_(_mlp(torch.nn.Tanh()), C_W=-1.0)
    with pytest.raises(ValueError):
        critical_(_mlp(torch.nn.Tanh()), C_b=float("nan"))


def test_compare_gains():
    """Kaiming's ReLU gain √2 is critical (C_W = 2 = 1/A_2, book §5.2); tanh's 5/3 gives
    C_W = 25/9, chaotic with χ_⊥ = (25/9)⟨sech⁴⟩ at its K* > 0; sigmoid has no criticality."""
    df = compare_gains().set_index("nonlinearity")
    assert df.loc["relu", "torch is critical"]
    assert df.loc["leaky_relu(0.01)", "torch is critical"]
    assert not df.loc["tanh", "torch is critical"]
    assert df.loc["tanh", "phase at torch's init"] == "chaotic"
    c = pdlt.criticality("tanh", 0.0, 25 / 9)
    assert df.loc["tanh", "χ_⊥ at torch's init"] == pytest.approx(c.chi_perp, rel=1e-12)
    assert df.loc["sigmoid", "class"] == "none"


def test_critically_initialized_gelu_module_keeps_its_kernel():
    """End to end: nn.Sequential GELU networks (depth 30, width 128) set up by critical_ and fed
    an input with K^{(1)} = K* keep E[z²] ≈ K* through the last hidden layer (half-stable point,
    book §5.3.4). Bar: 4 se + 0.01 ℓ²/n K* (the O(1/n) shift, see test_criticality_mc)."""
    cp = pdlt.critical_point("gelu")
    width, depth, M = 128, 30, 60
    x = torch.ones(1, 8) * math.sqrt((cp.K_star - cp.C_b) / cp.C_W)
    gen = torch.Generator().manual_seed(5)
    z2 = []
    for _ in range(M):
        net = _mlp(torch.nn.GELU(), width, depth + 1)
        critical_(net, generator=gen)
        with torch.no_grad():
            h = x
            for m in list(net)[:-1]:
                h = m(h)
        z2.append(float((h**2).mean()))
    # h is σ(z^{(30)}); its mean square is g(K*) = (K* − C_b)/C_W at infinite width
    z2 = np.array(z2)
    target = (cp.K_star - cp.C_b) / cp.C_W
    se = z2.std(ddof=1) / math.sqrt(M)
    assert abs(z2.mean() - target) <= 4 * se + 0.01 * depth**2 / width * target


def test_cli_criticality():
    runner = CliRunner()
    res = runner.invoke(app, ["criticality", "swish", "--C-b", "0.1", "--C-W", "2.0"])
    assert res.exit_code == 0, res.output
    assert "half-stable" in res.output and "0.55514" in res.output
    assert "calculate_gain" in res.output
    bad = runner.invoke(app, ["criticality", "nope"])
    assert bad.exit_code != 0
    bad = runner.invoke(app, ["criticality", "tanh", "--C-W", "-1"])
    assert bad.exit_code != 0
    none = runner.invoke(app, ["criticality", "sigmoid", "--no-gains"])
    assert none.exit_code == 0 and "no criticality" in none.output


def test_report_section_quick(tmp_path):
    from pdlt.report import ReportConfig
    from pdlt.report.sections.criticality import criticality_section

    sec = criticality_section(ReportConfig(activation="tanh", quick=True, out=tmp_path))
    assert sec.id == "criticality" and "Phase diagram" in sec.body
    assert len(sec.summary) == 4
    assert all(row["status"] == "ok" for row in sec.summary)
