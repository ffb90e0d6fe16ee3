"""The book's criticality χ_∥ = χ_⊥ = 1 and the universality classes (book §5.2–5.3): the one
classifier every part of pdlt asks (criticality, learning rates, initialization).

Classes, from the activation's facts (:class:`~pdlt.activations.Activation`):

* **scale-invariant** (§5.2): σ(λz) = λσ(z) for λ > 0 (ReLU, leaky ReLU, linear — detected for
  user callables too): χ_∥ = χ_⊥ = C_W A_2 at every K, critical at C_b = 0, C_W = 1/A_2.
* **K*=0** (§5.3.3): σ(0) = 0, critical at C_b = 0, C_W = 2/(σ'(0⁺)² + σ'(0⁻)²), with the
  fixed point K* = 0 stable from above: F(K) − K ≈ A K^p with A < 0. For σ smooth at 0
  (tanh, sin, erf) p = 2, A = a_1 = σ_3/σ_1 + ¾(σ_2/σ_1)², K^{(ℓ)} ≈ 1/(−a_1ℓ) and
  χ_⊥ ≈ 1 − p_⊥/ℓ with p_⊥ = b_1/a_1. **ELU and SELU** have σ(0) = 0 and a kink at 0 (a jump of
  σ'' for ELU, of σ' for SELU): their K* = 0 point is critical and stable too, so they are in
  this class by the book's definition (χ_∥ = χ_⊥ = 1 at a stable K*), but the kink makes
  g(K) = ⟨σ²⟩ non-analytic at 0 — F(K) − K ≈ A K^{3/2} — so K^{(ℓ)} decays like ℓ⁻² instead
  of ℓ⁻¹ (ELU: K^{(ℓ)} ≈ 2π/ℓ²); χ_⊥ − 1 ≈ B K^{1/2} is still a power law ∝ 1/ℓ, with
  p_⊥ = B/((p − 1)A) (ELU: p_⊥ = 2). The fitted (A, p) is ``kink_power``.
* **half-stable** (§5.3.4): a nonzero K* with χ_∥ = χ_⊥ = 1, stable from one side (GELU, SWISH).
* **none** (§5.3.2): no (C_b ≥ 0, C_W) makes both susceptibilities 1 (sigmoid, softplus, cos).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from scipy import optimize

from pdlt._validation import real
from pdlt.activations import Activation
from pdlt.theory.criticality._common import (
    DT,
    ActivationLike,
    Printable,
    act_of,
    as_t,
    chi_parallel_at,
    clear_overflow,
    g_second,
    mean_dsigma2,
    mean_sigma2,
    mean_sigma4,
    mean_z_sigma_dsigma,
)
from pdlt.theory.criticality.fixed_points import K_MAX

# The ratio χ_∥/χ_⊥ is scanned on this grid for nonzero critical points (book §5.3).
_RATIO_GRID = np.logspace(-4.0, math.log10(K_MAX), 301)


# --------------------------------------------------------------------------------------------
# Taylor coefficients and the K* = 0 class (book §5.3)


def taylor_coefficients(activation: ActivationLike, order: int = 5) -> tuple[float, ...]:
    """σ_p = σ^{(p)}(0) for p = 0 … order, by nested autograd (float64 round-off).

    The K* = 0 universality class is decided by these (book §5.3): σ_0 = 0, σ_1 ≠ 0 and
    a_1 = σ_3/σ_1 + ¾(σ_2/σ_1)² < 0. For an activation with a kink at 0 they are one-sided
    (autograd's choice) and not meaningful; :func:`critical_point` does not use them there.
    """
    act = act_of(activation)
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 8:
        raise ValueError(f"order must be an int in 0..8, got {order!r}")
    return act.derivatives_at_zero(order)


def _k_zero_coefficients(s: Sequence[float]) -> tuple[float, float, float]:
    """(a_1, a_2, b_1) of the small-K expansions at C_b = 0, C_W = 1/σ_1² (book §5.3; theory
    note §7.2): F(K) = K + a_1K² + a_2K³, χ_∥ = 1 + 2a_1K + 3a_2K², χ_⊥ = 1 + b_1K."""
    s1 = s[1]
    a1 = s[3] / s1 + 0.75 * (s[2] / s1) ** 2
    a2 = 0.25 * s[5] / s1 + 0.625 * s[2] * s[4] / s1**2 + (5 / 12) * (s[3] / s1) ** 2
    b1 = s[3] / s1 + (s[2] / s1) ** 2
    return a1, a2, b1


# --------------------------------------------------------------------------------------------
# the book's criticality χ_∥ = χ_⊥ = 1 and universality classes (book §5.2–5.3)

UNIVERSALITY_CLASSES = ("scale-invariant", "K*=0", "half-stable", "none")


@dataclass(frozen=True, repr=False)
class CriticalPoint(Printable):
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
    skip: float = 0.0

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
    Kr = as_t(_RATIO_GRID)
    r = (mean_z_sigma_dsigma(act, Kr) / (Kr * mean_dsigma2(act, Kr)) - 1).numpy()

    def ratio(K: float) -> float:
        Kt = as_t([K])
        return float(mean_z_sigma_dsigma(act, Kt)[0] / (K * mean_dsigma2(act, Kt)[0]) - 1)

    out = []
    for i in np.nonzero(r[:-1] * r[1:] < 0)[0]:
        K = optimize.brentq(ratio, _RATIO_GRID[i], _RATIO_GRID[i + 1], xtol=1e-14, rtol=1e-15)
        Kt = as_t([K])
        C_W = 1.0 / float(mean_dsigma2(act, Kt)[0])
        C_b = K - C_W * float(mean_sigma2(act, Kt)[0])
        c = 0.5 * C_W * float(g_second(act, Kt)[0])
        side = "stable from above" if c < 0 else "stable from below" if c > 0 else "marginal"
        out.append({"K_star": K, "C_b": C_b, "C_W": C_W, "curvature": c, "stability": side})
    return out


@lru_cache(maxsize=64)
def _critical_point_cached(act: Activation) -> CriticalPoint:
    name = act.name
    hom = act.homogeneous
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
    zero = torch.zeros(1, dtype=DT)
    s0 = float(act.fn(zero)[0])
    crossings = _ratio_crossings(act)
    valid = [c for c in crossings if c["C_b"] >= -1e-12]
    kzero: dict | None = None
    taylor = None
    if 0.0 not in act.kinks:
        taylor = act.taylor
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
        p_perp = b1 / a1 if smooth else kzero["p_perp"]
        note = f"K* = 0 class: σ(0) = 0, C_b = 0, C_W = 1/σ'(0)² = {kzero['C_W']:.10g}; " + (
            f"a_1 = {a1:.6g} < 0, so K^(ℓ) ≈ 1/({-a1:.6g} ℓ) → 0 and p_⊥ = b_1/a_1 = {p_perp:.6g} "
            "(book §5.3.3)"
            if smooth
            else f"σ has a kink at 0; F(K) − K ≈ {kzero['A']:.4g} K^{kzero['p']:.3f} < 0 at "
            f"small K, so K^(ℓ) → 0 like ℓ^(−{1 / (kzero['p'] - 1):.3g}) (not ℓ^(−1): the "
            "Taylor-coefficient exponents of book §5.3.3 do not apply); χ_⊥ ≈ 1 − p_⊥/ℓ with "
            f"p_⊥ = {p_perp:.4g}"
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
        Kt = as_t([K])
        m4 = float(mean_sigma4(act, Kt)[0])
        g = float(mean_sigma2(act, Kt)[0])
        chi_par = float(chi_parallel_at(act, Kt, C_W)[0])
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
    sp, sm = act.slopes_at_zero
    if sp == 0.0 and sm == 0.0:
        return None
    C_W = 2.0 / (sp * sp + sm * sm)
    # two small K a decade apart; the next order is O(K^{1/2}) relative, ~1e-3 here
    Ks = as_t([1e-7, 1e-6])
    d = (C_W * mean_sigma2(act, Ks) - Ks).numpy()
    if d[0] == 0 or d[0] * d[1] <= 0:
        return {"K_star": 0.0, "C_b": 0.0, "C_W": C_W, "stability": "marginal", "A": 0.0, "p": 0.0}
    p = math.log(d[1] / d[0]) / math.log(10.0)
    A = d[1] / 1e-6**p
    stab = "stable" if A < 0 else "stable from below"
    # χ_⊥ − 1 ≈ B K^{p−1} along K^{(ℓ)} ≈ ((p−1)(−A)ℓ)^{−1/(p−1)} gives χ_⊥ ≈ 1 − p_⊥/ℓ with
    # p_⊥ = B/((p−1)A): a power law like the smooth class (ELU: B = A = −√(2/π), p = 3/2, p_⊥ = 2)
    Kc = as_t([1e-8, 1e-7])
    e = (C_W * mean_dsigma2(act, Kc) - 1).numpy()
    B = e[1] / 1e-7 ** (p - 1) if p > 1 else math.nan
    p_perp = B / ((p - 1) * A) if A < 0 and p > 1 and e[1] != 0 else None
    return {
        "K_star": 0.0,
        "C_b": 0.0,
        "C_W": C_W,
        "stability": stab,
        "A": A,
        "p": p,
        "p_perp": p_perp,
    }


def _no_criticality_reason(
    act: Activation, s0: float, crossings: list[dict], kzero: dict | None
) -> str:
    Kr = as_t([1e-3, 1.0, 1e3])
    r = (mean_z_sigma_dsigma(act, Kr) / (Kr * mean_dsigma2(act, Kr))).numpy()
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


@clear_overflow
def critical_point(activation: ActivationLike, *, skip: float = 0.0) -> CriticalPoint:
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

    With ``skip`` = γ (a residual MLP, book App. B) the single-input map is
    F(K) = C_b + C_W g(K) + γ²K, so K* = C_b/(1−γ²) + (C_W/(1−γ²)) g(K*) and
    χ = (1−γ²)χ̃ + γ² with χ̃ the plain susceptibility at (C_b, C_W)/(1−γ²): the critical point
    is the plain one scaled by 1 − γ² (book eq. B.20: C_W = (1−γ²)/A₂; B.21: (1−γ²)/σ₁²), with
    the same K* and class. ``vertex_growth`` becomes ν(γ) (:func:`residual_nu`).

    >>> pdlt.critical_point("relu", skip=0.5).C_W
    1.5
    """
    g = real("skip", skip)
    act = _act_key(activation)
    cp = _critical_point_cached(act)
    if g == 0.0:
        return cp
    if g * g >= 1.0:
        raise ValueError(
            f"skip must satisfy |γ| < 1 for criticality (χ = C_W⟨σ'²⟩ + γ² = 1 needs γ² < 1), "
            f"got {g:g}"
        )
    if not cp.exists:
        return replace(cp, skip=g)
    f = 1.0 - g * g
    nu = residual_nu(cp, g, act)
    note = cp.note + (
        f" Residual γ = {g:g}: C_b, C_W scaled by 1 − γ² = {f:g} (book eqs. B.20–B.21)."
    )
    if nu is None:
        note += (
            " ν(γ) not given: nor is the plain ν for this activation "
            "(run pdlt.four_point_vertex on a deep residual network)."
        )
    return replace(cp, C_b=cp.C_b * f, C_W=cp.C_W * f, vertex_growth=nu, skip=g, note=note.strip())


def residual_nu(cp: CriticalPoint, gamma: float, act: Activation) -> float | None:
    """ν(γ), the slope of V^{(ℓ)}/K^{(ℓ)2} in ℓ at residual criticality (book eqs. B.29, B.35,
    corrected; see :mod:`pdlt.theory.vertex`, the residual path terms).

    Scale-invariant class (K constant, J + γ² = 1 on one input): the path recursion gives, deep
    in the network, the per-layer increment C_W²[Var σ² + 2 Σ_{k≥1} Cov(σ²(u), σ²(v_k))]/K²
    with corr(u, v_k) = γ^k, i.e. in the normalized Hermite coefficients c_j of σ²(√K u),

        ν(γ) = C_W² Σ_{j≥1} c_j² (1 + γ^j)/(1 − γ^j) / K²,      C_W = (1 − γ²)/A₂,

    summed to j = 400 (Parseval tail bound ≤ 1e-9 relative for γ ≤ 0.95). Linear σ: 2(1 − γ⁴)
    (the book's B.29 form); ReLU: not the book's (1 − γ²)(5 − γ²), which keeps only j = 2 of
    the cross-layer terms (ν(0.5) = 6.50, not 3.56; Monte Carlo agrees with the former).
    K* = 0 class: (2/3)(1 − γ⁴) (B.35): as K → 0 the cross-layer covariances approach their
    second Hermite order, which the book's recursion keeps exactly. Half-stable class (GELU,
    SWISH), started at K* as its plain ν is: K stays at K* and J + γ² = χ_∥ = 1 there, so the
    same series holds with c_j those of σ²(√K* u), C_W = (1 − γ²)C_W*, divided by K*²
    (γ = 0: C_W*² Var_{K*}[σ²]/K*², the plain value). γ = 0 is the plain ν.
    """
    if gamma == 0.0 or cp.vertex_growth is None:  # no plain ν (ELU's kink): no residual one
        return cp.vertex_growth
    g2 = gamma * gamma
    if cp.universality_class == "K*=0":
        return (2.0 / 3.0) * (1.0 - g2 * g2)
    if cp.universality_class in ("scale-invariant", "half-stable"):
        from pdlt.gaussian import hermite_coefficients

        # scale-invariant: any K (σ² is homogeneous of degree 2), take K = 1
        K = 1.0 if cp.universality_class == "scale-invariant" else float(cp.K_star)
        var = torch.full((1,), K, dtype=torch.float64)
        c, _ = hermite_coefficients(lambda z: act.fn(z) ** 2, var, 400, kinks=act.kinks)
        j = torch.arange(1, c.shape[1], dtype=torch.float64)
        gj = gamma**j
        series = float((c[0, 1:] ** 2 * (1 + gj) / (1 - gj)).sum())
        C_W = (1.0 - g2) * cp.C_W
        return C_W**2 * series / K**2
    return None


def _act_key(activation: ActivationLike) -> Activation:
    # Built-ins are rebuilt on every activation(name) call; cache them by name and params.
    if isinstance(activation, str):
        return _builtin(activation.lower())
    return act_of(activation)


@lru_cache(maxsize=32)
def _builtin(name: str) -> Activation:
    return act_of(name)


def universality_class(activation: ActivationLike) -> str:
    """The universality class of an activation (book §5.2–5.3): "scale-invariant", "K*=0",
    "half-stable" or "none". See :func:`critical_point` for the numbers behind it."""
    return critical_point(activation).universality_class
