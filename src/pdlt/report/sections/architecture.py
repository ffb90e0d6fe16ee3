"""Report section: designing a network from the theory (book App. A, B) — residual criticality
C_W(γ) (B.20–B.21), ν(γ) (B.35; B.29 corrected, see :mod:`pdlt.theory.vertex`), the optimal
aspect ratio r*(γ) (A.73, B.36), :func:`pdlt.recommend` for a typical budget, the four-point
vertex of real residual networks against :func:`pdlt.four_point_vertex`, and the aspect-ratio
experiment on the digits (:func:`pdlt.aspect_ratio_experiment`). A few seconds: two small
ensembles and 24 small trained networks."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pdlt.compare import agreement, compare
from pdlt.experiment.aspect_ratio import aspect_ratio_experiment
from pdlt.experiment.measure import measure
from pdlt.network import MLP
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs
from pdlt.report.render import figure, paragraph, summary_row, table, theory_and_measured
from pdlt.theory.criticality import critical_line, critical_point
from pdlt.theory.design import recommend
from pdlt.theory.kernel import kernel
from pdlt.theory.vertex import four_point_vertex

_GAMMAS = np.linspace(0.0, 0.95, 39)
_BUDGET = dict(n_params=1_000_000, input_dim=784, output_dim=10)
_GAMMA = 0.5  # the section's residual γ (its C_W(γ) summary row, the measured vertex)
_V_WIDTHS = (32, 96)  # fixed, so the section stays cheap whatever the report's widths
_V_NETWORKS = 1000  # at most


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
            "ν, hence r*, is not drawn: "
            + (
                "the theory gives no ν for this activation, plain or residual "
                "(pdlt.four_point_vertex gives V of any residual network)."
                if critical_point(act).exists
                else "there is no criticality for this activation."
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
    parts += _residual_vertex_part(config, summary)
    parts += _aspect_ratio_part(config, summary)
    return Section(
        id="architecture",
        title="Architecture: residual criticality, the optimal aspect ratio and a recommendation",
        body="".join(parts),
        summary=tuple(summary),
        seconds=time.perf_counter() - t0,
    )


def _residual_setting(act: str, gamma: float) -> tuple[float, float]:
    """(C_b, C_W) of a residual net: the residual critical point, else (as in the C_W(γ) curve)
    the order-to-chaos line at C_b = 0."""
    cp = critical_point(act, skip=gamma)
    if cp.exists:
        return cp.C_b, cp.C_W
    return 0.0, float(critical_line(act, 0.0, skip=gamma).C_W)


def _residual_vertex_part(config: ReportConfig, summary: list) -> list[str]:
    """Measured V/K² per layer of residual networks at two widths beside four_point_vertex."""
    act, g = config.activation, _GAMMA
    C_b, C_W = _residual_setting(act, g)
    x = report_inputs()[:1]
    M = min(config.ensemble_size, _V_NETWORKS)
    layers = np.arange(1, config.depth + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    cols: dict[str, np.ndarray] = {"layer": layers}
    theory_drawn = False
    for j, w in enumerate(_V_WIDTHS):
        net = MLP(act, depth=config.depth, width=w, input_dim=x.shape[1], C_b=C_b, C_W=C_W, skip=g)
        ms = measure(
            net, x, M, seed=config.seed + 300 + j, statistics=("V",), device=config.device,
            progress=False,
        )  # fmt: skip
        K = kernel(net, x).K[:, 0, 0]
        mv, me = ms.V[:, 0, 0, 0, 0] / K**2, ms.V_err[:, 0, 0, 0, 0] / K**2
        th = four_point_vertex(net, x)
        ok = bool(agreement(compare(th, ms, statistics=("V",)), net).all())
        if not theory_drawn:
            theory_and_measured(ax, layers, th.normalized[:, 0], theory_label="theory")
            cols["theory V/K²"] = th.normalized[:, 0]
            theory_drawn = True
        theory_and_measured(
            ax, layers, None, mv, me, color=f"C{j}", label=f"measured, n = {w}",
            shift=(j - 0.5) * 0.15,
        )  # fmt: skip
        cols[f"measured n={w}"], cols[f"± error (n={w})"] = mv, me
        last = f"ℓ={config.depth}: {th.normalized[-1, 0]:.3f} theory, {mv[-1]:.3f} ± {me[-1]:.3f}"
        summary.append(summary_row(f"residual V/K² (γ = {g:g}) vs {M} networks, n={w}", last, ok))
    ax.set(
        xlabel="layer ℓ",
        ylabel="V^(ℓ)/K^(ℓ)²",
        title=f"{act}, residual γ = {g:g}: four-point vertex",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    parts = [
        "<h3>Four-point vertex of residual networks</h3>",
        paragraph(
            f"Real residual networks (γ = {g:g}, C_b = {C_b:.4g}, C_W = {C_W:.4g}, depth "
            f"{config.depth}, {M} networks per width, one input with |x|² = n_0): the measured "
            "V/K² (n·Var[Ĝ] over K², the connected four-point function per unit 1/n) beside "
            "pdlt.four_point_vertex, which at leading order does not depend on the width. "
            "Agreement is the one rule of the report, |measured − theory| ≤ 4·error + "
            "2(ℓ/n)·scale (pdlt.agreement)."
        ),
        figure(fig, f"{act}: V/K² of residual networks at n = 32 and 96, γ = {g:g}."),
    ]
    parts.append(table(pd.DataFrame(cols), digits=4, scroll=True))
    return parts


def _aspect_ratio_part(config: ReportConfig, summary: list) -> list[str]:
    """The aspect-ratio experiment: test loss against L/n at a fixed budget, r* marked."""
    act = config.activation
    kw: dict = {"n_networks": 2, "steps": 150, "ratios": (0.025, 0.15, 0.6)} if config.quick else {}
    head = "<h3>Aspect ratio on real networks: test loss against L/n</h3>"
    try:
        res = aspect_ratio_experiment(
            act, seed=config.seed, device=config.device, progress=False, **kw
        )
    except ValueError as exc:
        return [head, paragraph(f"pdlt.aspect_ratio_experiment was not run: {exc}", "note")]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    res.plot(ax)
    fig.tight_layout()
    r_star = "no r*" if res.r_star is None else f"r* = {res.r_star:.3g}"
    summary.append(
        summary_row(
            f"{act}: best L/n on digits at ≈{res.budget:,} parameters",
            f"{res.best_ratio:.3g} ({r_star})",
            None,
        )
    )
    counts = f"{int(res.n_params.min()):,}–{int(res.n_params.max()):,}"
    parts = [
        head,
        paragraph(
            f"{res.n_networks} networks per shape, each with {counts} parameters (budget "
            f"{res.budget:,}), at criticality (C_b = {res.C_b:.4g}, C_W = {res.C_W:.4g}) with "
            "the learning-rate equivalence rates (pdlt.learning_rates), trained by full-batch "
            f"gradient descent ({res.steps} steps, η = {res.learning_rate:g} for the mean loss) "
            f"on {res.n_train} digits (MSE to one-hot − 0.1), tested on {res.n_test} others. "
            "r* maximizes the outputs' mutual information at initialization (A.73); it is a "
            "heuristic for where good networks are, so the figure shows where the trained "
            "optimum falls, not an agreement test."
        ),
        figure(
            fig,
            f"{act}: test loss (mean ± standard error over networks) against L/n at a fixed "
            f"parameter budget; dashed: {r_star}.",
        ),
        table(res.to_frame(), digits=4),
    ]
    if res.note:
        parts.append(paragraph(res.note, "note"))
    return parts
