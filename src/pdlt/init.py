"""Critical initialization of torch modules (book ch. 5), in the style of ``torch.nn.init``.

:func:`critical_` draws every ``nn.Linear`` of a module as the book's MLP does,

    W_ij ~ N(0, C_W / fan_in),        b_i ~ N(0, C_b),

with (C_b, C_W) the activation's critical point (:func:`pdlt.critical_point`). Critical values
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

import pandas as pd
import torch

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

    def __repr__(self) -> str:
        return (
            f"CriticalInit(activation={self.activation!r}, class={self.universality_class!r}, "
            f"C_b={self.C_b:.8g}, C_W={self.C_W:.8g}, layers={len(self.layers)})"
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
    generator: torch.Generator | None = None,
) -> CriticalInit:
    """Initialize every ``nn.Linear`` of ``module`` in place at criticality (book ch. 5).

    Weights are drawn from N(0, C_W/fan_in), biases from N(0, C_b), under ``torch.no_grad``.

    Parameters
    ----------
    module:
        Any module built from ``nn.Linear`` layers and activations (``nn.Sequential``, a custom
        module, pdlt's ``MLP.torch_module()``).
    activation:
        Name, :class:`~pdlt.activations.Activation` or callable; detected from the module's
        activation modules when omitted (``nn.Tanh``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.GELU``,
        ``nn.SiLU``, ``nn.ELU``, ``nn.SELU``, …; any other ``torch.nn`` activation is used as a
        callable).
    C_b, C_W:
        Explicit variances; the missing ones are the activation's critical values. An activation
        with no criticality (sigmoid, softplus) needs both.
    generator:
        For reproducible draws.

    Returns
    -------
    CriticalInit
        The activation, class, (C_b, C_W) and the names of the layers set.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    >>> pdlt.init.critical_(net)
    CriticalInit(activation='gelu', class='half-stable', C_b=0.17292239, C_W=1.9830583, layers=2)
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
    if activation is None and (C_b is None or C_W is None):
        act = _detect(module)
    else:
        act = _activation(activation) if activation is not None else None
    klass = "user-set"
    if C_b is None or C_W is None:
        assert act is not None
        cp = critical_point(act)
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
