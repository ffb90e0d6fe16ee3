"""What the criticality modules share (book ch. 5): validation of their arguments, the
single-input Gaussian expectations g(K) = ⟨σ²⟩_K and friends vectorised over K, the
susceptibilities χ_∥ and χ_⊥ (book §5.1), and SciPy-style result printing."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import fields

import numpy as np
import torch

from pdlt import _validation
from pdlt.activations import Activation, activation
from pdlt.gaussian import expect

Tensor = torch.Tensor
ActivationLike = str | Activation | Callable[[Tensor], Tensor]

DT = torch.float64
#: |χ − 1| at or below this counts as exactly critical (ξ = inf).
CRITICAL_TOL = 1e-9
#: Fixed points are searched for in [0, K_MAX].
K_MAX = 1e2
K_GRID = np.concatenate([[0.0], np.logspace(-8.0, math.log10(K_MAX), 401)])

# --------------------------------------------------------------------------------------------
# validation


def act_of(spec: ActivationLike) -> Activation:
    return activation(spec)


def positive(name: str, value: object, *, allow_zero: bool) -> float:
    """A variance-like scalar (≥ 0, or > 0), by the one boundary rule (:mod:`pdlt._validation`:
    bool, str, complex, NaN/inf rejected; numpy scalars, 0-d arrays, np.float32 accepted)."""
    return _validation.real(name, value, min=0.0, min_inclusive=allow_zero)


def grid(name: str, value: object, *, allow_zero: bool) -> np.ndarray:
    """A scalar or non-empty 1-D grid of variance-like values, float64 (the same rules)."""
    arr = _validation.real_array(name, value, min=0.0, min_inclusive=allow_zero, max_ndim=1)
    return np.atleast_1d(arr)


def clear_overflow(fn):
    """Public entry points: an activation that overflows under the Gaussian at the variances
    searched (K ≤ K_MAX) is a bad input, reported as a ValueError naming it."""

    @functools.wraps(fn)
    def wrapper(activation, *args, **kwargs):
        try:
            return fn(activation, *args, **kwargs)
        except FloatingPointError as exc:
            name = getattr(activation, "name", getattr(activation, "__name__", activation))
            raise ValueError(
                f"activation {name!r}: Gaussian expectations overflow for variances up to "
                f"K_MAX = {K_MAX:g} ({exc}); criticality needs σ(z) to grow at most polynomially"
            ) from exc

    return wrapper


# --------------------------------------------------------------------------------------------
# single-input Gaussian expectations (vectorised over K)


def renamed_first_kernel(K_first: float | None, K1: float | None) -> float | None:
    """The first-layer kernel K^{(1)} argument, ``K_first``; ``K1`` is its old name, renamed
    because ``K1`` means the 1/n kernel correction K^{{1}} everywhere else in pdlt."""
    if K1 is None:
        return K_first
    if K_first is not None:
        raise TypeError("pass the first-layer kernel as K_first only (K1 is its old name)")
    warnings.warn(
        "K1= is renamed K_first= (K1 is the 1/n kernel correction elsewhere in pdlt)",
        FutureWarning,
        stacklevel=3,
    )
    return K1


def as_t(K: object) -> Tensor:
    return torch.as_tensor(K, dtype=DT)


def expect_K(f: Callable[..., Tensor], act: Activation, K: Tensor, **kw) -> Tensor:
    """⟨f(z)⟩_K for each K (any shape), by :func:`pdlt.gaussian.expect`."""
    return expect(f, K, kinks=act.kinks, **kw)


def mean_sigma2(act: Activation, K: Tensor) -> Tensor:
    """g(K) = ⟨σ(z)²⟩_K (book §4.3, single input)."""
    return expect_K(lambda z: act.fn(z) ** 2, act, K)


def mean_sigma4(act: Activation, K: Tensor) -> Tensor:
    """⟨σ(z)⁴⟩_K."""
    return expect_K(lambda z: act.fn(z) ** 4, act, K)


def mean_dsigma2(act: Activation, K: Tensor) -> Tensor:
    """⟨σ'(z)²⟩_K."""
    return expect_K(lambda z: act.d1(z) ** 2, act, K)


def mean_z_sigma_dsigma(act: Activation, K: Tensor) -> Tensor:
    """⟨z σ(z) σ'(z)⟩_K = K g'(K) (Stein's lemma)."""
    return expect_K(lambda z: z * act.fn(z) * act.d1(z), act, K)


def g_second(act: Activation, K: Tensor) -> Tensor:
    """g''(K) = (1/4K⁴) ⟨σ² (z⁴ − 6Kz² + 3K²)⟩_K = ⟨σ² He_4(z/√K)⟩_K/(4K²) (two Stein
    steps), K > 0."""
    val = expect_K(lambda z, u: act.fn(z) ** 2 * (u**4 - 6 * u**2 + 3), act, K, with_unit=True)
    return val / (4 * K**2)


def g_prime_at_zero(act: Activation) -> float:
    """lim_{K→0} g'(K): σ'(0)² + σ(0)σ''(0) for σ smooth at 0, (σ'(0⁺)² + σ'(0⁻)²)/2 at a kink
    with σ(0) = 0 (inf at a kink with σ(0) ≠ 0)."""
    zero = torch.zeros(1, dtype=DT)
    s0 = float(act.fn(zero)[0])
    if 0.0 not in act.kinks:
        with torch.no_grad():
            return float(act.d1(zero)[0]) ** 2 + s0 * float(act.d2(zero)[0])
    sp, sm = act.slopes_at_zero
    if s0 == 0.0:
        return (sp * sp + sm * sm) / 2
    return math.copysign(math.inf, s0 * (sp - sm)) if sp != sm else sp * sp


@clear_overflow
def chi_parallel(
    activation: ActivationLike, K: float | np.ndarray | Tensor, C_W: float = 1.0
) -> np.ndarray | float:
    """Parallel susceptibility χ_∥(K) = C_W dg/dK = (C_W/K) ⟨z σ σ'⟩_K (book §5.1).

    Vectorised over K (≥ 0); at K = 0 the limit C_W (σ'(0)² + σ(0)σ''(0)) is used.
    Returns a float for scalar K, else a float64 numpy array.
    """
    act = act_of(activation)
    C_W = positive("C_W", C_W, allow_zero=False)
    Kt = check_K(K)
    out = chi_parallel_at(act, Kt, C_W)
    return float(out) if out.ndim == 0 else out.numpy()


@clear_overflow
def chi_perp(
    activation: ActivationLike, K: float | np.ndarray | Tensor, C_W: float = 1.0
) -> np.ndarray | float:
    """Perpendicular susceptibility χ_⊥(K) = C_W ⟨σ'(z)²⟩_K (book §5.1).

    χ_⊥ is the slope of the correlation map at coincident inputs and the factor by which the
    mean squared gradient grows per layer going backwards. Vectorised over K ≥ 0.
    """
    act = act_of(activation)
    C_W = positive("C_W", C_W, allow_zero=False)
    out = C_W * mean_dsigma2(act, check_K(K))
    return float(out) if out.ndim == 0 else out.numpy()


def check_K(K: object) -> Tensor:
    """K (a variance, scalar or array) as a float64 tensor; the rules of
    :func:`pdlt._validation.real_array` (K ≥ 0)."""
    return as_t(_validation.real_array("K", K, min=0.0, allow_empty=True))


def chi_parallel_at(act: Activation, K: Tensor, C_W: float | Tensor) -> Tensor:
    safe = torch.where(K > 0, K, 1.0)
    val = mean_z_sigma_dsigma(act, safe) / safe
    return C_W * torch.where(K > 0, val, torch.full_like(val, g_prime_at_zero(act)))


def xi(chi: float) -> float:
    """Depth scale 1/|log χ|, inf exactly at χ = 1 (within CRITICAL_TOL)."""
    if abs(chi - 1.0) <= CRITICAL_TOL:
        return math.inf
    if chi <= 0:
        return 0.0
    return 1.0 / abs(math.log(chi))


def phase_of(chi_perp_: float) -> str:
    if abs(chi_perp_ - 1.0) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi_perp_ < 1 else "chaotic"


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, tuple) and v and hasattr(v[0], "stability"):
        return "[" + ", ".join(f"{p.K:.8g} ({p.stability})" for p in v) + "]"
    return repr(v)


class Printable:
    """SciPy-style result printing: one field per line."""

    def __repr__(self) -> str:
        names = [f.name for f in fields(self) if f.repr]  # type: ignore[arg-type]
        width = max(len(n) for n in names)
        lines = [f"{n.rjust(width)}: {fmt(getattr(self, n))}" for n in names]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def residual_factor(skip: object) -> tuple[float, float]:
    """(γ², 1 − γ²) for a residual γ = ``skip`` (book App. B), |γ| < 1.

    The residual single-input map F(K) = C_b + C_W g(K) + γ²K equals γ²K + (1 − γ²) F̃(K), with
    F̃ the plain map at (C_b, C_W)/(1 − γ²): the same fixed points and flow direction, and every
    susceptibility χ = (1 − γ²) χ̃ + γ² (the same for the two-input correlation map)."""
    g = _validation.real("skip", skip)
    if g * g >= 1.0:
        raise ValueError(
            f"skip must satisfy |γ| < 1 (the map γ²K + … has no finite fixed point otherwise), "
            f"got {g:g}"
        )
    return g * g, 1.0 - g * g
