"""Report section: the NTK at initialization (book ch. 8–9) against real ensembles at two widths."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.experiment.measure import measure
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs, report_net
from pdlt.report.render import figure, paragraph, status, table
from pdlt.theory.ntk import ntk, ntk_fluctuations
from pdlt.theory.ntk_criticality import learning_rates, ntk_criticality

WIDE_NETWORKS = 400  # networks at widths ≥ 128: the NTK of a wide net costs ~n² per layer
OUTPUTS = 4  # output neurons, so that the cross-neuron statistics of layer L exist
DEPTHS = (5, 10, 20, 50, 100)


def theta_agrees(theory: np.ndarray, meas: np.ndarray, err: np.ndarray, width: int) -> np.ndarray:
    """|measured − Θ| ≤ 4·error + 0.15 (ℓ/n)|Θ|: statistics plus the neglected mean correction
    H^{1}/n, whose coefficient is ≲ 0.12 ℓ/n in the book's classes (02-ntk.md §4.3, §8.2)."""
    ell = np.arange(1, theory.shape[0] + 1).reshape((-1,) + (1,) * (theory.ndim - 1))
    return np.abs(meas - theory) <= 4 * err + 0.15 * ell / width * np.abs(theory)


def variance_agrees(
    theory: np.ndarray, meas: np.ndarray, err: np.ndarray, width: int
) -> np.ndarray:
    """|measured − theory| ≤ 4·error + 2 (ℓ/n)|theory| for an O(1/n) statistic, whose relative
    correction is O(ℓ/n) with coefficients ≈ 1–2 (02-ntk.md §7, C1)."""
    ell = np.arange(1, theory.shape[0] + 1)
    return np.abs(meas - theory) <= 4 * err + 2 * ell / width * np.abs(theory)


def _learning_rate_table(config: ReportConfig, C_W: float, C_b: float) -> tuple[pd.DataFrame, str]:
    x = np.ones((1, 4))
    rows, cls = [], ""
    for L in DEPTHS:
        base = report_net(config, 64).with_(depth=L)
        try:
            lr = learning_rates(config.activation, L)
        except ValueError:
            lr = learning_rates(config.activation, L, method="numerical", C_W=C_W, C_b=C_b)
        cls = lr.universality_class
        rows.append(
            {
                "depth L": L,
                "Θ^(L), constant λ": ntk(base, x).Theta[-1, 0, 0],
                "Θ^(L), scaled λ": ntk(lr.apply(base), x).Theta[-1, 0, 0],
                "λ_b^(1)": lr.lambda_b[0],
                "λ_b^(L)": lr.lambda_b[-1],
                "λ_W^(1)": lr.lambda_W[0],
                "λ_W^(L)": lr.lambda_W[-1],
            }
        )
    return pd.DataFrame(rows), cls


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
    axes[0].plot(layers, th.Theta[:, 0, 0], "k-", lw=1.5, label="theory Θ11")
    axes[0].plot(layers, th.Theta[:, 0, 1], "k--", lw=1.2, label="theory Θ12")
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
        offset = (j - (len(nets) - 1) / 2) * 0.18
        for a, b, marker in ((0, 0, "o"), (0, 1, "s")):
            axes[0].errorbar(
                layers + offset,
                ms.Theta[:, a, b],
                yerr=ms.Theta_err[:, a, b],
                fmt=marker,
                ms=3.5,
                capsize=2,
                color=f"C{j}",
                label=f"n = {w}" if (a, b) == (0, 0) else None,
            )
        ok_theta = theta_agrees(th.Theta, ms.Theta, ms.Theta_err, w)
        # relative NTK variance of one input: (A + 2B)/(n_{ℓ−1} Θ²) from the measured A, B, Θ
        n_l = np.asarray(net.widths[:-1], dtype=float)
        mA, mB = ms.A[:, 0, 0, 0, 0], ms.B[:, 0, 0, 0, 0]
        eA, eB = ms.A_err[:, 0, 0, 0, 0], ms.B_err[:, 0, 0, 0, 0]
        th_rel = rel_coeff / w  # layer 1 is 0 (Ĥ^(1) is deterministic)
        m_rel = (mA + 2 * mB) / n_l / ms.Theta[:, 0, 0] ** 2
        e_rel = np.sqrt(eA**2 + 4 * eB**2) / n_l / ms.Theta[:, 0, 0] ** 2
        ok_var = variance_agrees(th_rel, m_rel, e_rel, w)
        axes[1].plot(layers, th_rel, "-", color=f"C{j}", lw=1.5)
        axes[1].errorbar(
            layers + offset,
            m_rel,
            yerr=e_rel,
            fmt="o",
            ms=3.5,
            capsize=2,
            color=f"C{j}",
            label=f"n = {w}",
        )
        axes[2].errorbar(
            layers + offset,
            m_rel * n_l,
            yerr=e_rel * n_l,
            fmt="o",
            ms=3.5,
            capsize=2,
            color=f"C{j}",
            label=f"n·measured, n = {w}",
        )
        summary += [
            {
                "check": f"Θ vs {M} networks, n={w}",
                "value": f"max |z| = {np.max(np.abs(ms.Theta - th.Theta) / np.where(ms.Theta_err > 0, ms.Theta_err, np.inf)):.2f}",
                "status": status(bool(ok_theta.all())),
            },
            {
                "check": f"NTK variance vs {M} networks, n={w}",
                "value": f"max rel. dev. {np.nanmax(np.abs(m_rel[1:] - th_rel[1:]) / th_rel[1:]):.2f}",
                "status": status(bool(ok_var.all())),
            },
        ]
        for ell in range(config.depth):
            rows.append(
                {
                    "width": w,
                    "layer": ell + 1,
                    "Θ11 theory": th.Theta[ell, 0, 0],
                    "Θ11 measured": ms.Theta[ell, 0, 0],
                    "±": ms.Theta_err[ell, 0, 0],
                    "Var/Θ² theory": th_rel[ell],
                    "Var/Θ² measured": m_rel[ell],
                    "± ": e_rel[ell],
                    "within bound": bool(ok_theta[ell].all() and ok_var[ell]),
                }
            )
    axes[2].plot(layers, rel_coeff, "k-", lw=1.5, label="theory (A+2B)/Θ²")
    axes[0].set_title("frozen NTK Θ^(ℓ)")
    axes[1].set_title("relative NTK variance Var(Ĥ_ii)/Θ²")
    axes[2].set_title("n · Var(Ĥ_ii)/Θ²  (1/n scaling)")
    for ax in axes:
        ax.set_xlabel("layer ℓ")
        ax.legend(fontsize=7)
    fig.tight_layout()

    crit = ntk_criticality(net0, x[:1])
    lr_table, cls = _learning_rate_table(config, net0.C_W[0], net0.C_b[0])
    summary.append(
        {
            "check": "NTK criticality (gradients)",
            "value": f"{crit.regime}, depth scale {crit.depth_scale:.3g}",
            # ok unless the gradients change exponentially within this network's depth
            "status": status(crit.regime == "critical" or crit.depth_scale >= config.depth),
        }
    )
    body = [
        paragraph(
            "The neural tangent kernel Ĥ^(ℓ) measures how a gradient step on one input moves the "
            "network's output on another (book ch. 7–8). With the book's per-layer learning rates "
            "(λ_b for biases, λ_W/n for weights) its infinite-width mean is the frozen NTK Θ^(ℓ), "
            "given layer by layer by Θ^(ℓ+1) = λ_b + λ_W⟨σσ⟩ + C_W⟨σ'σ'⟩Θ^(ℓ). At finite width the "
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
            "within bound: |Θ_meas − Θ| ≤ 4·error + 0.15(ℓ/n)|Θ| and |Var_meas − Var| ≤ 4·error + "
            "2(ℓ/n)|Var|: statistical error plus the size of the neglected finite-width order.",
            "note",
        ),
        table(pd.DataFrame(rows), digits=4, scroll=True),
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
