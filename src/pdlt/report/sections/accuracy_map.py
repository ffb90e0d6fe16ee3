"""Report section: the NNGP accuracy map over (C_W, C_b) at three depths (Lee et al. 2017,
Fig. 4; book §5.1, §6.3), for the report's activation and for ReLU, on scikit-learn's digits.

Kept within a few seconds: 300 training and 200 test digits, a 13 × 6 grid, the cosine-table
route of :func:`pdlt.accuracy_map`.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from pdlt.experiment.accuracy_map import accuracy_map, digits_split
from pdlt.report import ReportConfig, Section
from pdlt.report.render import figure, paragraph, status, table

_DEPTHS = (5, 30, 100)
_C_W = np.linspace(0.5, 4.5, 17)
_C_B = np.linspace(0.0, 2.0, 6)
_TOLERANCE = 0.6  # |best C_W − critical C_W| allowed at the deepest depth (grid step 0.25)


def _summary_rows(am) -> tuple[pd.DataFrame, list[dict]]:
    """Best C_W at the deepest depth beside the χ_⊥ = 1 line, per C_b with a line."""
    rows, summary = [], []
    deep = am.accuracy[-1]
    for i, b in enumerate(am.C_b):
        crit = am.critical_C_W[i]
        if not np.isfinite(crit) or b == 0.0:
            continue  # at C_b = 0 the K* = 0 and scale-invariant classes keep every C_W alive
        best = float(am.C_W[np.argmax(deep[i])])
        rows.append(
            {
                "C_b": b,
                "critical C_W": crit,
                "best C_W": best,
                "best accuracy": float(deep[i].max()),
                "ordered-side accuracy (C_W = crit − 1)": float(
                    np.interp(crit - 1.0, am.C_W, deep[i])
                ),
            }
        )
    df = pd.DataFrame(rows)
    ok = bool(len(df)) and bool(np.all(np.abs(df["best C_W"] - df["critical C_W"]) <= _TOLERANCE))
    summary.append(
        {
            "section": "accuracy map",
            "check": f"{am.activation}: best C_W at L = {am.depths[-1]} within {_TOLERANCE} of χ⊥ = 1",
            "value": f"max |Δ| = {np.max(np.abs(df['best C_W'] - df['critical C_W'])):.2f}"
            if len(df)
            else "n/a",
            "status": "ok" if ok else "check",
        }
    )
    return df, summary


def accuracy_map_section(config: ReportConfig) -> Section:
    t0 = time.perf_counter()
    n_train, n_test = (150, 100) if config.quick else (300, 200)
    XA, yA, XB, yB = digits_split(n_train, n_test, seed=config.seed)
    names = [config.activation] + (["relu"] if config.activation != "relu" else [])
    parts = [
        paragraph(
            "Test accuracy of the infinite-width Bayesian network (NNGP posterior mean, book "
            f"§6.3) on {n_train} training / {n_test} test digits over (C_W, C_b), one panel per "
            "depth. The "
            "dashed line is the order–chaos boundary χ⊥(K*) = 1 (book §5.1); for ReLU it is the "
            "semi-critical line C_W = 2, where the kernel grows linearly instead of reaching a "
            "fixed point. Hatched cells are degenerate: the kernel no longer tells the inputs "
            "apart to within round-off, and the cell shows the exact limit of the posterior "
            "there (a constant prediction). With depth, good accuracy survives only near the "
            "line."
        )
    ]
    summary: list[dict] = []
    for name in names:
        am = accuracy_map(name, _C_W, _C_B, _DEPTHS, XA, yA, XB, yB)
        parts.append(
            figure(
                am.plot(),
                f"{name}: NNGP test accuracy over (C_W, C_b) at depths {_DEPTHS}; kernel error "
                f"≤ {am.kernel_error.max():.1e} (relative), noise ε² = {am.info['noise']:g} q̄.",
            )
        )
        df, rows = _summary_rows(am)
        if len(df):
            parts.append(table(df, digits=3))
            ok = rows[0]["status"] == "ok"
            parts.append(paragraph(f"{status(ok)} {rows[0]['check']}: {rows[0]['value']}", "note"))
        summary += rows
    return Section(
        id="accuracy-map",
        title="Accuracy map over (C_W, C_b) at growing depth (NNGP, Lee et al. 2017)",
        body="".join(parts),
        summary=tuple(summary),
        seconds=time.perf_counter() - t0,
    )
