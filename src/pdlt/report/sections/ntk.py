"""Report section: the NTK at initialization (book ch. 8–9) against real ensembles at two widths:
the frozen NTK Θ, (9.5), and the NTK variance (A + 2B)/(nΘ²), (8.82), (9.15)–(9.16)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.compare import agreement, compare, comparison_frame
from pdlt.experiment.measure import measure
from pdlt.report import ReportConfig, Section
from pdlt.report.common import learning_rate_scan, report_inputs, report_net
from pdlt.report.render import (
    figure,
    offset,
    paragraph,
    summary_row,
    table,
    theory_and_measured,
)
from pdlt.theory.ntk import ntk, ntk_fluctuations
from pdlt.theory.ntk_criticality import ntk_criticality

WIDE_NETWORKS = 400  # networks at widths ≥ 128: the NTK of a wide net costs ~n² per layer
OUTPUTS = 4  # output neurons, so that the cross-neuron statistics of layer L exist
DEPTHS = (5, 10, 20, 50, 100)


def ntk_section(config: ReportConfig) -> Section:
    x = report_inputs()[:2]
    widths = tuple(config.widths)
    nets = {w: report_net(config, w).with_(output_dim=OUTPUTS) for w in widths}
    net0 = nets[widths[0]]
    th = ntk(net0, x)
    layers = np.arange(1, config.depth + 1)
    # A, B are the coefficients of 1/n_{ℓ−1}; with equal hidden widths they do not depend on n
    fl = ntk_fluctuations(net0, x[:1])
    A, B = fl.A[:, 0, 0, 0, 0], fl.B[:, 0, 0, 0, 0]
    Theta11 = fl.Theta[:, 0, 0]
    rel_coeff = (A + 2 * B) / Theta11**2  # n·Var(Ĥ_ii)/Θ²

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    theory_and_measured(axes[0], layers, th.Theta[:, 0, 0], theory_label="theory Θ11")
    theory_and_measured(
        axes[0], layers, th.Theta[:, 0, 1], theory_label="theory Θ12", theory_style="--"
    )
    summary, rows = [], []
    for j, (w, net) in enumerate(nets.items()):
        M = config.ensemble_size if w < 128 else min(config.ensemble_size, WIDE_NETWORKS)
        ms = measure(
            net,
            x,
            M,
            seed=config.seed + 100 + j,
            statistics=("ntk_fluctuations",),
            device=config.device,
        )
        dx, color = offset(j, len(nets)), f"C{j}"
        for a, b, marker in ((0, 0, "o"), (0, 1, "s")):
            theory_and_measured(
                axes[0], layers, None, ms.Theta[:, a, b], ms.Theta_err[:, a, b], color=color,
                marker=marker, shift=dx, label=f"n = {w}" if (a, b) == (0, 0) else None,
            )  # fmt: skip
        theta = compare(th, ms, statistics=("Theta",))
        ok_theta = agreement(theta, w).groupby(theta.layer).all().to_numpy()
        # relative NTK variance of one input: (A + 2B)/(n_{ℓ−1} Θ²) from the measured A, B, Θ
        n_l = np.asarray(net.widths[:-1], dtype=float)
        mA, mB = ms.A[:, 0, 0, 0, 0], ms.B[:, 0, 0, 0, 0]
        eA, eB = ms.A_err[:, 0, 0, 0, 0], ms.B_err[:, 0, 0, 0, 0]
        th_rel = rel_coeff / w  # layer 1 is 0 (Ĥ^(1) is deterministic)
        m_rel = (mA + 2 * mB) / n_l / ms.Theta[:, 0, 0] ** 2
        e_rel = np.sqrt(eA**2 + 4 * eB**2) / n_l / ms.Theta[:, 0, 0] ** 2
        var = comparison_frame("ntk_relative_variance", layers, th_rel, m_rel, e_rel)
        ok_var = agreement(var, w).to_numpy()
        theory_and_measured(axes[1], layers, th_rel, m_rel, e_rel, color=color, shift=dx,
                            label=f"n = {w}")  # fmt: skip
        theory_and_measured(axes[2], layers, None, m_rel * n_l, e_rel * n_l, color=color,
                            shift=dx, label=f"n·measured, n = {w}")  # fmt: skip
        summary += [
            summary_row(
                f"Θ vs {M} networks, n={w}",
                f"max |z| = {theta.z_score[theta.error > 0].abs().max():.2f}",
                bool(ok_theta.all()),
            ),
            summary_row(
                f"NTK variance vs {M} networks, n={w}",
                f"max rel. dev. {np.nanmax(np.abs(m_rel[1:] - th_rel[1:]) / th_rel[1:]):.2f}",
                bool(ok_var.all()),
            ),
        ]
        rows.append(
            pd.DataFrame(
                {
                    "width": w, "layer": layers,
                    "Θ11 theory": th.Theta[:, 0, 0], "Θ11 measured": ms.Theta[:, 0, 0],
                    "±": ms.Theta_err[:, 0, 0], "Var/Θ² theory": th_rel,
                    "Var/Θ² measured": m_rel, "± ": e_rel, "within bound": ok_theta & ok_var,
                }
            )
        )  # fmt: skip
    theory_and_measured(axes[2], layers, rel_coeff, theory_label="theory (A+2B)/Θ²")
    axes[0].set_title("frozen NTK Θ^(ℓ)")
    axes[1].set_title("relative NTK variance Var(Ĥ_ii)/Θ²")
    axes[2].set_title("n · Var(Ĥ_ii)/Θ²  (1/n scaling)")
    for ax in axes:
        ax.set_xlabel("layer ℓ")
        ax.legend(fontsize=7)
    fig.tight_layout()

    crit = ntk_criticality(net0, x[:1])
    # the book's class rule (9.94)–(9.96) holds at criticality; elsewhere balance numerically
    critical = config.C_W is None and config.C_b is None
    lr_table = learning_rate_scan(
        report_net(config, 64), DEPTHS, method="auto" if critical else "numerical"
    )
    cls = lr_table.attrs["universality_class"]
    summary.append(
        summary_row(
            "NTK criticality (gradients)",
            f"{crit.regime}, depth scale {crit.depth_scale:.3g}",
            # ok unless the gradients change exponentially within this network's depth
            crit.regime == "critical" or crit.depth_scale >= config.depth,
        )
    )
    body = [
        paragraph(
            "The neural tangent kernel Ĥ^(ℓ) measures how a gradient step on one input moves the "
            "network's output on another (book ch. 7–8). With the book's per-layer learning rates "
            "(λ_b for biases, λ_W/n for weights) its infinite-width mean is the frozen NTK Θ^(ℓ), "
            "given layer by layer by Θ^(ℓ+1) = λ_b + λ_W⟨σσ⟩ + C_W⟨σ'σ'⟩Θ^(ℓ) (9.5). At finite width the "
            "NTK fluctuates from network to network; its relative variance is (A + 2B)/(nΘ²) and "
            "grows with depth like ℓ/n (book §8.3–8.4, §9.3). Points: the NTK of real networks, "
            "computed from the layer structure (activations × backpropagated signals), with "
            "one-standard-error bars across networks."
        ),
        paragraph(
            f"Inputs: the first two report inputs; {OUTPUTS} output neurons so that cross-neuron "
            f"statistics exist at the last layer; widths {list(widths)}; up to {WIDE_NETWORKS} "
            "networks at widths ≥ 128. λ_b = λ_W = 1.",
            "note",
        ),
        figure(
            fig,
            "Left: Θ11 (circles) and Θ12 (squares) per layer, theory lines and measured points. "
            "Middle: relative NTK variance of one input, theory curve per width. Right: the same "
            "times n, which the theory predicts to be independent of width (black line); the "
            "narrow net lies above it by the next order, ~ℓ/n.",
        ),
        "<h3>Agreement per layer</h3>",
        paragraph(
            "within bound: |Θ_meas − Θ| ≤ 4·error + 0.15(ℓ/n)·max|Θ^(ℓ)| and |Var_meas − Var| ≤ "
            "4·error + 2(ℓ/n)|Var| (pdlt.agreement): statistical error plus the size of the "
            "neglected finite-width order.",
            "note",
        ),
        table(pd.concat(rows, ignore_index=True), digits=4, scroll=True),
        "<h3>Gradients and learning-rate scaling (book ch. 9)</h3>",
        paragraph(
            f"NTK criticality of this network: {crit.regime} (depth scale of χ_⊥: "
            f"{crit.depth_scale:.3g} layers). Each layer's parameters contribute their own "
            "term times the product of χ_⊥ above them; off criticality that product is "
            "exponential in depth (exploding or vanishing gradients). With constant learning "
            "rates Θ^(L) grows with depth; the learning-rate equivalence principle scales λ^(ℓ) "
            f"per layer so that every layer contributes ∝ 1/L and Θ^(L) stays O(1) (class: {cls})."
        ),
        table(lr_table, digits=4),
        table(crit.to_frame(), digits=3, scroll=True),
    ]
    return Section("ntk", "Neural tangent kernel", "".join(body), summary)
