"""Report section: the infinite-width kernel K^{(ℓ)}, (4.118), against real ensembles at two
widths, with the 1/n correction G^{1}/n, (4.104)/(4.115), beside the deviation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.compare import agreement, compare
from pdlt.experiment.measure import measure
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs, report_net
from pdlt.report.render import (
    figure,
    offset,
    paragraph,
    summary_row,
    table,
    theory_and_measured,
)
from pdlt.theory.kernel import kernel
from pdlt.theory.vertex import metric

_PAIRS = ((0, 0), (2, 2), (0, 1), (0, 2))


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
    for i, (a, b) in enumerate(_PAIRS):
        theory_and_measured(axes[i], layers, th.K[:, a, b], theory_label="theory (n = ∞)")
        axes[i].set_title(f"K$_{{{a + 1}{b + 1}}}^{{(\\ell)}}$")
        resid[i].axhline(0.0, color="k", lw=1)
        resid[i].set_xlabel("layer ℓ")
    for j, (w, net) in enumerate(nets.items()):
        ms = measure(net, x, config.ensemble_size, seed=config.seed + j, device=config.device)
        tab = compare(th, ms)
        tables[w] = tab.assign(within_bound=agreement(tab, w))
        summary.append(
            summary_row(
                f"K vs {ms.n_networks} networks, n={w}",
                f"max |z| = {tab.z_score.abs().max():.2f}",
                bool(tables[w].within_bound.all()),
            )
        )
        G = metric(net, x).G  # K + G^{1}/n, the finite-width section's 1/n prediction
        dx = offset(j, len(nets))
        for i, (a, b) in enumerate(_PAIRS):
            scale = np.abs(th.K[:, a, b]).max()
            theory_and_measured(
                axes[i], layers, None, ms.K[:, a, b], ms.K_err[:, a, b],
                color=f"C{j}", label=f"measured, n = {w}", shift=dx,
            )  # fmt: skip
            theory_and_measured(
                resid[i], layers, (G[:, a, b] - th.K[:, a, b]) / scale,
                (ms.K[:, a, b] - th.K[:, a, b]) / scale, ms.K_err[:, a, b] / scale,
                color=f"C{j}", theory_label=f"G1/n, n = {w}", theory_style="--", shift=dx,
            )  # fmt: skip
    resid[0].legend(fontsize=7)
    resid[0].set_ylabel("(measured − theory) / max|K|")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    cos = x @ x.T / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
    per_layer = [
        pd.DataFrame(
            {
                f"max |z|, n={w}": g.z_score.apply(lambda z: z.abs().max()),
                f"max |rel|, n={w}": g.relative.apply(lambda r: r.abs().max()),
                f"within bound, n={w}": g.within_bound.all(),
            }
        )
        for w, g in ((w, t.groupby("layer")) for w, t in tables.items())
    ]
    widest = max(tables)
    body = [
        paragraph(
            "The kernel K^(ℓ)_αβ is the covariance of the preactivations of layer ℓ over the inputs "
            "at infinite width (book §4.1–4.3). It follows layer to layer from "
            "K^(ℓ+1) = C_b + C_W ⟨σσ⟩_K^(ℓ) (4.118). Below, that recursion beside E[z_α z_β] "
            "measured on ensembles of real networks at two widths (error bars: one standard error "
            "across networks). At finite width the measured two-point function differs from K by "
            "O(ℓ/n)."
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
            "G1/n the finite-width theory predicts for it (dashed, (4.115)); the rest is "
            "sampling noise.",
        ),
        "<h3>Agreement per layer</h3>",
        paragraph(
            "within bound: every entry satisfies |measured − theory| ≤ 4·error + (ℓ/n)·max|K^(ℓ)| "
            "(pdlt.agreement), the statistical error plus the size of the neglected finite-width "
            "correction.",
            "note",
        ),
        table(pd.concat(per_layer, axis=1).reset_index(), digits=3),
        f"<h3>All entries, n = {widest}</h3>",
        table(tables[widest].drop(columns="statistic"), digits=5, scroll=True),
    ]
    return Section("kernel", "Infinite-width kernel", "".join(body), summary)
