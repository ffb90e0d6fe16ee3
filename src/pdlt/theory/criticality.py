"""Criticality for any activation (book ch. 5; Poole et al. 2016, Schoenholz et al. 2016).

A single input's kernel follows the one-dimensional map (book §4.3, §5.1)

    K^{(ℓ+1)} = F(K^{(ℓ)}) ≡ C_b + C_W g(K^{(ℓ)}),       g(K) = ⟨σ(z)²⟩_K.

Its fixed points K* = F(K*) and the two susceptibilities there decide how signals behave in
deep networks (book §5.1):

    χ_∥(K) = C_W g'(K) = (C_W/K) ⟨z σ(z) σ'(z)⟩_K        perturbations of the norm,
    χ_⊥(K) = C_W ⟨σ'(z)²⟩_K                               perturbations of the angle, and
                                                          the squared gradient per layer.

Away from the fixed point the two kinds of perturbation decay (or grow) like e^{−ℓ/ξ}: the depth
scales ξ_∥ = 1/|log χ_∥(K*)| and ξ_⊥ = 1/|log χ_c| (the papers' ξ_q and ξ_c), with χ_c the slope
of the correlation map at its stable fixed point c*. The book's **criticality** is χ_∥ = χ_⊥ = 1
(book §5.2–5.3); the papers' order-to-chaos boundary is χ_⊥(K*) = 1 alone (a line in the
(C_b, C_W) plane, :func:`critical_line`).

Public entry points: :func:`criticality` (one setting), :func:`critical_line`,
:func:`critical_point`, :func:`universality_class`, :func:`phase_diagram`, and the
susceptibilities :func:`chi_parallel`, :func:`chi_perp`.

Numerics: every 1-D Gaussian expectation is :func:`pdlt.gaussian.expect` (composite
Gauss–Legendre, ~1e-13 relative for K ≲ 10²; accuracy degrades slowly for K ≫ 10² with steep
activations). Fixed points are bracketed by sign changes on a logarithmic grid of K and refined by
Brent's method (scalar results) or vectorised bisection (phase diagrams) to ~1e-13 relative; a
fixed point where F − K touches zero without changing sign (the half-stable critical points) is
found by minimising |F − K| near the grid's local minima. Correlation maps use the Mehler series
of :mod:`pdlt.gaussian` (exact up to its Parseval tail bound). Taylor coefficients σ_p = σ^{(p)}(0)
come from nested autograd (float64 round-off, ~1e-15).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from scipy import optimize

from pdlt.activations import Activation, activation
from pdlt.gaussian import expect, hermite_coefficients, pair_expectation

Tensor = torch.Tensor
ActivationLike = str | Activation | Callable[[Tensor], Tensor]

_DT = torch.float64
#: |χ − 1| at or below this counts as exactly critical (ξ = inf).
CRITICAL_TOL = 1e-9
#: Fixed points are searched for in [0, K_MAX].
K_MAX = 1e2
_K_GRID = np.concatenate([[0.0], np.logspace(-8.0, math.log10(K_MAX), 401)])
# The ratio χ_∥/χ_⊥ is scanned on this grid for nonzero critical points (book §5.3).
_RATIO_GRID = np.logspace(-4.0, math.log10(K_MAX), 301)
# expect() sizes its Gauss–Legendre rule by the largest standard deviation in a call (and a rule
# of q nodes costs O(q³) to build once), so variances are evaluated in bands of √K.
_BANDS = (0.0, 1.3, 5.0, 20.0, math.inf)
_KMAX_MEHLER = 320

# --------------------------------------------------------------------------------------------
# validation


def _act(spec: ActivationLike) -> Activation:
    return activation(spec)


def _positive(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} (it is a variance), got {v}")
    return v


def _grid(name: str, value: object, *, allow_zero: bool) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a number or a non-empty 1-D array, got shape {arr.shape}")
    for v in arr:
        _positive(name, v, allow_zero=allow_zero)
    return arr


def _clear_overflow(fn):
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


def _t(K: object) -> Tensor:
    return torch.as_tensor(K, dtype=_DT)


def _expect(f: Callable[[Tensor, Tensor], Tensor], act: Activation, K: Tensor) -> Tensor:
    """⟨f(z, K)⟩_K for each K (any shape), by :func:`pdlt.gaussian.expect` in bands of K.

    ``f(z, K)`` receives z of shape (m, Q) and the band's variances as (m, 1)."""
    with torch.no_grad():  # user callables' autograd derivatives must not build graphs here
        return _expect_banded(f, act, K)


def _expect_banded(f: Callable[[Tensor, Tensor], Tensor], act: Activation, K: Tensor) -> Tensor:
    flat = K.reshape(-1)
    out = torch.empty_like(flat)
    for lo, hi in zip(_BANDS[:-1], _BANDS[1:], strict=True):
        sel = (flat >= lo) & (flat < hi) if lo > 0 else flat < hi
        if sel.any():
            # a dummy variance at the band's top fixes the rule size per band, so that only a
            # handful of rules is ever built
            top = K_MAX if math.isinf(hi) else hi
            Kb = torch.cat([flat[sel], torch.tensor([max(top, float(flat[sel].max()))], dtype=_DT)])
            vals = expect(lambda z, Kb=Kb: f(z, Kb[:, None]), Kb, kinks=act.kinks)
            out[sel] = vals[:-1]
    return out.reshape(K.shape)


def _g(act: Activation, K: Tensor) -> Tensor:
    """g(K) = ⟨σ(z)²⟩_K (book §4.3, single input)."""
    return _expect(lambda z, k: act.fn(z) ** 2, act, K)


def _m4(act: Activation, K: Tensor) -> Tensor:
    """⟨σ(z)⁴⟩_K."""
    return _expect(lambda z, k: act.fn(z) ** 4, act, K)


def _dsq(act: Activation, K: Tensor) -> Tensor:
    """⟨σ'(z)²⟩_K."""
    return _expect(lambda z, k: act.d1(z) ** 2, act, K)


def _zss(act: Activation, K: Tensor) -> Tensor:
    """⟨z σ(z) σ'(z)⟩_K = K g'(K) (Stein's lemma)."""
    return _expect(lambda z, k: z * act.fn(z) * act.d1(z), act, K)


def _g_second(act: Activation, K: Tensor) -> Tensor:
    """g''(K) = (1/4K⁴) ⟨σ² (z⁴ − 6Kz² + 3K²)⟩_K (theory note §2), K > 0."""
    val = _expect(lambda z, k: act.fn(z) ** 2 * (z**4 - 6 * k * z**2 + 3 * k**2), act, K)
    return val / (4 * K**4)


def _slopes_at_zero(act: Activation) -> tuple[float, float]:
    """One-sided slopes σ'(0⁺), σ'(0⁻)."""
    eps = torch.tensor([1e-150, -1e-150], dtype=_DT)
    with torch.no_grad():
        d = act.d1(eps)
    return float(d[0]), float(d[1])


def _g_prime_at_zero(act: Activation) -> float:
    """lim_{K→0} g'(K): σ'(0)² + σ(0)σ''(0) for σ smooth at 0, (σ'(0⁺)² + σ'(0⁻)²)/2 at a kink
    with σ(0) = 0 (inf at a kink with σ(0) ≠ 0)."""
    zero = torch.zeros(1, dtype=_DT)
    s0 = float(act.fn(zero)[0])
    if 0.0 not in act.kinks:
        with torch.no_grad():
            return float(act.d1(zero)[0]) ** 2 + s0 * float(act.d2(zero)[0])
    sp, sm = _slopes_at_zero(act)
    if s0 == 0.0:
        return (sp * sp + sm * sm) / 2
    return math.copysign(math.inf, s0 * (sp - sm)) if sp != sm else sp * sp


@_clear_overflow
def chi_parallel(
    activation: ActivationLike, K: float | np.ndarray | Tensor, C_W: float = 1.0
) -> np.ndarray | float:
    """Parallel susceptibility χ_∥(K) = C_W dg/dK = (C_W/K) ⟨z σ σ'⟩_K (book §5.1).

    Vectorised over K (≥ 0); at K = 0 the limit C_W (σ'(0)² + σ(0)σ''(0)) is used.
    Returns a float for scalar K, else a float64 numpy array.
    """
    act = _act(activation)
    C_W = _positive("C_W", C_W, allow_zero=False)
    Kt = _check_K(K)
    out = _chi_parallel(act, Kt, C_W)
    return float(out) if out.ndim == 0 else out.numpy()


@_clear_overflow
def chi_perp(
    activation: ActivationLike, K: float | np.ndarray | Tensor, C_W: float = 1.0
) -> np.ndarray | float:
    """Perpendicular susceptibility χ_⊥(K) = C_W ⟨σ'(z)²⟩_K (book §5.1).

    χ_⊥ is the slope of the correlation map at coincident inputs and the factor by which the
    mean squared gradient grows per layer going backwards. Vectorised over K ≥ 0.
    """
    act = _act(activation)
    C_W = _positive("C_W", C_W, allow_zero=False)
    out = C_W * _dsq(act, _check_K(K))
    return float(out) if out.ndim == 0 else out.numpy()


def _check_K(K: object) -> Tensor:
    Kt = _t(K)
    if not torch.isfinite(Kt).all() or (Kt < 0).any():
        raise ValueError("K must be finite and ≥ 0 (it is a variance)")
    return Kt


def _chi_parallel(act: Activation, K: Tensor, C_W: float | Tensor) -> Tensor:
    safe = torch.where(K > 0, K, 1.0)
    val = _zss(act, safe) / safe
    return C_W * torch.where(K > 0, val, torch.full_like(val, _g_prime_at_zero(act)))


# --------------------------------------------------------------------------------------------
# Taylor coefficients and the K* = 0 class (book §5.3)


def taylor_coefficients(activation: ActivationLike, order: int = 5) -> tuple[float, ...]:
    """σ_p = σ^{(p)}(0) for p = 0 … order, by nested autograd (float64 round-off).

    The K* = 0 universality class is decided by these (book §5.3): σ_0 = 0, σ_1 ≠ 0 and
    a_1 = σ_3/σ_1 + ¾(σ_2/σ_1)² < 0. For an activation with a kink at 0 they are one-sided
    (autograd's choice) and not meaningful; :func:`critical_point` does not use them there.
    """
    act = _act(activation)
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 8:
        raise ValueError(f"order must be an int in 0..8, got {order!r}")
    with torch.enable_grad():
        z = torch.zeros((), dtype=_DT, requires_grad=True)
        y = act.fn(z)
        out = [float(y.detach())]
        for _ in range(order):
            if not y.requires_grad:
                out.append(0.0)
                continue
            (y,) = torch.autograd.grad(y, z, create_graph=True, allow_unused=True)
            if y is None:
                y = torch.zeros((), dtype=_DT)
            out.append(float(y.detach()))
    return tuple(out)


def _k_zero_coefficients(s: Sequence[float]) -> tuple[float, float, float]:
    """(a_1, a_2, b_1) of the small-K expansions at C_b = 0, C_W = 1/σ_1² (book §5.3; theory
    note §7.2): F(K) = K + a_1K² + a_2K³, χ_∥ = 1 + 2a_1K + 3a_2K², χ_⊥ = 1 + b_1K."""
    s1 = s[1]
    a1 = s[3] / s1 + 0.75 * (s[2] / s1) ** 2
    a2 = 0.25 * s[5] / s1 + 0.625 * s[2] * s[4] / s1**2 + (5 / 12) * (s[3] / s1) ** 2
    b1 = s[3] / s1 + (s[2] / s1) ** 2
    return a1, a2, b1


def _homogeneity(act: Activation) -> tuple[float, float] | None:
    """(a₊, a₋) if σ(λz) = λσ(z) for λ > 0 (scale-invariant class, book §5.2), else None."""
    if act.homogeneous is not None:
        return act.homogeneous
    z = torch.linspace(-6.0, 6.0, 49, dtype=_DT)
    base = act.fn(z)
    scale = float(base.abs().max()) + 1e-300
    for lam in (0.37, 2.0, 5.3):
        if float((act.fn(lam * z) - lam * base).abs().max()) > 1e-12 * lam * scale:
            return None
    one = torch.tensor([1.0, -1.0], dtype=_DT)
    v = act.fn(one)
    return float(v[0]) + 0.0, float(-v[1]) + 0.0


# --------------------------------------------------------------------------------------------
# fixed points of the kernel map


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point K* = C_b + C_W g(K*) of the single-input kernel map (book §5.1).

    ``stability``: "stable" (χ_∥ < 1), "unstable" (χ_∥ > 1), "stable from above" /
    "stable from below" (χ_∥ = 1, half-stable: F(K) − K ≈ c (K − K*)², book §5.3.4) or
    "marginal" (χ_∥ = 1 and flat).
    """

    K: float
    chi_parallel: float
    stability: str


def _h(act: Activation, C_b: float, C_W: float) -> Callable[[float], float]:
    return lambda K: C_b + C_W * float(_g(act, _t([K]))[0]) - K


def _stability(act: Activation, K: float, chi: float, C_W: float) -> str:
    if chi < 1 - CRITICAL_TOL:
        return "stable"
    if chi > 1 + CRITICAL_TOL:
        return "unstable"
    if K == 0.0:
        # only K ≥ 0 is reachable: the sign of F − K just above 0 decides
        small = float(_h_above_zero(act, C_W))
        return "stable" if small < 0 else "unstable" if small > 0 else "marginal"
    c = 0.5 * C_W * float(_g_second(act, _t([K]))[0])
    if c < 0:
        return "stable from above"
    if c > 0:
        return "stable from below"
    return "marginal"


def _h_above_zero(act: Activation, C_W: float) -> float:
    """F(K) − K at K = 1e-4 with C_b = 0 (the side of a K* = 0 fixed point that matters)."""
    K = _t([1e-4])
    return float(C_W * _g(act, K)[0] - K[0])


def _fixed_points(act: Activation, C_b: float, C_W: float) -> list[FixedPoint]:
    """All fixed points in [0, K_MAX]: sign changes of F − K and tangent zeros.

    Scale-invariant σ has the linear map F(K) = C_b + C_W A_2 K (book §5.2), solved exactly:
    K* = C_b/(1 − C_W A_2) when C_W A_2 < 1, none when > 1 (or = 1 with C_b > 0), and the
    marginal line "every K" when C_W A_2 = 1 and C_b = 0 (returned as an empty list; see
    :func:`criticality`)."""
    hom = _homogeneity(act)
    if hom is not None:
        chi = C_W * (hom[0] ** 2 + hom[1] ** 2) / 2
        if chi < 1 - CRITICAL_TOL:
            K = C_b / (1 - chi)
            return [FixedPoint(K, chi, "stable")] if K <= K_MAX else []
        if chi <= 1 + CRITICAL_TOL:
            return []
        return [FixedPoint(0.0, chi, "unstable")] if C_b == 0 else []
    Kg = _t(_K_GRID)
    h = (C_b + C_W * _g(act, Kg) - Kg).numpy()
    roots: list[float] = []
    if abs(h[0]) <= 1e-300:
        roots.append(0.0)
    hfun = _h(act, C_b, C_W)
    for i in range(len(h) - 1):
        lo, hi = _K_GRID[i], _K_GRID[i + 1]
        if h[i] == 0.0 and i > 0:
            roots.append(lo)
        elif h[i] * h[i + 1] < 0:
            roots.append(optimize.brentq(hfun, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=200))
    # tangent (double) zeros: local minima of |h| without a sign change
    ah = np.abs(h)
    for i in range(1, len(h) - 1):
        if ah[i] <= ah[i - 1] and ah[i] <= ah[i + 1] and h[i - 1] * h[i + 1] > 0 and h[i] != 0:
            if ah[i] > 1e-3 * max(1.0, _K_GRID[i]):
                continue
            res = optimize.minimize_scalar(
                lambda k: abs(hfun(k)),
                bounds=(_K_GRID[i - 1], _K_GRID[i + 1]),
                method="bounded",
                options={"xatol": 1e-13 * _K_GRID[i]},
            )
            if abs(res.fun) <= 1e-10 * max(1.0, res.x) and all(
                abs(res.x - r) > 1e-6 * max(1.0, r) for r in roots
            ):
                roots.append(float(res.x))
    roots = sorted(set(roots))
    chis = _chi_parallel(act, _t(roots), C_W).numpy() if roots else []
    return [
        FixedPoint(float(k), float(c), _stability(act, float(k), float(c), C_W))
        for k, c in zip(roots, chis, strict=True)
    ]


def _attractor(points: Sequence[FixedPoint], h1: float, K1: float) -> FixedPoint | None:
    """The fixed point a kernel starting at K1 flows to (F increasing: the nearest one in the
    direction of F(K1) − K1); None if it flows past K_MAX."""
    if h1 == 0.0:
        for p in points:
            if abs(p.K - K1) <= 1e-12 * max(1.0, K1):
                return p
    if h1 > 0:
        above = [p for p in points if p.K >= K1 * (1 - 1e-12)]
        return above[0] if above else None
    below = [p for p in points if p.K <= K1 * (1 + 1e-12)]
    return below[-1] if below else None


# --------------------------------------------------------------------------------------------
# the correlation map of two inputs at the fixed point


def _mehler_weights(act: Activation, K: Tensor) -> Tensor:
    """a_k(K) = c_k² so that ⟨σ(z_a)σ(z_b)⟩ = Σ_k a_k c^k for K_aa = K_bb = K, K_ab = cK."""
    c, _ = hermite_coefficients(act.fn, K, _KMAX_MEHLER, kinks=act.kinks)
    return c**2


def _poly(a: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Σ_k a_k c^k and its derivative Σ_k k a_k c^{k−1}; a (M, k), c (M, Q) → (M, Q) each."""
    p = a[:, -1:].expand_as(c).clone()
    dp = torch.zeros_like(c)
    for k in range(a.shape[1] - 2, -1, -1):
        dp = dp * c + p
        p = p * c + a[:, k : k + 1]
    return p, dp


_C_GRID = torch.as_tensor(
    np.concatenate([np.linspace(-1.0, 0.9, 191), 1.0 - np.logspace(-1.0, -9.0, 161)]), dtype=_DT
)


def _correlation_fixed_point(
    act: Activation, K: Tensor, C_b: Tensor, C_W: Tensor
) -> tuple[Tensor, Tensor]:
    """(c*, χ_c) for the chaotic points: the largest stable root c* < 1 of the correlation map
    c ↦ (C_b + C_W ⟨σ(z_a)σ(z_b)⟩_{K*(1,c)})/K* (Poole et al. 2016), and its slope
    χ_c = C_W ⟨σ'(z_a)σ'(z_b)⟩ there. K, C_b, C_W: (M,)."""
    a = _mehler_weights(act, K)
    grid = _C_GRID.expand(K.shape[0], -1)
    p, _ = _poly(a, grid)
    P = (C_b[:, None] + C_W[:, None] * p) / K[:, None] - grid
    # walk down from c = 1: the first grid point with P ≥ 0 brackets the root with its right
    # neighbour (P < 0 just below 1 when χ_⊥ > 1).
    n = grid.shape[1]
    nonneg = P >= 0
    nonneg[:, -1] = False
    idx = torch.where(
        nonneg.any(dim=1),
        n - 1 - torch.argmax(torch.flip(nonneg, dims=[1]).to(torch.int8), dim=1),
        torch.zeros(K.shape[0], dtype=torch.long),
    )
    lo = grid.gather(1, idx[:, None])[:, 0]
    hi = grid.gather(1, torch.clamp(idx + 1, max=n - 1)[:, None])[:, 0]
    for _ in range(60):
        mid = (lo + hi) / 2
        pm, _ = _poly(a, mid[:, None])
        val = (C_b + C_W * pm[:, 0]) / K - mid
        lo = torch.where(val >= 0, mid, lo)
        hi = torch.where(val >= 0, hi, mid)
    c = (lo + hi) / 2
    _, dp = _poly(a, c[:, None])
    return c, C_W * dp[:, 0] / K


# --------------------------------------------------------------------------------------------
# one setting: criticality()


def _xi(chi: float) -> float:
    """Depth scale 1/|log χ|, inf exactly at χ = 1 (within CRITICAL_TOL)."""
    if abs(chi - 1.0) <= CRITICAL_TOL:
        return math.inf
    if chi <= 0:
        return 0.0
    return 1.0 / abs(math.log(chi))


def _phase(chi_perp_: float) -> str:
    if abs(chi_perp_ - 1.0) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi_perp_ < 1 else "chaotic"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, tuple) and v and isinstance(v[0], FixedPoint):
        return "[" + ", ".join(f"{p.K:.8g} ({p.stability})" for p in v) + "]"
    return repr(v)


class _Printable:
    """SciPy-style result printing: one field per line."""

    def __repr__(self) -> str:
        names = [f.name for f in fields(self) if f.repr]  # type: ignore[arg-type]
        width = max(len(n) for n in names)
        lines = [f"{n.rjust(width)}: {_fmt(getattr(self, n))}" for n in names]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


@dataclass(frozen=True, repr=False)
class Criticality(_Printable):
    """Signal propagation at one (C_b, C_W) (book §5.1; Schoenholz et al. 2016).

    Attributes
    ----------
    activation, C_b, C_W:
        The setting.
    K1:
        The first-layer kernel the flow starts from (default C_b + C_W: an input with
        |x|² = n_0).
    K_star:
        The fixed point K^{(ℓ)} flows to from K1; ``inf`` if the kernel grows without bound
        (beyond ``K_MAX``), e.g. ReLU with C_W > 2.
    fixed_points:
        Every fixed point in [0, K_MAX], with its stability.
    chi_parallel, chi_perp:
        χ_∥(K*), χ_⊥(K*); for K* = inf their values at K_MAX (the growth regime).
    c_star:
        Stable fixed point of the correlation of two distinct inputs: 1 in the ordered phase
        and at criticality, < 1 in the chaotic phase.
    chi_c:
        Slope of the correlation map at c* (= χ_⊥ when c* = 1).
    xi_parallel, xi_perp:
        Depth scales 1/|log χ_∥| and 1/|log χ_c| (the papers' ξ_q and ξ_c): |K^{(ℓ)} − K*| and
        |c^{(ℓ)} − c*| shrink like e^{−ℓ/ξ}. ``inf`` exactly at χ = 1, where the approach is a
        power law instead.
    phase:
        "ordered" (χ_⊥ < 1), "chaotic" (χ_⊥ > 1) or "critical" (χ_⊥ = 1).
    note:
        Plain-language remarks (unbounded kernel, a depth scale that is infinite, …).
    """

    activation: str
    C_b: float
    C_W: float
    K1: float
    K_star: float
    fixed_points: tuple[FixedPoint, ...]
    chi_parallel: float
    chi_perp: float
    c_star: float
    chi_c: float
    xi_parallel: float
    xi_perp: float
    phase: str
    note: str = ""

    def to_frame(self) -> pd.DataFrame:
        """One row with every scalar field."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fixed_points"}
        row["fixed_points"] = ", ".join(f"{p.K:.6g} ({p.stability})" for p in self.fixed_points)
        return pd.DataFrame([row])


@_clear_overflow
def criticality(
    activation: ActivationLike, C_b: float = 0.0, C_W: float = 1.0, *, K1: float | None = None
) -> Criticality:
    """Fixed point, susceptibilities, depth scales and phase at one (C_b, C_W) (book §5.1).

    Parameters
    ----------
    activation:
        Built-in name, :class:`~pdlt.activations.Activation` or elementwise torch callable.
    C_b, C_W:
        Bias and weight variances (C_b ≥ 0, C_W > 0).
    K1:
        First-layer kernel of the input whose flow decides which fixed point is meant (default
        C_b + C_W, an input with |x|² = n_0).

    Examples
    --------
    >>> c = pdlt.criticality("tanh", C_b=0.05, C_W=2.5)
    >>> c.phase, round(c.K_star, 6), round(c.c_star, 6), round(c.xi_perp, 3)
    ('chaotic', 1.063958, 0.446804, 11.796)
    """
    act = _act(activation)
    C_b = _positive("C_b", C_b, allow_zero=True)
    C_W = _positive("C_W", C_W, allow_zero=False)
    K1 = C_b + C_W if K1 is None else _positive("K1", K1, allow_zero=True)
    points = _fixed_points(act, C_b, C_W)
    notes = []
    h1 = _h(act, C_b, C_W)(K1)
    star = _attractor(points, h1, K1)
    hom = _homogeneity(act)
    if hom is not None and abs(C_W * (hom[0] ** 2 + hom[1] ** 2) / 2 - 1) <= CRITICAL_TOL:
        if C_b == 0:
            star = FixedPoint(K1, 1.0, "marginal")
            points = [star]
            notes.append("scale-invariant at C_W = 1/A_2, C_b = 0: every K is a fixed point")
        else:
            star = None  # the kernel grows linearly, K^(ℓ) = K1 + (ℓ − 1) C_b
    if star is None:
        K_star = math.inf
        Keval = _t([K_MAX])
        notes.append(
            f"the kernel grows without bound (no fixed point above K1 = {K1:g} up to "
            f"{K_MAX:g}); susceptibilities are quoted at K = {K_MAX:g}"
        )
    else:
        K_star = star.K
        Keval = _t([K_star])
        if star.stability not in ("stable", "marginal"):
            notes.append(f"K* is {star.stability}")
    chi_par = float(_chi_parallel(act, Keval, C_W)[0])
    chi_p = float(C_W * _dsq(act, Keval)[0])
    phase = _phase(chi_p)
    if phase == "chaotic" and math.isfinite(K_star) and K_star > 0:
        c, _ = _correlation_fixed_point(act, Keval, _t([C_b]), _t([C_W]))
        c_star = float(c[0])
        Kc = K_star * torch.tensor([[1.0, c_star], [c_star, 1.0]], dtype=_DT)
        chi_c = float(C_W * pair_expectation(act, Kc, (1, 1))[0, 1])
    else:
        c_star, chi_c = 1.0, chi_p
        if phase == "chaotic":
            notes.append("no finite K* > 0 to define a correlation fixed point; c* = 1 quoted")
    xi_par, xi_perp = _xi(chi_par), _xi(chi_c)
    if math.isinf(xi_par):
        notes.append("χ_∥ = 1: ξ_∥ = inf, the kernel approaches K* as a power law")
    if math.isinf(xi_perp):
        notes.append(
            "on the order–chaos boundary (χ_⊥ = 1): ξ_⊥ = inf, correlations approach c* as a "
            "power law; ξ is ill-conditioned (∝ 1/|χ − 1|) near the boundary"
        )
    return Criticality(
        activation=act.name,
        C_b=C_b,
        C_W=C_W,
        K1=K1,
        K_star=K_star,
        fixed_points=tuple(points),
        chi_parallel=chi_par,
        chi_perp=chi_p,
        c_star=c_star,
        chi_c=chi_c,
        xi_parallel=xi_par,
        xi_perp=xi_perp,
        phase=phase,
        note="; ".join(notes),
    )


# --------------------------------------------------------------------------------------------
# the order–chaos boundary χ_⊥(K*) = 1


@dataclass(frozen=True, repr=False)
class CriticalLine(_Printable):
    """The order–chaos boundary χ_⊥(K*) = 1 as C_W(C_b) (Poole et al. 2016; book §5.1).

    ``C_b``, ``C_W``, ``K_star`` are float64 arrays (floats for a scalar C_b). ``exists`` marks
    where a boundary with a stable K* was found; elsewhere C_W and K_star are NaN and ``note``
    says why. For the scale-invariant class the boundary is C_W = 1/A_2 at every C_b, with
    K* = inf for C_b > 0 (the kernel grows linearly) and K* = NaN for C_b = 0 (every K is
    a fixed point, see ``note``).
    """

    activation: str
    C_b: np.ndarray | float
    C_W: np.ndarray | float
    K_star: np.ndarray | float
    exists: np.ndarray | bool
    note: str = ""

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "C_b": np.atleast_1d(self.C_b),
                "C_W": np.atleast_1d(self.C_W),
                "K_star": np.atleast_1d(self.K_star),
                "exists": np.atleast_1d(self.exists),
            }
        )


def _phi_grid(act: Activation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """φ(K) = K − g(K)/⟨σ'²⟩_K on the K grid (K > 0): the boundary at C_b passes through the
    K with φ(K) = C_b, at C_W = 1/⟨σ'²⟩_K. Also returns ⟨σ'²⟩ and χ_∥ there (at that C_W)."""
    Kg = _t(_K_GRID[1:])
    d = _dsq(act, Kg)
    phi = Kg - _g(act, Kg) / d
    chi = _zss(act, Kg) / Kg / d
    return phi.numpy(), d.numpy(), chi.numpy()


@_clear_overflow
def critical_line(activation: ActivationLike, C_b: float | np.ndarray = 0.0) -> CriticalLine:
    """C_W on the order–chaos boundary χ_⊥(K*) = 1 for each C_b (Poole et al. 2016; book §5.1).

    On the boundary K* = C_b + g(K*)/⟨σ'²⟩_{K*} and C_W = 1/⟨σ'²⟩_{K*}: a 1-D root in K per C_b,
    bracketed on a grid and refined by Brent's method. Where several roots exist, the one with a
    stable K* (χ_∥ ≤ 1) and smallest K is taken.

    Examples
    --------
    >>> round(pdlt.critical_line("tanh", C_b=0.3).C_W, 6)
    2.505127
    """
    act = _act(activation)
    cb = _grid("C_b", C_b, allow_zero=True)
    scalar = np.ndim(C_b) == 0
    hom = _homogeneity(act)
    note = ""
    if hom is not None:
        A2 = (hom[0] ** 2 + hom[1] ** 2) / 2
        if A2 == 0:
            raise ValueError(f"activation {act.name!r} is identically zero")
        C_W = np.full_like(cb, 1.0 / A2)
        K_star = np.where(cb > 0, np.inf, np.nan)
        exists = np.ones_like(cb, dtype=bool)
        note = (
            "scale-invariant: χ_⊥ = C_W A_2 for every K, so the boundary is C_W = 1/A_2; the "
            "kernel grows linearly for C_b > 0 (K* = inf) and every K is a fixed point at C_b = 0 "
            "(K* = NaN)"
        )
    else:
        C_W, K_star, exists = _critical_line_general(act, cb)
        if not exists.all():
            note = "no boundary with a stable fixed point at the C_b marked exists=False"
    if scalar:
        return CriticalLine(
            act.name, float(cb[0]), float(C_W[0]), float(K_star[0]), bool(exists[0]), note
        )
    return CriticalLine(act.name, cb, C_W, K_star, exists, note)


def _critical_line_general(
    act: Activation, cb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Kg = _K_GRID[1:]
    phi, _, _ = _phi_grid(act)

    def phi_fn(K: float) -> float:
        Kt = _t([K])
        return float(Kt[0] - _g(act, Kt)[0] / _dsq(act, Kt)[0])

    # φ at K → 0: −σ(0)²/σ'(0)² (0 when σ(0) = 0, so that C_b = 0 sits at K* = 0).
    zero = torch.zeros(1, dtype=_DT)
    s0 = float(act.fn(zero)[0])
    d0 = float(_dsq(act, zero)[0])
    phi0 = -s0 * s0 / d0 if d0 > 0 else -math.inf
    C_W = np.full_like(cb, np.nan)
    K_star = np.full_like(cb, np.nan)
    for j, b in enumerate(cb):
        if b == 0.0 and phi0 == 0.0:
            C_W[j], K_star[j] = 1.0 / d0, 0.0
            continue
        r = phi - b
        candidates = []
        if phi0 - b < 0 < r[0] or phi0 - b > 0 > r[0]:
            candidates.append(
                optimize.brentq(lambda k, b=b: phi_fn(k) - b, 0.0, Kg[0], xtol=1e-300)
            )
        for i in np.nonzero(r[:-1] * r[1:] < 0)[0]:
            candidates.append(
                optimize.brentq(
                    lambda k, b=b: phi_fn(k) - b, Kg[i], Kg[i + 1], xtol=1e-15, rtol=1e-15
                )
            )
        for K in candidates:
            Kt = _t([K])
            cw = 1.0 / float(_dsq(act, Kt)[0])
            if float(_chi_parallel(act, Kt, cw)[0]) <= 1 + CRITICAL_TOL:
                C_W[j], K_star[j] = cw, K
                break
    return C_W, K_star, np.isfinite(C_W)


# --------------------------------------------------------------------------------------------
# the book's criticality χ_∥ = χ_⊥ = 1 and universality classes (book §5.2–5.3)

UNIVERSALITY_CLASSES = ("scale-invariant", "K*=0", "half-stable", "none")


@dataclass(frozen=True, repr=False)
class CriticalPoint(_Printable):
    """The book's criticality χ_∥(K*) = χ_⊥(K*) = 1 for an activation (book §5.2–5.3).

    Attributes
    ----------
    universality_class:
        "scale-invariant" (ReLU family: χ_∥ = χ_⊥ = C_W A_2 for every K, book §5.2), "K*=0"
        (tanh, sin, …: C_b = 0, C_W = 1/σ_1², K^{(ℓ)} → 0 as a power law, §5.3.3),
        "half-stable" (SWISH, GELU: a nonzero K* stable from one side only, §5.3.4), or "none"
        (sigmoid, softplus, …: no (C_b ≥ 0, C_W) makes both susceptibilities 1, §5.3.2).
    C_b, C_W, K_star:
        The critical initialization and its fixed point; None when no criticality exists
        (and K_star None for the scale-invariant class: every K is a fixed point).
    chi_parallel, chi_perp:
        The susceptibilities there (1 up to root-finding accuracy).
    stability:
        Which perturbations of K* die away ("marginal", "stable from above/below", …).
    taylor:
        σ_0 … σ_5 (None when σ has a kink at 0).
    a1, a2, b1:
        K* = 0 class: F(K) = K + a_1K² + a_2K³, χ_⊥ = 1 + b_1K at criticality (book §5.3.3).
    p_parallel, p_perp:
        Critical exponents: δK_[1] ∝ ℓ^{−p_∥}, δδK_[2] ∝ ℓ^{−p_⊥}; and K^{(ℓ)} ≈ 1/(−a_1 ℓ).
    A2, A4:
        Scale-invariant class: (a₊² + a₋²)/2, (a₊⁴ + a₋⁴)/2.
    kink_power:
        K* = 0 class with a kink at 0 (ELU, SELU): (A, p) of F(K) − K ≈ A K^p at criticality,
        fitted at K = 1e-7, 1e-6 (ELU: A → −√(2/π), p → 3/2, so K^{(ℓ)} ≈ 4/(A²ℓ²) = 2π/ℓ²).
    vertex_growth:
        ν in V^{(ℓ)}/(n (K^{(ℓ)})²) ≈ ν ℓ/n, the linear growth of the normalized four-point vertex
        at criticality (book §5.4): 3A_4/A_2² − 1 (scale-invariant), 2/3 (K* = 0 class),
        C_W² Var_{K*}[σ²]/K*² (half-stable, started at K*).
    others:
        Further critical points found (e.g. the K* = 0 point of SWISH, half-stable and useless).
    note:
        Why, in words (and why not, when the class is "none").
    """

    activation: str
    universality_class: str
    C_b: float | None
    C_W: float | None
    K_star: float | None
    chi_parallel: float | None
    chi_perp: float | None
    stability: str | None
    taylor: tuple[float, ...] | None = None
    a1: float | None = None
    a2: float | None = None
    b1: float | None = None
    p_parallel: float | None = None
    p_perp: float | None = None
    A2: float | None = None
    A4: float | None = None
    vertex_growth: float | None = None
    kink_power: tuple[float, float] | None = None
    others: tuple[dict, ...] = field(default_factory=tuple)
    note: str = ""

    @property
    def exists(self) -> bool:
        return self.universality_class != "none"

    def to_frame(self) -> pd.DataFrame:
        keys = (
            "activation universality_class C_b C_W K_star chi_parallel chi_perp stability "
            "a1 b1 p_perp A2 A4 vertex_growth"
        ).split()
        return pd.DataFrame([{k: getattr(self, k) for k in keys}])


def _ratio_crossings(act: Activation) -> list[dict]:
    """Nonzero K with χ_∥/χ_⊥ = ⟨zσσ'⟩/(K⟨σ'²⟩) = 1 (independent of C_W), C_b ≥ 0 or not."""
    Kr = _t(_RATIO_GRID)
    r = (_zss(act, Kr) / (Kr * _dsq(act, Kr)) - 1).numpy()

    def ratio(K: float) -> float:
        Kt = _t([K])
        return float(_zss(act, Kt)[0] / (K * _dsq(act, Kt)[0]) - 1)

    out = []
    for i in np.nonzero(r[:-1] * r[1:] < 0)[0]:
        K = optimize.brentq(ratio, _RATIO_GRID[i], _RATIO_GRID[i + 1], xtol=1e-14, rtol=1e-15)
        Kt = _t([K])
        C_W = 1.0 / float(_dsq(act, Kt)[0])
        C_b = K - C_W * float(_g(act, Kt)[0])
        c = 0.5 * C_W * float(_g_second(act, Kt)[0])
        side = "stable from above" if c < 0 else "stable from below" if c > 0 else "marginal"
        out.append({"K_star": K, "C_b": C_b, "C_W": C_W, "curvature": c, "stability": side})
    return out


@lru_cache(maxsize=64)
def _critical_point_cached(act: Activation) -> CriticalPoint:
    name = act.name
    hom = _homogeneity(act)
    if hom is not None:
        ap, am = hom
        A2, A4 = (ap * ap + am * am) / 2, (ap**4 + am**4) / 2
        if A2 == 0:
            raise ValueError(f"activation {name!r} is identically zero")
        return CriticalPoint(
            activation=name,
            universality_class="scale-invariant",
            C_b=0.0,
            C_W=1.0 / A2,
            K_star=None,
            chi_parallel=1.0,
            chi_perp=1.0,
            stability="marginal",
            A2=A2,
            A4=A4,
            p_parallel=0.0,
            p_perp=0.0,
            vertex_growth=3 * A4 / A2**2 - 1,
            note=(
                f"scale-invariant (a₊ = {ap:g}, a₋ = {am:g}): χ_∥ = χ_⊥ = C_W A_2 at every K, so "
                "C_b = 0, C_W = 1/A_2 makes every K a fixed point (book §5.2)"
            ),
        )
    zero = torch.zeros(1, dtype=_DT)
    s0 = float(act.fn(zero)[0])
    crossings = _ratio_crossings(act)
    valid = [c for c in crossings if c["C_b"] >= -1e-12]
    kzero: dict | None = None
    taylor = None
    if 0.0 not in act.kinks:
        taylor = taylor_coefficients(act, 5)
    if abs(s0) <= 1e-12:
        if taylor is not None and taylor[1] != 0.0:
            a1, a2, b1 = _k_zero_coefficients(taylor)
            kzero = {
                "K_star": 0.0,
                "C_b": 0.0,
                "C_W": 1.0 / taylor[1] ** 2,
                "a1": a1,
                "a2": a2,
                "b1": b1,
                "stability": "stable" if a1 < 0 else "stable from below" if a1 > 0 else "marginal",
            }
        elif taylor is None:
            kzero = _kinked_k_zero(act)
    others: list[dict] = []
    if kzero is not None and kzero["stability"] == "stable":
        others = valid
        a1, b1 = kzero.get("a1"), kzero.get("b1")
        smooth = a1 is not None
        p_perp = b1 / a1 if smooth else None
        note = f"K* = 0 class: σ(0) = 0, C_b = 0, C_W = 1/σ'(0)² = {kzero['C_W']:.10g}; " + (
            f"a_1 = {a1:.6g} < 0, so K^(ℓ) ≈ 1/({-a1:.6g} ℓ) → 0 and p_⊥ = b_1/a_1 = {p_perp:.6g} "
            "(book §5.3.3)"
            if smooth
            else f"σ has a kink at 0; F(K) − K ≈ {kzero['A']:.4g} K^{kzero['p']:.3f} < 0 at "
            f"small K, so K^(ℓ) → 0 like ℓ^(−{1 / (kzero['p'] - 1):.3g}) (not ℓ^(−1): the "
            "Taylor-coefficient exponents of book §5.3.3 do not apply)"
        )
        return CriticalPoint(
            activation=name,
            universality_class="K*=0",
            C_b=0.0,
            C_W=kzero["C_W"],
            K_star=0.0,
            chi_parallel=1.0,
            chi_perp=1.0,
            stability="stable",
            taylor=taylor,
            a1=a1,
            a2=kzero.get("a2"),
            b1=b1,
            p_parallel=2.0 if smooth else None,
            p_perp=p_perp,
            kink_power=None if smooth else (kzero["A"], kzero["p"]),
            vertex_growth=2.0 / 3.0 if smooth else None,
            others=tuple(others),
            note=note,
        )
    if valid:
        best = valid[0]
        K, C_W, C_b = best["K_star"], best["C_W"], max(0.0, best["C_b"])
        Kt = _t([K])
        m4 = float(_m4(act, Kt)[0])
        g = float(_g(act, Kt)[0])
        chi_par = float(_chi_parallel(act, Kt, C_W)[0])
        others = valid[1:] + ([kzero] if kzero is not None else [])
        return CriticalPoint(
            activation=name,
            universality_class="half-stable",
            C_b=C_b,
            C_W=C_W,
            K_star=K,
            chi_parallel=chi_par,
            chi_perp=1.0,
            stability=best["stability"],
            taylor=taylor,
            a1=kzero.get("a1") if kzero else None,
            b1=kzero.get("b1") if kzero else None,
            vertex_growth=C_W**2 * (m4 - g * g) / K**2,
            others=tuple(others),
            note=(
                f"half-stable: χ_∥ = χ_⊥ = 1 at K* = {K:.8g} with C_b = {C_b:.8g} ≥ 0; "
                f"F(K) − K ≈ {best['curvature']:.3g} (K − K*)², so K* is {best['stability']} "
                "(book §5.3.4)"
                + (
                    f"; the K* = 0 point (C_W = {kzero['C_W']:.6g}) is {kzero['stability']} only "
                    "(a_1 > 0), useless from K > 0"
                    if kzero
                    else ""
                )
            ),
        )
    why = _no_criticality_reason(act, s0, crossings, kzero)
    return CriticalPoint(
        activation=name,
        universality_class="none",
        C_b=None,
        C_W=None,
        K_star=None,
        chi_parallel=None,
        chi_perp=None,
        stability=None,
        taylor=taylor,
        others=tuple(crossings + ([kzero] if kzero else [])),
        note=why,
    )


def _kinked_k_zero(act: Activation) -> dict | None:
    """σ(0) = 0 with a kink at 0 (ELU, SELU): C_W = 2/(σ'(0⁺)² + σ'(0⁻)²) makes χ_∥ = χ_⊥ = 1 at
    K = 0; the sign of F(K) − K at small K (fitted as A K^p) decides stability."""
    sp, sm = _slopes_at_zero(act)
    if sp == 0.0 and sm == 0.0:
        return None
    C_W = 2.0 / (sp * sp + sm * sm)
    # two small K a decade apart; the next order is O(K^{1/2}) relative, ~1e-3 here
    Ks = _t([1e-7, 1e-6])
    d = (C_W * _g(act, Ks) - Ks).numpy()
    if d[0] == 0 or d[0] * d[1] <= 0:
        return {"K_star": 0.0, "C_b": 0.0, "C_W": C_W, "stability": "marginal", "A": 0.0, "p": 0.0}
    p = math.log(d[1] / d[0]) / math.log(10.0)
    A = d[1] / 1e-6**p
    stab = "stable" if A < 0 else "stable from below"
    return {"K_star": 0.0, "C_b": 0.0, "C_W": C_W, "stability": stab, "A": A, "p": p}


def _no_criticality_reason(
    act: Activation, s0: float, crossings: list[dict], kzero: dict | None
) -> str:
    Kr = _t([1e-3, 1.0, 1e3])
    r = (_zss(act, Kr) / (Kr * _dsq(act, Kr))).numpy()
    parts = [
        f"χ_∥/χ_⊥ (independent of C_W) = {r[0]:.4g}, {r[1]:.4g}, {r[2]:.4g} at K = 1e-3, 1, 1e3"
    ]
    if crossings:
        parts.append(
            "it equals 1 only where C_b = K* − C_W g(K*) < 0 ("
            + ", ".join(f"K* = {c['K_star']:.4g}: C_b = {c['C_b']:.4g}" for c in crossings)
            + ")"
        )
    else:
        parts.append("it never equals 1 at K > 0")
    if abs(s0) > 1e-12:
        parts.append(f"K* = 0 would need C_b = −C_W σ(0)² < 0 (σ(0) = {s0:.4g})")
    elif kzero is not None:
        parts.append(f"K* = 0 is {kzero['stability']} only (a_1 ≥ 0), not reached from K > 0")
    return "no criticality (book §5.3.2): " + "; ".join(parts)


@_clear_overflow
def critical_point(activation: ActivationLike) -> CriticalPoint:
    """The book's criticality χ_∥(K*) = χ_⊥(K*) = 1: C_b, C_W, K*, universality class and the
    stability of K* (book §5.2–5.3).

    Since χ_∥/χ_⊥ = ⟨zσσ'⟩/(K⟨σ'²⟩) does not depend on C_W, a critical K* > 0 is a root of that
    ratio − 1 (scanned on K ∈ [1e-4, 10^3.5], refined by Brent's method), then C_W = 1/⟨σ'²⟩_{K*}
    and C_b = K* − C_W g(K*), which must be ≥ 0. K* = 0 is decided by the Taylor coefficients
    (σ_0 = 0, a_1 < 0). Never raises for a valid activation: when no criticality exists the
    result has ``universality_class == "none"`` and a ``note`` saying why.

    Examples
    --------
    >>> cp = pdlt.critical_point("swish")
    >>> cp.universality_class, round(cp.C_b, 6), round(cp.C_W, 6)
    ('half-stable', 0.555143, 1.988005)
    """
    return _critical_point_cached(_act_key(activation))


def _act_key(activation: ActivationLike) -> Activation:
    # Built-ins are rebuilt on every activation(name) call; cache them by name and params.
    if isinstance(activation, str):
        return _builtin(activation.lower())
    return _act(activation)


@lru_cache(maxsize=32)
def _builtin(name: str) -> Activation:
    return _act(name)


def universality_class(activation: ActivationLike) -> str:
    """The universality class of an activation (book §5.2–5.3): "scale-invariant", "K*=0",
    "half-stable" or "none". See :func:`critical_point` for the numbers behind it."""
    return critical_point(activation).universality_class


# --------------------------------------------------------------------------------------------
# phase diagrams


@dataclass(frozen=True, repr=False)
class PhaseDiagram(_Printable):
    """Signal propagation over a (C_b, C_W) grid (book §5.1; Poole et al. 2016, Fig. 1).

    Every array has shape (len(C_b), len(C_W)); row i is C_b[i], column j is C_W[j]. Fields as
    in :class:`Criticality`; ``phase`` is a string array. ``boundary`` is the order–chaos line
    C_W(C_b) at the grid's C_b, ``critical`` the activation's :class:`CriticalPoint`.
    """

    activation: str
    C_b: np.ndarray
    C_W: np.ndarray
    K_star: np.ndarray
    chi_parallel: np.ndarray
    chi_perp: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_parallel: np.ndarray
    xi_perp: np.ndarray
    phase: np.ndarray
    boundary: CriticalLine
    critical: CriticalPoint

    def __repr__(self) -> str:
        counts = {p: int((self.phase == p).sum()) for p in ("ordered", "critical", "chaotic")}
        return (
            f"PhaseDiagram({self.activation!r}, C_b: {self.C_b.size} values in "
            f"[{self.C_b.min():g}, {self.C_b.max():g}], C_W: {self.C_W.size} values in "
            f"[{self.C_W.min():g}, {self.C_W.max():g}], phases {counts})"
        )

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (C_b, C_W)."""
        B, W = np.meshgrid(self.C_b, self.C_W, indexing="ij")
        cols = {"C_b": B, "C_W": W}
        for name in "K_star chi_parallel chi_perp c_star chi_c xi_parallel xi_perp phase".split():
            cols[name] = getattr(self, name)
        return pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in cols.items()})


def _vector_fixed_point(act: Activation, cb: Tensor, cw: Tensor, K1: Tensor) -> Tensor:
    """The fixed point each (C_b, C_W) flows to from K1 (inf if beyond K_MAX), vectorised:
    bracket on the K grid, then bisection to ~1e-14 relative."""
    Kg = _t(_K_GRID)
    h = cb[:, None] + cw[:, None] * _g(act, Kg)[None, :] - Kg[None, :]
    h1 = cb + cw * _g(act, K1) - K1
    G = Kg.shape[0]
    above = Kg[None, :] > K1[:, None]
    below = Kg[None, :] < K1[:, None]
    # flowing up: first grid point above K1 with h ≤ 0; bracket [previous point or K1, it]
    up_hit = above & (h <= 0)
    i_up = torch.argmax(up_hit.to(torch.int8), dim=1)
    has_up = up_hit.any(dim=1)
    # flowing down: last grid point below K1 with h ≥ 0
    down_hit = below & (h >= 0)
    i_down = G - 1 - torch.argmax(torch.flip(down_hit, dims=[1]).to(torch.int8), dim=1)
    has_down = down_hit.any(dim=1)
    lo = torch.where(
        h1 > 0,
        torch.maximum(Kg[torch.clamp(i_up - 1, min=0)], K1),
        Kg[i_down],
    )
    hi = torch.where(h1 > 0, Kg[i_up], torch.minimum(Kg[torch.clamp(i_down + 1, max=G - 1)], K1))
    found = torch.where(h1 > 0, has_up, has_down) | (h1 == 0)
    lo = torch.where(h1 == 0, K1, lo)
    hi = torch.where(h1 == 0, K1, hi)
    exact_lo = found & (h1 != 0) & (torch.where(h1 > 0, Kg[i_up], Kg[i_down]) == 0)
    active = found & (h1 != 0) & ~exact_lo
    for _ in range(48):  # brackets start ≤ 6 % wide: 2^-48 · 0.06 < 1e-15
        if not active.any():
            break
        mid = (lo[active] + hi[active]) / 2
        hm = cb[active] + cw[active] * _g(act, mid) - mid
        # h decreases through the root when flowing up (h > 0 below it), increases when down
        go_right = torch.where(h1[active] > 0, hm > 0, hm >= 0)
        lo[active] = torch.where(go_right, mid, lo[active])
        hi[active] = torch.where(go_right, hi[active], mid)
    K = torch.where(exact_lo, torch.zeros_like(lo), (lo + hi) / 2)
    return torch.where(found, K, torch.full_like(K, math.inf))


@_clear_overflow
def phase_diagram(
    activation: ActivationLike,
    C_b: float | np.ndarray | None = None,
    C_W: float | np.ndarray | None = None,
    *,
    K1: float | None = None,
) -> PhaseDiagram:
    """K*, χ_∥, χ_⊥, c*, χ_c, ξ_∥, ξ_⊥ and the phase over a (C_b, C_W) grid (book §5.1).

    Vectorised over the grid (one Gaussian quadrature call per bisection step for all points).
    Default grid: C_b ∈ [0, 1] (21 values) × C_W ∈ [0.25, 4] (31 values).
    ``K1`` as in :func:`criticality` (default C_b + C_W per point). Agrees with
    :func:`criticality` point by point to ~1e-10 (tested).

    Examples
    --------
    >>> pd_ = pdlt.phase_diagram("tanh", C_b=np.linspace(0, 0.5, 11), C_W=np.linspace(0.5, 3, 26))
    >>> pd_.chi_perp.shape
    (11, 26)
    """
    act = _act(activation)
    cb = _grid("C_b", np.linspace(0.0, 1.0, 21) if C_b is None else C_b, allow_zero=True)
    cw = _grid("C_W", np.linspace(0.25, 4.0, 31) if C_W is None else C_W, allow_zero=False)
    B, W = np.meshgrid(cb, cw, indexing="ij")
    b, w = _t(B.reshape(-1)), _t(W.reshape(-1))
    k1 = b + w if K1 is None else torch.full_like(b, _positive("K1", K1, allow_zero=True))
    hom = _homogeneity(act)
    if hom is None:
        Kstar = _vector_fixed_point(act, b, w, k1)
    else:  # linear map F(K) = C_b + C_W A_2 K, solved exactly (see _fixed_points)
        chi = w * (hom[0] ** 2 + hom[1] ** 2) / 2
        contracting = b / torch.clamp(1 - chi, min=1e-300)
        Kstar = torch.where(
            chi < 1 - CRITICAL_TOL,
            torch.where(contracting <= K_MAX, contracting, torch.full_like(b, math.inf)),
            torch.where(
                (torch.abs(chi - 1) <= CRITICAL_TOL) & (b == 0), k1, torch.full_like(b, math.inf)
            ),
        )
    finite = torch.isfinite(Kstar)
    Keval = torch.where(finite, Kstar, torch.full_like(Kstar, K_MAX))
    chi_par = _chi_parallel(act, Keval, w)
    chi_p = w * _dsq(act, Keval)
    c_star = torch.ones_like(b)
    chi_c = chi_p.clone()
    chaotic = (chi_p > 1 + CRITICAL_TOL) & finite & (Kstar > 0)
    if chaotic.any():
        c, s = _correlation_fixed_point(act, Kstar[chaotic], b[chaotic], w[chaotic])
        c_star[chaotic], chi_c[chaotic] = c, s

    def xi(chi: Tensor) -> Tensor:
        out = 1.0 / torch.abs(torch.log(torch.clamp(chi, min=1e-300)))
        return torch.where(torch.abs(chi - 1) <= CRITICAL_TOL, torch.full_like(out, math.inf), out)

    phase = np.where(
        np.abs(chi_p.numpy() - 1) <= CRITICAL_TOL,
        "critical",
        np.where(chi_p.numpy() < 1, "ordered", "chaotic"),
    )
    shape = B.shape

    def arr(t: Tensor) -> np.ndarray:
        return t.numpy().reshape(shape)

    return PhaseDiagram(
        activation=act.name,
        C_b=cb,
        C_W=cw,
        K_star=arr(Kstar),
        chi_parallel=arr(chi_par),
        chi_perp=arr(chi_p),
        c_star=arr(c_star),
        chi_c=arr(chi_c),
        xi_parallel=arr(xi(chi_par)),
        xi_perp=arr(xi(chi_c)),
        phase=phase.reshape(shape),
        boundary=critical_line(act, cb),
        critical=critical_point(act),
    )


# --------------------------------------------------------------------------------------------
# finite-width fluctuations along the critical flow (book §4.3, §5.4)


def _single_input_vertex(
    act: Activation, C_b: float, C_W: float, K1: float, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, V, G1) for ℓ = 1 … depth, single input, equal widths (theory note §4.3):

        K' = C_b + C_W g(K),   V' = C_W² [⟨σ⁴⟩_K − g(K)²] + χ_∥(K)² V,
        G1' = χ_∥(K) G1 + ½ C_W g''(K) V,     V^{(1)} = G1^{(1)} = 0.

    A private single-input version; the general multi-input vertex lives in ``theory/vertex``.
    """
    K = np.empty(depth)
    V = np.zeros(depth)
    G1 = np.zeros(depth)
    K[0] = K1
    for ell in range(depth - 1):
        Kt = _t([K[ell]])
        g = float(_g(act, Kt)[0])
        m4 = float(_m4(act, Kt)[0])
        chi = float(_chi_parallel(act, Kt, C_W)[0])
        gpp = float(_g_second(act, Kt)[0]) if K[ell] > 0 else 0.0
        K[ell + 1] = C_b + C_W * g
        V[ell + 1] = C_W**2 * (m4 - g * g) + chi**2 * V[ell]
        G1[ell + 1] = chi * G1[ell] + 0.5 * C_W * gpp * V[ell]
    return K, V, G1
