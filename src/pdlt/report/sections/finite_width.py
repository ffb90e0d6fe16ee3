"""Report section: finite width — the excess kurtosis 3V/(nK²) growing like ℓ/n ((5.128)–(5.131))
and the 1/n shift G^{1}/n of the two-point function ((4.104), (4.115))."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.compare import agreement, compare
from pdlt.experiment.measure import measure
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs, report_net
from pdlt.report.render import figure, paragraph, summary_row, table, theory_and_measured
from pdlt.theory.vertex import four_point_vertex, kernel_correction

_INPUT = 0  # the input whose single-neuron statistics are plotted
_V_COMPONENTS = (((0, 0), (0, 0)), ((0, 1), (0, 1)), ((0, 0), (1, 1)), ((0, 0), (0, 1)),
                 ((0, 1), (1, 2)), ((0, 1), (0, 2)))  # fmt: skip


def finite_width_section(config: ReportConfig) -> Section:
    x = report_inputs()
    a = _INPUT
    layers = np.arange(1, config.depth + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    rows, summary, vertex, measured = [], [], {}, {}
    for j, w in enumerate(config.widths):
        net = report_net(config, w)
        fpv, kc = four_point_vertex(net, x), kernel_correction(net, x)
        ms = measure(
            net, x, config.ensemble_size, seed=config.seed + 100 + j, statistics=("V",),
            device=config.device,
        )  # fmt: skip
        vertex[w], measured[w] = fpv, ms
        # the two 1/n results against the networks, each with the one agreement rule
        kurt = compare(fpv, ms, statistics=("excess_kurtosis",))
        shift = compare(kc, ms, statistics=("K1",))
        kurt_ok = agreement(kurt, net).groupby(kurt.layer).all()
        shift_ok = agreement(shift, net).groupby(shift.layer).all()
        n_prev = fpv.widths
        kt, km, ke = (
            fpv.excess_kurtosis[:, a],
            ms.excess_kurtosis[:, a],
            ms.excess_kurtosis_err[:, a],
        )
        K = kc.K[:, a, a]
        st, sm, se = kc.K1[:, a, a] / (n_prev * K), ms.G[:, a, a] / K - 1, ms.G_err[:, a, a] / K
        style = {"color": f"C{j}"}
        theory_and_measured(axes[0], layers, kt, km, ke, **style, theory_label=f"theory, n = {w}",
                            label=f"measured, n = {w}")  # fmt: skip
        hidden = layers >= 2  # layer 1 is fed by the input (n_0), and exactly Gaussian
        eff = fpv.effective_depth[hidden]
        theory_and_measured(axes[1], eff, kt[hidden], km[hidden], ke[hidden], **style)
        theory_and_measured(axes[2], layers, st, sm, se, **style)
        last = config.depth - 1
        summary += [
            summary_row(
                f"excess kurtosis vs {ms.n_networks} networks, n={w}",
                f"ℓ={config.depth}: {kt[last]:.4f} theory, {km[last]:.4f} ± {ke[last]:.4f}",
                bool(kurt_ok.all()),
            ),
            summary_row(
                f"kernel shift G1/n, n={w}",
                f"ℓ={config.depth}: {st[last]:+.2e} theory, {sm[last]:+.2e} ± {se[last]:.1e}",
                bool(shift_ok.all()),
            ),
        ]
        rows.append(
            pd.DataFrame(
                {
                    "width": w, "layer": layers, "ℓ/n": fpv.effective_depth,
                    "kurtosis theory": kt, "kurtosis measured": km, "± error": ke,
                    "G1/(nK) theory": st, "(G−K)/K measured": sm, "± error ": se,
                    "agree": (kurt_ok & shift_ok).to_numpy(),
                }
            )
        )  # fmt: skip
    axes[0].set(
        xlabel="layer ℓ", ylabel="excess kurtosis E[z⁴]/E[z²]² − 3", title="non-Gaussianity"
    )
    axes[1].set(xlabel="ℓ / n (effective depth)", title="same, against ℓ/n")
    axes[2].set(xlabel="layer ℓ", ylabel="E[z²]/K − 1", title="1/n shift of the two-point function")
    axes[2].axhline(0, color="0.6", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    widest = max(config.widths)
    V_last, ms_w = vertex[widest].V[-1], measured[widest]
    vtab = pd.DataFrame(
        [
            {
                "V component": f"V_({p[0] + 1}{p[1] + 1})({q[0] + 1}{q[1] + 1})",
                "theory": V_last[p[0], p[1], q[0], q[1]],
                "measured n·Cov(Ĝ)": ms_w.V[-1, p[0], p[1], q[0], q[1]],
                "± error": ms_w.V_err[-1, p[0], p[1], q[0], q[1]],
            }
            for p, q in _V_COMPONENTS
        ]
    )
    body = [
        paragraph(
            "At finite width n the preactivations are not exactly Gaussian: neurons of a layer "
            "become weakly dependent, and the distribution of each one grows heavier tails as the "
            "signal passes more layers. The book measures this by the four-point vertex V (book "
            "§4.2–4.5, recursion (4.119)): the single-neuron excess kurtosis is 3V/(nK²). At "
            "criticality it grows linearly with depth ((5.128)–(5.131)), so what matters is the "
            "depth-to-width ratio ℓ/n. Measured values use the stochastic metric Ĝ of each network "
            "(E[z⁴] = 3E[Ĝ²] exactly); error bars are one delta-method standard error across "
            "networks."
        ),
        figure(
            fig,
            "Left: excess kurtosis of one neuron per layer, theory lines (leading order in 1/n) and "
            "real networks (points). Middle: the same against ℓ/n — the curves for different widths "
            "fall on one line. Right: the two-point function E[z²] differs from the infinite-width "
            "kernel K by G1/n (the NLO metric, (4.115)), a shift of a few percent at n = 32 that "
            "this many networks only barely resolve (its error shrinks like 1/√networks; the test "
            "suite resolves it with 60 000 networks).",
        ),
        "<h3>Per layer</h3>",
        paragraph(
            "agree: the excess kurtosis of every input and the 1/n coefficient G1 of every input "
            "pair satisfy |measured − theory| ≤ 4·error + 2(ℓ/n)·max|theory| (pdlt.agreement): the "
            "statistical error plus the size of the neglected O(1/n²) terms relative to the 1/n "
            "result. The table shows input 1.",
            "note",
        ),
        table(pd.concat(rows, ignore_index=True), digits=4, scroll=True),
        f"<h3>Multi-input four-point vertex at ℓ = {config.depth}, n = {widest}</h3>",
        paragraph(
            "Components over the three report inputs (inputs 1–3); the connected four-point "
            "function of neurons i ≠ j is V_(ab)(cd)/n, (4.77).",
            "note",
        ),
        table(vtab, digits=5),
    ]
    return Section(
        "finite-width",
        "Finite width: four-point vertex and 1/n corrections",
        "".join(body),
        summary,
    )
