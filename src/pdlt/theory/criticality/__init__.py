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

Modules, by book section: :mod:`.fixed_points` (fixed points and stability, §5.1),
:mod:`.setting` (one (C_b, C_W) and the critical line, §5.1), :mod:`.classes` (the critical
point and universality classes, §5.2–5.3), :mod:`.phase` (phase diagrams).

Numerics: every 1-D Gaussian expectation is :func:`pdlt.gaussian.expect` (composite
Gauss–Legendre, ~1e-13 relative for K ≲ 10²). Fixed points are bracketed by sign changes on a
logarithmic grid of K and refined by Brent's method (scalar results) or vectorised bisection
(phase diagrams) to ~1e-13 relative; a fixed point where F − K touches zero without changing sign
(the half-stable critical points) is found by minimising |F − K| near the grid's local minima.
Correlation maps use the Mehler series (exact up to its Parseval tail bound). Taylor
coefficients σ_p = σ^{(p)}(0) come from nested autograd (float64 round-off, ~1e-15).
"""

from pdlt.theory.criticality._common import (
    CRITICAL_TOL,
    K_MAX,
    ActivationLike,
    chi_parallel,
    chi_perp,
)
from pdlt.theory.criticality.classes import (
    UNIVERSALITY_CLASSES,
    CriticalPoint,
    critical_point,
    taylor_coefficients,
    universality_class,
)
from pdlt.theory.criticality.fixed_points import FixedPoint
from pdlt.theory.criticality.phase import PhaseDiagram, phase_diagram
from pdlt.theory.criticality.setting import (
    Criticality,
    CriticalLine,
    critical_line,
    criticality,
)

__all__ = [
    "CRITICAL_TOL",
    "K_MAX",
    "UNIVERSALITY_CLASSES",
    "ActivationLike",
    "CriticalLine",
    "CriticalPoint",
    "Criticality",
    "FixedPoint",
    "PhaseDiagram",
    "chi_parallel",
    "chi_perp",
    "critical_line",
    "critical_point",
    "criticality",
    "phase_diagram",
    "taylor_coefficients",
    "universality_class",
]
