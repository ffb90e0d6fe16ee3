"""Signal propagation at one setting (C_b, C_W), and the order–chaos boundary χ_⊥(K*) = 1 as a
line in the (C_b, C_W) plane (book §5.1; Poole et al. 2016, Schoenholz et al. 2016)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import torch
from scipy import optimize

from pdlt.activations import Activation
from pdlt.gaussian import pair_expectation
from pdlt.theory.criticality._common import (
    CRITICAL_TOL,
    DT,
    K_GRID,
    K_MAX,
    ActivationLike,
    Printable,
    act_of,
    as_t,
    chi_parallel_at,
    clear_overflow,
    grid,
    mean_dsigma2,
    mean_sigma2,
    mean_z_sigma_dsigma,
    phase_of,
    positive,
    renamed_first_kernel,
    residual_factor,
    xi,
)
from pdlt.theory.criticality.fixed_points import (
    FixedPoint,
    attractor,
    correlation_fixed_point,
    fixed_points,
    map_gap,
)


@dataclass(frozen=True, repr=False)
class Criticality(Printable):
    """Signal propagation at one (C_b, C_W) (book §5.1; Schoenholz et al. 2016).

    Attributes
    ----------
    activation, C_b, C_W:
        The setting.
    K_first:
        The first-layer kernel the flow starts from (default C_b + C_W: an input with
        |x|² = n_0).
    K_star:
        The fixed point K^{(ℓ)} flows to from K_first; ``inf`` if the kernel grows without bound
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
    K_first: float
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
    skip: float = 0.0

    @property
    def K1(self) -> float:
        """Old name of :attr:`K_first` (K1 means the 1/n kernel correction elsewhere)."""
        warnings.warn("Criticality.K1 is renamed K_first", FutureWarning, stacklevel=2)
        return self.K_first

    def to_frame(self) -> pd.DataFrame:
        """One row with every scalar field."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fixed_points"}
        row["fixed_points"] = ", ".join(f"{p.K:.6g} ({p.stability})" for p in self.fixed_points)
        return pd.DataFrame([row])


@clear_overflow
def criticality(
    activation: ActivationLike,
    C_b: float = 0.0,
    C_W: float = 1.0,
    *,
    K_first: float | None = None,
    K1: float | None = None,
    skip: float = 0.0,
) -> Criticality:
    """Fixed point, susceptibilities, depth scales and phase at one (C_b, C_W) (book §5.1).

    Parameters
    ----------
    activation:
        Built-in name, :class:`~pdlt.activations.Activation` or elementwise torch callable.
    C_b, C_W:
        Bias and weight variances (C_b ≥ 0, C_W > 0).
    K_first:
        First-layer kernel of the input whose flow decides which fixed point is meant (default
        C_b + C_W, an input with |x|² = n_0).
    skip:
        γ of a residual MLP (book App. B, eq. B.3): the map gains γ²K,
        F(K) = C_b + C_W g(K) + γ²K, and χ_∥, χ_⊥ (and χ_c) gain γ². Computed as the plain
        setting (C_b, C_W)/(1 − γ²) — the same fixed points and flow — with
        χ = (1 − γ²) χ̃ + γ² (``residual_factor``). Layer 1 reads the input (no skip), so
        K_first stays C_b + C_W.

    Examples
    --------
    >>> c = pdlt.criticality("tanh", C_b=0.05, C_W=2.5)
    >>> c.phase, round(c.K_star, 6), round(c.c_star, 6), round(c.xi_perp, 3)
    ('chaotic', 1.063958, 0.446804, 11.796)
    """
    act = act_of(activation)
    C_b = positive("C_b", C_b, allow_zero=True)
    C_W = positive("C_W", C_W, allow_zero=False)
    g2, f = residual_factor(skip)
    K_first = renamed_first_kernel(K_first, K1)
    K_first = C_b + C_W if K_first is None else positive("K_first", K_first, allow_zero=True)
    if g2 > 0.0:
        plain = criticality(act, C_b / f, C_W / f, K_first=K_first)
        return _residual(plain, C_b, C_W, math.sqrt(g2) * np.sign(float(skip)), g2, f)
    points = fixed_points(act, C_b, C_W)
    notes = []
    h1 = map_gap(act, C_b, C_W)(K_first)
    star = attractor(points, h1, K_first)
    hom = act.homogeneous
    if hom is not None and abs(C_W * (hom[0] ** 2 + hom[1] ** 2) / 2 - 1) <= CRITICAL_TOL:
        if C_b == 0:
            star = FixedPoint(K_first, 1.0, "marginal")
            points = [star]
            notes.append("scale-invariant at C_W = 1/A_2, C_b = 0: every K is a fixed point")
        else:
            star = None  # the kernel grows linearly, K^(ℓ) = K_first + (ℓ − 1) C_b
    if star is None:
        K_star = math.inf
        Keval = as_t([K_MAX])
        notes.append(
            f"the kernel grows without bound (no fixed point above K_first = {K_first:g} up to "
            f"{K_MAX:g}); susceptibilities are quoted at K = {K_MAX:g}"
        )
    else:
        K_star = star.K
        Keval = as_t([K_star])
        if star.stability not in ("stable", "marginal"):
            notes.append(f"K* is {star.stability}")
    chi_par = float(chi_parallel_at(act, Keval, C_W)[0])
    chi_p = float(C_W * mean_dsigma2(act, Keval)[0])
    phase = phase_of(chi_p)
    if phase == "chaotic" and math.isfinite(K_star) and K_star > 0:
        c, _ = correlation_fixed_point(act, Keval, as_t([C_b]), as_t([C_W]))
        c_star = float(c[0])
        Kc = K_star * torch.tensor([[1.0, c_star], [c_star, 1.0]], dtype=DT)
        chi_c = float(C_W * pair_expectation(act, Kc, (1, 1))[0, 1])
    else:
        c_star, chi_c = 1.0, chi_p
        if phase == "chaotic":
            notes.append("no finite K* > 0 to define a correlation fixed point; c* = 1 quoted")
    xi_par, xi_perp = xi(chi_par), xi(chi_c)
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
        K_first=K_first,
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


def _residual(plain: Criticality, C_b: float, C_W: float, gamma: float, g2: float, f: float):
    """The residual setting from the plain one at (C_b, C_W)/(1 − γ²): χ → (1 − γ²)χ + γ²."""

    def chi(c: float) -> float:
        return f * c + g2

    points = tuple(FixedPoint(p.K, chi(p.chi_parallel), p.stability) for p in plain.fixed_points)
    cpar, cperp, cc = chi(plain.chi_parallel), chi(plain.chi_perp), chi(plain.chi_c)
    note = (
        f"residual γ = {gamma:g}: F(K) = C_b + C_W g(K) + γ²K, the plain map at "
        f"(C_b, C_W)/(1 − γ²) = ({C_b / f:.6g}, {C_W / f:.6g}) with χ = (1 − γ²)χ̃ + γ²"
    )
    return replace(
        plain,
        C_b=C_b,
        C_W=C_W,
        fixed_points=points,
        chi_parallel=cpar,
        chi_perp=cperp,
        chi_c=cc,
        xi_parallel=xi(cpar),
        xi_perp=xi(cc),
        phase=phase_of(cperp),
        note="; ".join(n for n in (note, plain.note) if n),
        skip=gamma,
    )


# --------------------------------------------------------------------------------------------
# the order–chaos boundary χ_⊥(K*) = 1


@dataclass(frozen=True, repr=False)
class CriticalLine(Printable):
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
    Kg = as_t(K_GRID[1:])
    d = mean_dsigma2(act, Kg)
    phi = Kg - mean_sigma2(act, Kg) / d
    chi = mean_z_sigma_dsigma(act, Kg) / Kg / d
    return phi.numpy(), d.numpy(), chi.numpy()


@clear_overflow
def critical_line(
    activation: ActivationLike, C_b: float | np.ndarray = 0.0, *, skip: float = 0.0
) -> CriticalLine:
    """C_W on the order–chaos boundary χ_⊥(K*) = 1 for each C_b (Poole et al. 2016; book §5.1).

    With ``skip`` = γ (a residual MLP, book App. B) χ_⊥ = (1 − γ²)χ̃_⊥ + γ² = 1 exactly where the
    plain χ̃_⊥ = 1 at (C_b, C_W)/(1 − γ²): the line is the plain one at C_b/(1 − γ²), scaled by
    1 − γ² (the same K*).

    On the boundary K* = C_b + g(K*)/⟨σ'²⟩_{K*} and C_W = 1/⟨σ'²⟩_{K*}: a 1-D root in K per C_b,
    bracketed on a grid and refined by Brent's method. Where several roots exist, the one with a
    stable K* (χ_∥ ≤ 1) and smallest K is taken.

    Examples
    --------
    >>> round(pdlt.critical_line("tanh", C_b=0.3).C_W, 6)
    2.505127
    """
    act = act_of(activation)
    cb_user = grid("C_b", C_b, allow_zero=True)
    _, f = residual_factor(skip)
    cb = cb_user / f
    scalar = np.ndim(C_b) == 0
    hom = act.homogeneous
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
    C_W = C_W * f
    if f != 1.0:
        note = (note + "; " if note else "") + f"residual: plain line at C_b/(1 − γ²), C_W·{f:g}"
    if scalar:
        return CriticalLine(
            act.name, float(cb_user[0]), float(C_W[0]), float(K_star[0]), bool(exists[0]), note
        )
    return CriticalLine(act.name, cb_user, C_W, K_star, exists, note)


def _critical_line_general(
    act: Activation, cb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Kg = K_GRID[1:]
    phi, _, _ = _phi_grid(act)

    def phi_fn(K: float) -> float:
        Kt = as_t([K])
        return float(Kt[0] - mean_sigma2(act, Kt)[0] / mean_dsigma2(act, Kt)[0])

    # φ at K → 0: −σ(0)²/σ'(0)² (0 when σ(0) = 0, so that C_b = 0 sits at K* = 0).
    zero = torch.zeros(1, dtype=DT)
    s0 = float(act.fn(zero)[0])
    d0 = float(mean_dsigma2(act, zero)[0])
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
            Kt = as_t([K])
            cw = 1.0 / float(mean_dsigma2(act, Kt)[0])
            if float(chi_parallel_at(act, Kt, cw)[0]) <= 1 + CRITICAL_TOL:
                C_W[j], K_star[j] = cw, K
                break
    return C_W, K_star, np.isfinite(C_W)
