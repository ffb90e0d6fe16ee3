"""Report section: the infinite-width kernel K^{(ℓ)} against real ensembles at two widths."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.compare import compare
from pdlt.experiment.measure import measure
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs, report_net
from pdlt.report.render import figure, paragraph, status, table
from pdlt.theory.kernel import kernel
from pdlt.theory.vertex import metric

_PAIRS = ((0, 0), (2, 2), (0, 1), (0, 2))


def kernel_agrees(table_: pd.DataFrame, width: int, k: float = 4.0) -> pd.Series:
    """|measured − theory| ≤ k·error + (ℓ/n)·max|K^{(ℓ)}|: statistical error plus the size of the
    neglected 1/n metric correction, whose expansion parameter is ℓ/n (book §4.3, §5.4)."""
    scale = table_.groupby("layer").theory.transform(lambda t: t.abs().max())
    allowance = k * table_.error + table_.layer / width * scale
    return (table_.measured - table_.theory).abs() <= allowance


def kernel_section(config: ReportConfig) -> Section:
    x = report_inputs()
    nets = {w: report_net(config, w) for w in config.widths}
    th = kernel(nets[config.widths[0]], x)
    layers = np.arange(1, config.depth + 1)
    tables, summary = {}, []
    fig, grid = plt.subplots(
        2,
        len(_PAIRS),
        figsize=(4.0 * len(_PAIRS), 5.6),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    axes, resid = grid[0], grid[1]
    for a_idx, (a, b) in enumerate(_PAIRS):
        resid[a_idx].axhline(0.0, color="k", lw=1)
        resid[a_idx].set_xlabel("layer ℓ")
        ax = axes[a_idx]
        ax.plot(layers, th.K[:, a, b], "k-", lw=1.5, label="theory (n = ∞)")
        ax.set_title(f"K$_{{{a + 1}{b + 1}}}^{{(\\ell)}}$")
    for j, (w, net) in enumerate(nets.items()):
        ms = measure(net, x, config.ensemble_size, seed=config.seed + j, device=config.device)
        tab = compare(th, ms)
        tables[w] = tab
        ok = kernel_agrees(tab, w)
        summary.append(
            {
                "check": f"K vs {ms.n_networks} networks, n={w}",
                "value": f"max |z| = {tab.z_score.abs().max():.2f}",
                "status": status(bool(ok.all())),
            }
        )
        offset = (j - (len(nets) - 1) / 2) * 0.18
        # the 1/n prediction of the shift (finite-width section: G = K + K1/n_{ℓ−1})
        G = metric(net, x).G
        for a_idx, (a, b) in enumerate(_PAIRS):
            axes[a_idx].errorbar(
                layers + offset,
                ms.K[:, a, b],
                yerr=ms.K_err[:, a, b],
                fmt="o",
                ms=3.5,
                capsize=2,
                color=f"C{j}",
                label=f"measured, n = {w}",
            )
            scale = np.abs(th.K[:, a, b]).max()
            resid[a_idx].plot(
                layers,
                (G[:, a, b] - th.K[:, a, b]) / scale,
                "--",
                color=f"C{j}",
                lw=1.2,
                label=f"K1/n, n = {w}",
            )
            resid[a_idx].errorbar(
                layers + offset,
                (ms.K[:, a, b] - th.K[:, a, b]) / scale,
                yerr=ms.K_err[:, a, b] / scale,
                fmt="o",
                ms=3.5,
                capsize=2,
                color=f"C{j}",
            )
    resid[0].legend(fontsize=7)
    resid[0].set_ylabel("(measured − theory) / max|K|")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    cos = x @ x.T / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
    body = [
        paragraph(
            "The kernel K^(ℓ)_αβ is the covariance of the preactivations of layer ℓ over the inputs "
            "at infinite width (book §4.1–4.3). It follows layer to layer from "
            "K^(ℓ+1) = C_b + C_W ⟨σσ⟩_K^(ℓ). Below, that recursion beside E[z_α z_β] measured on "
            "ensembles of real networks at two widths (error bars: one standard error across "
            "networks). At finite width the measured two-point function differs from K by O(ℓ/n)."
        ),
        table(
            pd.DataFrame([nets[config.widths[0]].describe()]).drop(columns="widths n_0..n_L"),
            cls="spec",
        ),
        paragraph(
            "Inputs: three vectors in n_0 = 4 with |x|² = n_0 and pairwise cosines "
            + ", ".join(f"{cos[i, j]:.2f}" for i, j in ((0, 1), (0, 2), (1, 2)))
            + f"; hidden widths {list(config.widths)}.",
            "note",
        ),
        figure(
            fig,
            "Kernel entries per layer: diagonal (K11, K33) and off-diagonal (K12, K13). Top: "
            "infinite-width theory (line) and real networks (points, one-standard-error bars). "
            "Bottom: the deviation from the infinite-width theory, with the 1/n correction "
            "K1/n the finite-width theory predicts for it (dashed, book §4.3); the rest is "
            "sampling noise.",
        ),
    ]
    rows = []
    for w, tab in tables.items():
        per_layer = tab.assign(ok=kernel_agrees(tab, w)).groupby("layer")
        rows.append(
            pd.DataFrame(
                {
                    f"max |z|, n={w}": per_layer.z_score.apply(lambda z: z.abs().max()),
                    f"max |rel|, n={w}": per_layer.relative.apply(lambda r: r.abs().max()),
                    f"within bound, n={w}": per_layer.ok.all(),
                }
            )
        )
    body.append("<h3>Agreement per layer</h3>")
    body.append(
        paragraph(
            "within_bound: every entry satisfies |measured − theory| ≤ 4·error + (ℓ/n)·max|K^(ℓ)|, "
            "the statistical error plus the size of the neglected finite-width correction.",
            "note",
        )
    )
    body.append(table(pd.concat(rows, axis=1).reset_index(), digits=3))
    widest = max(tables)
    body.append(f"<h3>All entries, n = {widest}</h3>")
    body.append(table(tables[widest].drop(columns="statistic"), digits=5, scroll=True))
    return Section("kernel", "Infinite-width kernel", "".join(body), summary)
