"""pdlt.init.critical_ on residual torch MLPs (book App. B): γ read from the module's forward,
the residual critical point C_W(γ) = (1 − γ²)C_W(0) (B.20–B.21), and the kernel of the
initialized real networks against pdlt.kernel of the equivalent pdlt.MLP(..., skip=γ)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pdlt
from pdlt.init import critical_


class UserBlock(torch.nn.Module):
    """A residual block as a user writes it: no attribute pdlt knows, γ only in forward."""

    def __init__(self, n: int, gamma: float) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(n, n)
        self.act = torch.nn.Tanh()
        self.g = gamma

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g * z + self.lin(self.act(z))


class UnitSkip(UserBlock):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.lin(self.act(z))


class PostActivation(UserBlock):
    """σ(γ z + W z + b): not the book's residual layer."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.act(self.g * z + self.lin(z))


class LoopNet(torch.nn.Module):
    """Skips added in the network's own forward loop (ReLU applied as a function)."""

    def __init__(self, n: int, depth: int, gamma: float) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(3, n)
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(n, n) for _ in range(depth - 2))
        self.out = torch.nn.Linear(n, 2)
        self.g = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inp(x)
        for lin in self.hidden:
            z = self.g * z + lin(torch.relu(z))
        return self.out(torch.relu(z))


def _user_net(block: type, n: int, depth: int, gamma: float) -> torch.nn.Sequential:
    blocks = [block(n, gamma) for _ in range(depth - 2)]
    return torch.nn.Sequential(
        torch.nn.Linear(3, n), *blocks, torch.nn.Tanh(), torch.nn.Linear(n, 1)
    )


def test_recognizes_residual_modules_and_sets_the_residual_critical_point():
    relu = pdlt.MLP("relu", depth=6, width=16, input_dim=3, skip=0.5).torch_module(seed=0)
    info = critical_(relu)
    assert info.skip == 0.5 and info.C_W == pytest.approx(2 * (1 - 0.25)) and info.C_b == 0.0
    assert len(info.residual_layers) == 4 and "skip=0.5" in repr(info)
    # the output layer is residual too when output_dim = width
    wide_out = pdlt.MLP("gelu", depth=4, width=8, input_dim=3, output_dim=8, skip=0.3)
    info = critical_(wide_out.torch_module(seed=1))
    cp = pdlt.critical_point("gelu", skip=0.3)
    assert (info.C_b, info.C_W, len(info.residual_layers)) == (cp.C_b, cp.C_W, 3)
    info = critical_(_user_net(UserBlock, 16, 6, -0.4))
    assert info.skip == pytest.approx(-0.4) and info.activation == "tanh"
    assert info.C_W == pytest.approx(1 - 0.16)
    info = critical_(_user_net(UserBlock, 16, 8, 0.4371234))  # off the 0.01 grid, float32
    assert info.skip == pytest.approx(0.4371234, abs=1e-5)
    info = critical_(LoopNet(16, 6, 0.6), "relu")
    assert info.skip == pytest.approx(0.6) and info.C_W == pytest.approx(2 * 0.64)
    assert info.residual_layers == ("hidden.0", "hidden.1", "hidden.2", "hidden.3")
    # a plain MLP with square hidden layers stays plain
    plain = pdlt.MLP("tanh", depth=4, width=8, input_dim=3).torch_module(seed=0)
    assert critical_(plain).skip == 0.0 and critical_(plain).C_W == 1.0
    # the probe runs in eval mode and restores the training flags
    net = _user_net(UserBlock, 8, 4, 0.5)
    net.train()
    critical_(net)
    assert all(m.training for m in net.modules())


def test_ambiguous_or_uncritical_residual_modules_raise():
    with pytest.raises(ValueError, match=r"γ = 1 \(z \+ f\(z\)\): there is no critical"):
        critical_(_user_net(UnitSkip, 8, 4, 1.0))
    assert critical_(_user_net(UnitSkip, 8, 4, 1.0), C_b=0.0, C_W=0.1).C_W == 0.1
    with pytest.raises(ValueError, match="cannot tell the residual connections"):
        critical_(_user_net(PostActivation, 8, 4, 0.5))
    normed = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8),
        torch.nn.Tanh(), torch.nn.Linear(8, 1),
    )  # fmt: skip
    with pytest.raises(ValueError, match="cannot tell the residual connections"):
        critical_(normed)
    assert critical_(normed, skip=0.0).C_W == 1.0  # the user says: no skips
    mixed = torch.nn.Sequential(torch.nn.Linear(3, 8), UserBlock(8, 0.3), UserBlock(8, 0.6))
    with pytest.raises(ValueError, match="different γ"):
        critical_(mixed)
    assert critical_(mixed, skip=0.6).C_W == pytest.approx(0.64)
    with pytest.raises(ValueError, match="cannot tell"):
        critical_(_user_net(UserBlock, 8, 4, 0.5)[1:])  # forward fails on the probe input
    with pytest.raises(ValueError, match=r"no critical initialization for \|γ\| ≥ 1"):
        critical_(_user_net(UserBlock, 8, 4, 0.5), skip=1.5)
    with pytest.raises(TypeError, match="skip"):
        critical_(_user_net(UserBlock, 8, 4, 0.5), skip="0.5")


def _layer_z2(net: torch.nn.Sequential, x: torch.Tensor) -> np.ndarray:
    """E_i[z_i^{(ℓ)2}] of one network after each weight layer, through its own forward."""
    out, h = [], x
    with torch.no_grad():
        for m in net:
            h = m(h)
            if isinstance(m, torch.nn.Linear | pdlt.network.ResidualBlock | UserBlock):
                out.append(float((h.double() ** 2).mean()))
    return np.array(out)


@pytest.mark.parametrize("case", ["relu-pdlt", "tanh-user"])
def test_critically_initialized_residual_module_has_the_residual_kernel(case):
    """Real residual networks (depth 20, γ = 0.5) initialized by critical_ against
    pdlt.kernel of pdlt.MLP(..., skip=γ) at the C_b, C_W critical_ set, at two widths.
    ReLU: E[z²] = K exactly at any width (σ² = z²/2 on a symmetric law) and K is constant
    (χ = 1): bar 4 se. Tanh (K* = 0, K decays like 1/ℓ): bar 4 se + ℓ/n·K (pdlt.agreement's K
    rule). Teeth: the plain critical point on the same ReLU net gives K growing by
    1 + γ² = 1.25 per layer, 69× at ℓ = 20."""
    act, gamma, depth, M = case.split("-")[0], 0.5, 20, 60
    gen = torch.Generator().manual_seed(11)
    x = torch.ones(1, 3)  # |x|² = n_0
    for n in (64, 128):
        z2 = []
        for m in range(M):
            if act == "relu":
                mlp = pdlt.MLP("relu", depth=depth, width=n, input_dim=3, skip=gamma)
                net = mlp.torch_module(seed=m)
            else:
                net = _user_net(UserBlock, n, depth, gamma)
            info = critical_(net, generator=gen)
            z2.append(_layer_z2(net, x))
        assert info.skip == gamma
        z2 = np.array(z2)[:, :-1]  # hidden layers 1 … L−1
        mean, se = z2.mean(0), z2.std(0, ddof=1) / math.sqrt(M)
        spec = pdlt.MLP(act, depth=depth, width=n, input_dim=3, skip=gamma, C_W=info.C_W,
                        C_b=info.C_b)  # fmt: skip
        K = pdlt.kernel(spec, x.double().numpy()).K[:-1, 0, 0]
        ell = np.arange(1, depth)
        bar = 4 * se + (0 if act == "relu" else ell / n * K)
        assert np.all(np.abs(mean - K) <= bar), (n, mean, K, bar)
        if act == "relu":
            assert np.allclose(K, K[0])
            plain_cp = pdlt.kernel(spec.with_(C_W=2.0), x.double().numpy()).K[:-1, 0, 0]
            assert plain_cp[-1] > 50 * plain_cp[0]  # what the plain critical point would do
        else:
            assert K[-1] < 0.5 * K[0]  # the K*=0 decay is resolved, not a constant
