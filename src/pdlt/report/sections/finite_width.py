"""Report section: finite width — excess kurtosis growing like ℓ/n, and the 1/n kernel shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.experiment.measure import measure
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs, report_net
from pdlt.report.render import figure, paragraph, status, table
from pdlt.theory.vertex import kernel_correction, pairs_to_tensor

_INPUT = 0  # the input whose single-neuron statistics are plotted


def _kurtosis_theory(V: np.ndarray, K: np.ndarray, n_prev: np.ndarray) -> np.ndarray:
    """3 V_{(aa)(aa)}/(n_{ℓ−1} K_aa²) per layer (theory note 01 §4.1)."""
    a = _INPUT
    return 3 * V[:, a, a, a, a] / (n_prev * K[:, a, a] ** 2)


def finite_width_section(config: ReportConfig) -> Section:
    x = report_inputs()
    widths = tuple(config.widths)
    nets = {w: report_net(config, w) for w in widths}
    layers = np.arange(1, config.depth + 1)
    a = _INPUT
    theory, measured = {}, {}
    # V and K1 are coefficients of 1/n_{ℓ−1}: with uniform hidden widths they do not depend on n
    # (the only ratio n_1/n_0 multiplies V^{(1)} = K1^{(1)} = 0), so one recursion serves all
    kc = kernel_correction(nets[widths[0]], x)  # carries V as well
    for j, (w, net) in enumerate(nets.items()):
        theory[w] = (pairs_to_tensor(kc.V_pairs, x.shape[0]), kc.K, kc.K1)
        measured[w] = measure(
            net,
            x,
            config.ensemble_size,
            seed=config.seed + 100 + j,
            statistics=("V",),
            device=config.device,
        )
    n_prev = {w: np.asarray(nets[w].widths[:-1], dtype=float) for w in widths}
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    rows, summary = [], []
    for j, w in enumerate(widths):
        V, K, K1 = theory[w]
        ms = measured[w]
        color = f"C{j}"
        kt = _kurtosis_theory(V, K, n_prev[w])
        km, ke = ms.excess_kurtosis[:, a], ms.excess_kurtosis_err[:, a]
        axes[0].plot(layers, kt, "-", color=color, label=f"theory, n = {w}")
        axes[0].errorbar(
            layers, km, yerr=ke, fmt="o", ms=3.5, capsize=2, color=color, label=f"measured, n = {w}"
        )
        hidden = layers >= 2  # layer 1 is fed by the input (n_0), and exactly Gaussian
        eff = layers[hidden] / n_prev[w][hidden]
        axes[1].plot(eff, kt[hidden], "-", color=color)
        axes[1].errorbar(eff, km[hidden], yerr=ke[hidden], fmt="o", ms=3.5, capsize=2, color=color)
        shift_t = K1[:, a, a] / (n_prev[w] * K[:, a, a])
        shift_m = ms.G[:, a, a] / K[:, a, a] - 1
        shift_e = ms.G_err[:, a, a] / K[:, a, a]
        axes[2].plot(layers, shift_t, "-", color=color)
        axes[2].errorbar(layers, shift_m, yerr=shift_e, fmt="o", ms=3.5, capsize=2, color=color)
        # agreement: 4 standard errors plus the neglected relative O(ℓ/n) (the kurtosis
        # measured is exact in n, the theory its leading order; note 01 §4.4)
        ok_k = np.abs(km - kt) <= 4 * ke + 2 * (layers / n_prev[w]) * np.abs(kt)
        ok_s = np.abs(shift_m - shift_t) <= 4 * shift_e + 2 * (layers / n_prev[w]) * np.abs(shift_t)
        summary.append(
            {
                "check": f"excess kurtosis vs {ms.n_networks} networks, n={w}",
                "value": f"ℓ={config.depth}: {kt[-1]:.4f} theory, {km[-1]:.4f} ± {ke[-1]:.4f}",
                "status": status(bool(ok_k.all())),
            }
        )
        summary.append(
            {
                "check": f"kernel shift K1/n, n={w}",
                "value": f"ℓ={config.depth}: {shift_t[-1]:+.2e} theory, {shift_m[-1]:+.2e} ± {shift_e[-1]:.1e}",
                "status": status(bool(ok_s.all())),
            }
        )
        rows.append(
            pd.DataFrame(
                {
                    "width": w,
                    "layer": layers,
                    "ℓ/n": layers / n_prev[w],
                    "kurtosis theory": kt,
                    "kurtosis measured": km,
                    "± error": ke,
                    "K1/(nK) theory": shift_t,
                    "(G−K)/K measured": shift_m,
                    "± error ": shift_e,
                    "agree": ok_k & ok_s,
                }
            )
        )
    axes[0].set(
        xlabel="layer ℓ", ylabel="excess kurtosis E[z⁴]/E[z²]² − 3", title="non-Gaussianity"
    )
    axes[1].set(xlabel="ℓ / n (effective depth)", title="same, against ℓ/n")
    axes[2].set(xlabel="layer ℓ", ylabel="E[z²]/K − 1", title="1/n shift of the two-point function")
    axes[2].axhline(0, color="0.6", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    widest = max(widths)
    V_last = theory[widest][0][-1]
    ms_w = measured[widest]
    pairs = [
        ((0, 0), (0, 0)),
        ((0, 1), (0, 1)),
        ((0, 0), (1, 1)),
        ((0, 0), (0, 1)),
        ((0, 1), (1, 2)),
        ((0, 1), (0, 2)),
    ]
    vtab = pd.DataFrame(
        [
            {
                "V component": f"V_({p[0] + 1}{p[1] + 1})({q[0] + 1}{q[1] + 1})",
                "theory": V_last[p[0], p[1], q[0], q[1]],
                "measured n·Cov(Ĝ)": ms_w.V[-1, p[0], p[1], q[0], q[1]],
                "± error": ms_w.V_err[-1, p[0], p[1], q[0], q[1]],
            }
            for p, q in pairs
        ]
    )
    body = [
        paragraph(
            "At finite width n the preactivations are not exactly Gaussian: neurons of a layer "
            "become weakly dependent, and the distribution of each one grows heavier tails as the "
            "signal passes more layers. The book measures this by the four-point vertex V (book "
            "§4.2–4.5): the single-neuron excess kurtosis is 3V/(nK²). At criticality it grows "
            "linearly with depth, so what matters is the depth-to-width ratio ℓ/n. Measured values "
            "use the stochastic metric Ĝ of each network (E[z⁴] = 3E[Ĝ²] exactly); error bars are "
            "one delta-method standard error across networks."
        ),
        figure(
            fig,
            "Left: excess kurtosis of one neuron per layer, theory lines (leading order in 1/n) and "
            "real networks (points). Middle: the same against ℓ/n — the curves for different widths "
            "fall on one line. Right: the two-point function E[z²] differs from the infinite-width "
            "kernel K by K1/n, a shift of a few percent at n = 32 that this many networks only "
            "barely resolve (its error shrinks like 1/√networks; the test suite resolves it with "
            "60 000 networks).",
        ),
        "<h3>Per layer</h3>",
        paragraph(
            "agree: |measured − theory| ≤ 4·error + 2(ℓ/n)·|theory| for both quantities: the "
            "statistical error plus the size of the neglected O(1/n²) terms relative to the 1/n "
            "result.",
            "note",
        ),
        table(pd.concat(rows, ignore_index=True), digits=4, scroll=True),
        f"<h3>Multi-input four-point vertex at ℓ = {config.depth}, n = {widest}</h3>",
        paragraph(
            "Components over the three report inputs (inputs 1–3); the connected four-point "
            "function of neurons i ≠ j is V_(ab)(cd)/n.",
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
