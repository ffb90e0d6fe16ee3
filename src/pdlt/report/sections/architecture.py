"""Report section: designing a network from the theory (book App. A, B) — residual criticality
C_W(γ) (B.20–B.21), ν(γ) (B.35; B.29 corrected, see pdlt.theory.vertex), the optimal aspect ratio r*(γ) (A.73, B.36), and
:func:`pdlt.recommend` for a typical budget. Theory only: well under a second."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np

from pdlt.report import ReportConfig, Section
from pdlt.report.render import figure, paragraph, summary_row, table
from pdlt.theory.criticality import critical_line, critical_point
from pdlt.theory.design import recommend

_GAMMAS = np.linspace(0.0, 0.95, 39)
_BUDGET = dict(n_params=1_000_000, input_dim=784, output_dim=10)


def _curves(act: str) -> tuple[np.ndarray, np.ndarray, str]:
    """C_W(γ) and ν(γ) on the γ grid (NaN where undefined), and how C_W was found."""
    cw, nu = np.full_like(_GAMMAS, np.nan), np.full_like(_GAMMAS, np.nan)
    how = "criticality χ∥ = χ⊥ = 1"
    for i, g in enumerate(_GAMMAS):
        cp = critical_point(act, skip=float(g))
        if cp.exists:
            cw[i] = cp.C_W
            nu[i] = np.nan if cp.vertex_growth is None else cp.vertex_growth
        else:
            cw[i] = critical_line(act, 0.0, skip=float(g)).C_W
            how = "the order-to-chaos line χ⊥ = 1 at C_b = 0 (no criticality)"
    return cw, nu, how


def _book_nu(act: str) -> np.ndarray | None:
    """The book's ν(γ) = (1 − γ²)²(3A₄/A₂² − 1) + 4γ²(1 − γ²) (B.29, second Hermite order of
    the cross-layer terms only) for the scale-invariant class, else None."""
    cp = critical_point(act)
    if cp.universality_class != "scale-invariant":
        return None
    g2 = _GAMMAS**2
    return (1 - g2) ** 2 * cp.vertex_growth + 4 * g2 * (1 - g2)


def architecture_section(config: ReportConfig) -> Section:
    t0 = time.perf_counter()
    act = config.activation
    cw, nu, how = _curves(act)
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
    ax[0].plot(_GAMMAS, cw, "C0-")
    ax[0].set(xlabel="skip γ", ylabel="C_W", title=f"{act}: C_W(γ) from {how.split(' (')[0]}")
    ax[1].plot(_GAMMAS, nu, "C1.-", label="path recursion")
    book = _book_nu(act)
    if book is not None:
        ax[1].plot(_GAMMAS, book, "C7--", label="book B.29 (2nd order only)")
        ax[1].legend()
    ax[1].set(xlabel="skip γ", ylabel="ν(γ)", title="ν(γ): V/(nK²) ≈ ν ℓ/n")
    for n_L, style in ((1, "-"), (10, "--")):
        ax[2].plot(_GAMMAS, 4.0 / (20.0 + 3 * n_L) / nu, "C2." + style, label=f"n_L = {n_L}")
    ax[2].set(xlabel="skip γ", ylabel="r* = L/n", title="optimal aspect ratio r*(γ)")
    ax[2].legend()
    for a in ax:
        a.grid(alpha=0.3)
        a.set_xlim(-0.03, 0.98)
    fig.tight_layout()
    defined = np.isfinite(nu)
    nu_note = (
        "ν(γ) is drawn for every γ"
        + (
            ": from the residual path recursion, which keeps every Hermite order of the "
            "cross-layer σ² covariances; the book's B.29 (dashed) keeps the second only, and Monte "
            "Carlo sides with the former (tests/test_residual_vertex.py)."
            if book is not None
            else "."
        )
        if defined.all()
        else (
            "ν, hence r*, is only drawn where the theory gives it: "
            + (
                "at γ = 0 (the residual vertex recursion has no closed slope for this class; "
                "pdlt.four_point_vertex gives V of any residual network)."
                if defined[0]
                else "nowhere for this activation (no criticality)."
            )
        )
    )
    parts = [
        paragraph(
            "A residual MLP z^(ℓ+1) = b + Wσ(z^(ℓ)) + γ z^(ℓ) (book eq. B.3) keeps criticality at "
            "C_W(γ) = (1 − γ²) C_W(0) (B.20–B.21) and slows the growth of the finite-width "
            "fluctuations, V/(nK²) ≈ ν(γ) ℓ/n (B.35). The depth-to-width ratio that maximises the "
            "mutual information of the outputs at next-to-leading order is "
            "r* = (4/(20 + 3n_L))/ν(γ) (A.73, B.36): a smaller ν allows a deeper network at the "
            "same width."
        ),
        figure(fig, f"{act}: residual criticality, ν(γ) and r*(γ). {nu_note}"),
    ]
    summary = [
        summary_row(f"{act}: C_W(γ = 0.5)", f"{cw[np.argmin(abs(_GAMMAS - 0.5))]:.4g}", None)
    ]
    try:
        rec = recommend(act, **_BUDGET)
    except ValueError as exc:  # no ν and no depth/width to size from
        parts.append(paragraph(f"pdlt.recommend: {exc}", "note"))
    else:
        parts.append(
            paragraph(
                f"pdlt.recommend('{act}', n_params=1_000_000, input_dim=784, output_dim=10): "
                "each number with the rule that produced it."
            )
        )
        parts.append(table(rec.to_frame(), digits=4, cls="spec"))
        parts += [paragraph(f"Warning: {w}", "note") for w in rec.warnings]
        summary.append(
            summary_row(
                f"{act}: recommended for 1e6 parameters",
                f"L = {rec.depth}, n = {rec.width}, L/n = {rec.aspect_ratio:.3g}",
                None,
            )
        )
    return Section(
        id="architecture",
        title="Architecture: residual criticality, the optimal aspect ratio and a recommendation",
        body="".join(parts),
        summary=tuple(summary),
        seconds=time.perf_counter() - t0,
    )
