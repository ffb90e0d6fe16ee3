"""Critical initialization of torch modules (book ch. 5), in the style of ``torch.nn.init``.

:func:`critical_` draws every ``nn.Linear`` of a module as the book's MLP does,

    W_ij ~ N(0, C_W / fan_in),        b_i ~ N(0, C_b),

with (C_b, C_W) the activation's critical point (:func:`pdlt.critical_point`). A residual MLP,
z^{(ℓ+1)} = γ z^{(ℓ)} + W σ(z^{(ℓ)}) + b (book eq. B.3), gets the residual critical point
C_W(γ) = (1 − γ²) C_W(0), C_b(γ) = (1 − γ²) C_b(0) (eqs. B.20–B.21) on every layer; γ is read
from what the module's ``forward`` computes (see :func:`critical_`). Critical values
for the built-in activations (book §5.2–5.3; computed by :func:`pdlt.critical_point`):

==============  =================  ==========  ============  ==========================
activation      class              C_b         C_W           torch gain² (Kaiming C_W)
==============  =================  ==========  ============  ==========================
linear          scale-invariant    0           1             1
relu            scale-invariant    0           2             2
leaky_relu(a)   scale-invariant    0           2/(1 + a²)    2/(1 + a²)
tanh            K*=0               0           1             25/9 ≈ 2.78 (chaotic)
sin             K*=0               0           1             —
erf             K*=0               0           π/4           —
elu, selu       K*=0 (kink at 0)   0           1, 0.4768     —, 9/16 (ordered)
gelu            half-stable        0.17292239  1.98305826    —
swish (silu)    half-stable        0.55514317  1.98800468    —
sigmoid         none               —           —             1
softplus, cos   none               —           —             —
==============  =================  ==========  ============  ==========================

:func:`compare_gains` prints the last column in full: whether torch's recommended gain is
critical for each nonlinearity torch knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import optimize

from pdlt import _validation
from pdlt.activations import Activation, activation
from pdlt.theory.criticality import ActivationLike, critical_point, criticality

__all__ = ["CriticalInit", "compare_gains", "critical_"]


@dataclass(frozen=True)
class CriticalInit:
    """What :func:`critical_` set: the activation, (C_b, C_W), and the layers it touched."""

    activation: str
    universality_class: str
    C_b: float
    C_W: float
    layers: tuple[str, ...]
    skip: float = 0.0
    residual_layers: tuple[str, ...] = ()

    def __repr__(self) -> str:
        res = f", skip={self.skip:g} on {len(self.residual_layers)} layers" if self.skip else ""
        return (
            f"CriticalInit(activation={self.activation!r}, class={self.universality_class!r}, "
            f"C_b={self.C_b:.8g}, C_W={self.C_W:.8g}, layers={len(self.layers)}{res})"
        )


def _torch_activation(mod: torch.nn.Module) -> Activation | None:
    """The pdlt Activation of an activation module, or None if ``mod`` is not one."""
    nn = torch.nn
    act = getattr(mod, "act", None)
    if isinstance(act, Activation):  # pdlt's own modules (MLP.torch_module)
        return act
    simple = {
        nn.Tanh: "tanh",
        nn.ReLU: "relu",
        nn.Sigmoid: "sigmoid",
        nn.SiLU: "swish",
        nn.SELU: "selu",
        nn.Identity: None,
    }
    for cls, name in simple.items():
        if type(mod) is cls:
            return activation(name) if name else None
    if type(mod) is nn.LeakyReLU:
        return activation("leaky_relu", slope=float(mod.negative_slope))
    if type(mod) is nn.ELU:
        return activation("elu", alpha=float(mod.alpha))
    if type(mod) is nn.GELU and mod.approximate == "none":
        return activation("gelu")
    if type(mod) is nn.Softplus and mod.beta == 1 and mod.threshold >= 20:
        return activation("softplus")
    if type(mod).__module__ == "torch.nn.modules.activation":
        # any other torch activation (Hardtanh, Mish, GELU(tanh), …): use the module itself
        label = type(mod).__name__

        def fn(z: torch.Tensor, mod: torch.nn.Module = mod) -> torch.Tensor:
            return mod(z)

        return activation(fn, name=label)
    return None


def _detect(module: torch.nn.Module) -> Activation:
    found: dict[str, Activation] = {}
    for m in module.modules():
        act = _torch_activation(m)
        if act is not None:
            key = repr(act)
            found.setdefault(key, act)
    if not found:
        raise ValueError(
            f"could not find an activation module in {type(module).__name__} (activations applied "
            "in forward() as functions are invisible); pass activation='tanh' (or another name or "
            "callable) to critical_"
        )
    if len(found) > 1:
        raise ValueError(
            f"{type(module).__name__} mixes activations {sorted(found)}; criticality is defined for "
            "one activation: pass activation=... (and C_b, C_W if you want others)"
        )
    return next(iter(found.values()))


def _variance(name: str, value: object, *, allow_zero: bool) -> float:
    return _validation.real(name, value, min=0.0, min_inclusive=allow_zero)


def critical_(
    module: torch.nn.Module,
    activation: ActivationLike | None = None,
    *,
    C_b: float | None = None,
    C_W: float | None = None,
    skip: float | None = None,
    generator: torch.Generator | None = None,
) -> CriticalInit:
    """Initialize every ``nn.Linear`` of ``module`` in place at criticality (book ch. 5, App. B).

    Weights are drawn from N(0, C_W/fan_in), biases from N(0, C_b), under ``torch.no_grad``.

    Residual networks. A residual MLP z^{(ℓ+1)} = γ z^{(ℓ)} + W^{(ℓ+1)} σ(z^{(ℓ)}) + b^{(ℓ+1)}
    (book eq. B.3 with ξ = 1) is critical at C_W(γ) = (1 − γ²) C_W(0) and C_b(γ) = (1 − γ²) C_b(0)
    (eqs. B.20–B.21, :func:`pdlt.critical_point` with ``skip``), which every ``nn.Linear`` then
    gets (as :class:`pdlt.MLP` with a scalar ``skip`` and C_W). When ``skip`` is not given, γ is
    read from the module's own ``forward``, so it does not matter how the block is written
    (pdlt's ``MLP.torch_module()``, a user block returning ``z + self.lin(self.act(z))`` or
    ``self.gamma * z + …``, or a loop in the network's ``forward``). Only when some ``nn.Linear``
    is square (a skip γ z needs n_ℓ = n_{ℓ+1}) the module is run once, on 4 standard-normal
    inputs of the first Linear's ``in_features``, in eval mode and without gradients, with hooks
    on the Linears (parameters untouched). Taking the Linears in the order they ran, with
    o_k the output of the k-th and z_1 = o_1, what is recognized is exactly the MLP chain

        input of Linear k+1 = σ(z_k),   z_k = o_k + γ_k z_{k−1}   (γ_k = 0 unless o_k, z_{k−1} agree
        in shape),   and the module's output = z_L (or σ(z_L)),

    with one scalar γ_k per layer, fitted and checked to float precision. All γ_k ≠ 0 must be
    equal (that γ is used); |γ| ≥ 1 (e.g. ``z + f(z)``, γ = 1) has no criticality and raises.
    A module the chain does not describe (a Linear called twice, a normalization or a projection
    on the skip path, a skip around two Linears, an output that is not z_L) raises ValueError
    rather than being initialized at a critical point that is not its own: pass ``skip`` (0 for
    no skip connections) or both ``C_b`` and ``C_W`` to initialize it anyway.

    Parameters
    ----------
    module:
        Any module built from ``nn.Linear`` layers and activations (``nn.Sequential``, a custom
        module, pdlt's ``MLP.torch_module()``), with or without residual connections.
    activation:
        Name, :class:`~pdlt.activations.Activation` or callable; detected from the module's
        activation modules when omitted (``nn.Tanh``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.GELU``,
        ``nn.SiLU``, ``nn.ELU``, ``nn.SELU``, …; any other ``torch.nn`` activation is used as a
        callable).
    C_b, C_W:
        Explicit variances; the missing ones are the activation's critical values. An activation
        with no criticality (sigmoid, softplus) needs both.
    skip:
        γ of the residual connections, |γ| < 1; None (default) reads it from ``forward`` (above).
    generator:
        For reproducible draws.

    Returns
    -------
    CriticalInit
        The activation, class, (C_b, C_W), the names of the layers set, γ and the residual layers.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    >>> pdlt.init.critical_(net)
    CriticalInit(activation='gelu', class='half-stable', C_b=0.17292239, C_W=1.9830583, layers=2)
    >>> res = pdlt.MLP("relu", depth=20, width=64, input_dim=4, skip=0.5).torch_module()
    >>> pdlt.init.critical_(res)
    CriticalInit(activation='relu', class='scale-invariant', C_b=0, C_W=1.5, layers=20, skip=0.5 on 18 layers)
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no nn.Linear layers to initialize")
    if C_b is not None:
        C_b = _variance("C_b", C_b, allow_zero=True)
    if C_W is not None:
        C_W = _variance("C_W", C_W, allow_zero=False)
    gamma = None if skip is None else _validation.real("skip", skip)
    if activation is None and (C_b is None or C_W is None):
        act = _detect(module)
    else:
        act = _activation(activation) if activation is not None else None
    klass = "user-set"
    residual: tuple[str, ...] = ()
    if C_b is None or C_W is None:
        assert act is not None
        if gamma is None:
            gamma, residual = _read_skip(module, linears, act)
        if gamma * gamma >= 1.0:
            raise ValueError(
                f"{type(module).__name__} has residual connections with γ = {gamma:g}"
                + (" (z + f(z))" if gamma == 1.0 else "")
                + ": there is no critical initialization for |γ| ≥ 1 (χ = γ² + C_W⟨σ'²⟩ > 1 for "
                "every C_W > 0, book App. B); scale the skip (γ z + f(z) with |γ| < 1) or pass "
                "both C_b and C_W"
            )
        cp = critical_point(act, skip=gamma)
        if not cp.exists:
            raise ValueError(
                f"activation {act.name!r} has no critical initialization ({cp.note}); pass both "
                "C_b and C_W, or use an activation with one (tanh for sigmoid)"
            )
        C_b = cp.C_b if C_b is None else C_b
        C_W = cp.C_W if C_W is None else C_W
        klass = cp.universality_class
    assert C_b is not None and C_W is not None
    with torch.no_grad():
        for _, lin in linears:
            fan_in = lin.weight.shape[1]
            lin.weight.normal_(0.0, math.sqrt(C_W / fan_in), generator=generator)
            if lin.bias is not None:
                lin.bias.normal_(0.0, math.sqrt(C_b), generator=generator)
    return CriticalInit(
        activation=act.name if act is not None else "unspecified",
        universality_class=klass,
        C_b=float(C_b),
        C_W=float(C_W),
        layers=tuple(n for n, _ in linears),
        skip=float(gamma or 0.0),
        residual_layers=residual,
    )


# --------------------------------------------------------------------------------------------
# reading the residual connections of a module from its forward


# γ's read from float32 forwards agree to ~1e-6; different skips differ by far more
_SKIP_TOL = 1e-4


def _read_skip(
    module: torch.nn.Module, linears: list[tuple[str, torch.nn.Linear]], act: Activation
) -> tuple[float, tuple[str, ...]]:
    """(γ, names of the residual Linears) of ``module``, read from one forward pass (the chain
    of :func:`critical_`'s docstring); (0, ()) when no Linear is square (no room for a skip)."""
    if not any(lin.in_features == lin.out_features for _, lin in linears):
        return 0.0, ()
    try:
        probe = _detect(module)  # the σ the forward applies, when it is a module
    except ValueError:
        probe = act
    gammas = _chain_skips(module, linears, probe)
    found = np.array([g for _, g in gammas if g != 0.0])
    if found.size and np.ptp(found) > _SKIP_TOL:
        raise ValueError(
            f"{type(module).__name__} has residual connections with different γ "
            f"{sorted({round(float(g), 4) for g in found})}; critical_ sets one critical point "
            "for the module: pass skip= (or C_b and C_W) to choose"
        )
    gamma = round(float(np.median(found)), 6) if found.size else 0.0
    return gamma, tuple(n for n, g in gammas if g != 0.0)


def _chain_skips(
    module: torch.nn.Module, linears: list[tuple[str, torch.nn.Linear]], act: Activation
) -> list[tuple[str, float]]:
    """γ_k of every Linear in the order the forward ran them; ValueError where the forward is
    not the residual MLP chain."""
    names = {id(m): n for n, m in linears}
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def hook(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls.append((names[id(mod)], args[0].detach(), out.detach()))

    first = linears[0][1]
    x = torch.randn(
        4,
        first.in_features,
        generator=torch.Generator().manual_seed(0),
        dtype=first.weight.dtype,
    ).to(first.weight.device)
    modes = {m: m.training for m in module.modules()}
    handles = [m.register_forward_hook(hook) for _, m in linears]
    try:
        module.eval()
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # noqa: BLE001  (any failure means: cannot read the chain)
        raise _unreadable(
            module, f"running it on a (4, {first.in_features}) input failed: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    if len({n for n, _, _ in calls}) != len(calls):
        raise _unreadable(module, "a Linear layer runs more than once in forward")
    if not isinstance(out, torch.Tensor):
        raise _unreadable(module, f"forward returns {type(out).__name__}, not a tensor")
    result: list[tuple[str, float]] = []
    z: torch.Tensor | None = None  # z_{k−1}; layer 1 reads x, which is not a preactivation
    for k, (name, _, o) in enumerate(calls):
        last = k == len(calls) - 1
        target = out if last else calls[k + 1][1]
        gamma = _fit_skip(z, o, target, _identity if last else act)
        if gamma is None and last:  # a module that ends in its activation returns σ(z_L)
            gamma = _fit_skip(z, o, target, act)
        if gamma is None:
            where = "the module's output" if last else f"the input of {calls[k + 1][0]!r}"
            raise _unreadable(
                module,
                f"{where} is neither σ(z) nor σ(z + γ z_prev) of the Linear {name!r} before it"
                + (" (nor z, for the last Linear)" if last else ""),
            )
        z = o if z is None or gamma == 0.0 else o + gamma * z
        result.append((name, gamma))
    return result


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _fit_skip(
    z_prev: torch.Tensor | None, o: torch.Tensor, target: torch.Tensor, sigma
) -> float | None:
    """The γ with σ(o + γ z_prev) = target to float precision (0 first), or None."""
    t = target.double()
    o, tol = o.double(), 1e-4 * (1.0 + float(target.abs().max()))
    if o.shape != t.shape:
        return None
    if float((sigma(o) - t).abs().max()) <= tol:
        return 0.0
    if z_prev is None or z_prev.shape != o.shape:
        return None
    zp = z_prev.double()

    def misfit(g: float) -> float:
        return float(((sigma(o + g * zp) - t) ** 2).mean())

    grid = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)
    errs = ((sigma(o + grid.view(-1, *([1] * o.ndim)) * zp) - t) ** 2).flatten(1).mean(1)
    g0 = round(float(grid[int(errs.argmin())]), 6)
    if float((sigma(o + g0 * zp) - t).abs().max()) <= tol:  # a γ on the 0.01 grid: done
        return g0
    g = optimize.minimize_scalar(
        misfit, bounds=(g0 - 0.01, g0 + 0.01), method="bounded", options={"xatol": 1e-10}
    ).x
    for cand in (round(g, 6), g):
        if float((sigma(o + cand * zp) - t).abs().max()) <= tol:
            return float(cand)
    return None


def _unreadable(module: torch.nn.Module, why: str) -> ValueError:
    return ValueError(
        f"cannot tell the residual connections of {type(module).__name__}: {why}. critical_ "
        "recognizes the MLP chain z_k = W_k σ(z_{k−1}) + b_k + γ z_{k−1} (book eq. B.3; see its "
        "docstring); pass skip=γ (0 for none) or both C_b and C_W to initialize it anyway"
    )


def _activation(spec: ActivationLike) -> Activation:
    if isinstance(spec, torch.nn.Module):
        act = _torch_activation(spec)
        if act is None:
            raise TypeError(f"{type(spec).__name__} is not an activation module")
        return act
    return activation(spec)


# torch.nn.init.calculate_gain's nonlinearities and the pdlt activation each stands for.
_TORCH_GAINS = (
    ("linear", "linear", {}),
    ("conv1d", "linear", {}),
    ("sigmoid", "sigmoid", {}),
    ("tanh", "tanh", {}),
    ("relu", "relu", {}),
    ("leaky_relu", "leaky_relu", {"param": 0.01}),
    ("leaky_relu", "leaky_relu", {"param": 0.2}),
    ("selu", "selu", {}),
)


def compare_gains() -> pd.DataFrame:
    """Is torch's recommended init critical? ``torch.nn.init.calculate_gain`` for every
    nonlinearity torch knows, beside pdlt's critical C_W (book ch. 5).

    Kaiming/Xavier-style inits draw W with std gain/√fan_in, i.e. C_W = gain², and usually zero
    biases (C_b = 0). For each row the table gives torch's C_W, pdlt's critical (C_b, C_W) and
    class, and χ_⊥ and the phase at torch's setting (C_b = 0): χ_⊥ > 1 means gradients grow
    like χ_⊥^ℓ going backwards and nearby inputs decorrelate (chaotic), χ_⊥ < 1 the opposite.
    """
    rows = []
    for nonlin, name, kw in _TORCH_GAINS:
        gain = torch.nn.init.calculate_gain(nonlin, kw.get("param"))
        act = activation(name, slope=kw["param"]) if kw else activation(name)
        cp = critical_point(act)
        torch_C_W = gain**2
        at = criticality(act, 0.0, torch_C_W)
        label = nonlin + (f"({kw['param']:g})" if kw else "")
        rows.append(
            {
                "nonlinearity": label,
                "torch gain": gain,
                "torch C_W = gain²": torch_C_W,
                "critical C_b": cp.C_b,
                "critical C_W": cp.C_W,
                "class": cp.universality_class,
                "χ_⊥ at torch's init": at.chi_perp,
                "phase at torch's init": at.phase,
                "torch is critical": bool(
                    cp.exists and cp.C_b == 0.0 and abs(torch_C_W - cp.C_W) <= 1e-9 * cp.C_W
                ),
            }
        )
    return pd.DataFrame(rows)
