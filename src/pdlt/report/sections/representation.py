"""Report section: representation learning at finite width (book ch. 11) — the dNTK statistics
P and Q (eq. 11.49, 11.52), the 1/n correction Θ1 to the NTK mean (eq. 9.3), and the change of
the NTK in one step of gradient descent, theory beside real networks at two widths."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.activations import activation
from pdlt.compare import agreement, compare, comparison_frame
from pdlt.experiment.measure import measure
from pdlt.experiment.train import train_ensemble
from pdlt.network import MLP
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_inputs, report_net
from pdlt.report.render import figure, offset, paragraph, summary_row, table, theory_and_measured
from pdlt.theory.dntk import dntk
from pdlt.theory.learning import NTKRegressor

DEPTH = 5  # the dNTK of every layer costs ~2^2 forward passes per network: a shallow net
WIDTHS = (16, 32)  # narrow, so that the 1/n effects stand out of the noise
OUTPUTS = 4
ETA = 0.02
TARGETS = np.array([[0.5, -0.3], [-0.4, 0.6]])
TRAIN_STEPS = 20  # the O(1/n) trained mean (§∞.2.2): short training, where it is resolved best


def representation_section(config: ReportConfig) -> Section:
    x = report_inputs()[:2]
    layers = np.arange(1, DEPTH + 1)
    M = max(200, min(config.ensemble_size, 1000))
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.7))
    summary, rows = [], []
    changes = {}
    for j, w in enumerate(WIDTHS):
        net = report_net(config, w).with_(depth=DEPTH, output_dim=OUTPUTS)
        th = dntk(net, x)
        ms = measure(net, x, M, seed=config.seed + 300 + j, statistics=("dntk",))
        tab = compare(th, ms)
        # one scale for P and Q of a layer: ReLU's P vanishes at O(1/n) (σ'' = 0) while its
        # measured 1/n² remainder is of the size (ℓ/n)·|Q|
        tab["scale"] = tab.groupby("layer").theory.transform(lambda t: t.abs().max())
        ok = agreement(tab, net)
        summary.append(
            summary_row(
                f"dNTK P, Q vs {M} networks, n={w}",
                f"{int(ok.sum())}/{len(ok)} entries within bound",
                bool(ok.all()),
            )
        )
        norm = th.Theta[:, 0, 0] ** 2
        for ax, s in zip(axes[:2], ("P", "Q"), strict=True):
            T = getattr(th, s)[:, 0, 0, 0, 0] / norm
            meas = getattr(ms, s)[:, 0, 0, 0, 0] / norm
            err = getattr(ms, s + "_err")[:, 0, 0, 0, 0] / norm
            theory_and_measured(
                ax,
                layers,
                T if j == 0 else None,
                meas,
                err,
                color=f"C{j}",
                label=f"measured, n = {w}",
                theory_label="theory",
                shift=offset(j, len(WIDTHS)),
            )
            if j == 0:
                ax.get_lines()[0].set_color("k")
        # one step of gradient descent: E[Ĥ(1) − Ĥ(0)] against −(η/n)Σ(P + n_L Q + Q); the
        # a.e. dNTK misses kink crossings, so a kinked activation is replaced by tanh here
        small = net.with_(activation=_smooth(config), output_dim=TARGETS.shape[1])
        pred = dntk(small, x).ntk_change(ETA)
        ens = train_ensemble(
            small,
            x,
            TARGETS,
            steps=1,
            learning_rate=ETA,
            n_networks=2 * M,
            seed=config.seed + 400 + j,
            record_ntk=True,
            device=config.device,
        )
        mean, err = ens.ntk_change()
        changes[w] = (pred, mean, err)
        iu = np.triu_indices(2)
        frame = comparison_frame("ntk_change", DEPTH, pred[iu], mean[iu], err[iu])
        ok1 = agreement(frame, net)
        summary.append(
            summary_row(
                f"one-step NTK change, n={w}",
                f"predicted {pred[0, 0]:.2e}, measured {mean[0, 0]:.2e} ± {err[0, 0]:.1e}",
                bool(ok1.all()),
            )
        )
        for (a, b), p, m_, e in zip(
            zip(*iu, strict=True), pred[iu], mean[iu], err[iu], strict=True
        ):
            rows.append(
                {
                    "width n": w,
                    "entry": f"ΔΘ{a + 1}{b + 1}",
                    "predicted": p,
                    "measured": m_,
                    "error": e,
                    "n·measured/η": w * m_ / ETA,
                }
            )
    for ax, s in zip(axes[:2], ("P", "Q"), strict=True):
        ax.set_title(f"{s}/Θ² (input 1), coefficient of 1/n")
        ax.set_xlabel("layer ℓ")
        ax.legend(fontsize=7)
    ax = axes[2]
    inv_n = np.array([1 / w for w in WIDTHS])
    pred = np.array([changes[w][0][0, 0] for w in WIDTHS])
    meas = np.array([changes[w][1][0, 0] for w in WIDTHS])
    err = np.array([changes[w][2][0, 0] for w in WIDTHS])
    grid = np.linspace(0, inv_n.max() * 1.1, 20)
    slope = pred[0] / inv_n[0]
    ax.plot(grid, slope * grid, "k-", lw=1.5, label="theory −(η/n)Σ(P + n_L Q + Q)")
    ax.errorbar(inv_n, meas, yerr=err, fmt="o", color="C3", capsize=2, label="real networks")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("1/n")
    ax.set_title(f"E[Ĥ11(1) − Ĥ11(0)], one GD step, η = {ETA}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    trained_rows, fig2 = _trained_mean(config, x, summary)
    body = [
        paragraph(
            "At infinite width the NTK is frozen and hidden representations do not move; at "
            "finite width they do (book ch. 11). The dNTK dĤ — the second derivative of the "
            "network function contracted with two gradients (eq. 11.8) — makes the NTK change "
            "in training, ΔĤ = −η Σ (dĤ + dĤ) ε. Its correlation with the preactivations is "
            "O(1/n), described by P and Q (eq. 11.45), which follow layer to layer "
            "(eq. 11.49, 11.52). Below, those recursions beside real networks at two widths "
            f"(depth {DEPTH}, two inputs, {M} networks per width), and the mean change of the "
            "NTK in one step of gradient descent on the MSE loss, predicted from P and Q."
        ),
        figure(
            fig,
            "Left, middle: P and Q of the first input per layer, divided by Θ², the coefficients "
            "of 1/n (the theory line holds for every width; the measured n·E[dĤ z] agrees at "
            "both widths). Right: the mean NTK change after one step falls like 1/n — "
            "representation learning vanishes at infinite width.",
        ),
        "<h3>The NTK moves in one step of gradient descent</h3>",
        table(pd.DataFrame(rows), digits=4),
        "<h3>The trained network at O(1/n)</h3>",
        paragraph(
            f"The mean output of real {_smooth(config)} networks (depth 3, C_W = 1.5, C_b = 0.2) "
            f"trained for {TRAIN_STEPS} steps of full-batch "
            "gradient descent (antithetic pairs, float64) differs from the infinite-width kernel "
            "prediction by O(1/n); pdlt's finite-width prediction (NTKRegressor(finite_width="
            "True), book §∞.2.2: dNTK, ddNTK, NTK variance and Θ1 contributions) accounts for "
            "it. So for the variance over initializations: the infinite-width Σ(t) misses an "
            "O(1/n) part (K1, the NTK variance A, B and its correlation D, F with the outputs, "
            "the dNTK; pdlt's derivation, predict(return_std=True))."
        ),
        figure(
            fig2,
            "Left: n × (trained mean − kernel prediction); right: n × (variance − infinite-width "
            "Σ(t)), on the two training inputs and a test input: theory (black) against real "
            "networks at two widths (points): they agree within error plus the next order "
            "(pdlt.agreement) at both widths.",
        ),
        table(pd.DataFrame(trained_rows), digits=4),
        paragraph(
            "For ReLU the a.e. dNTK (σ'' = 0) misses the contribution of units whose sign flips "
            "during a finite step; measured first-step changes of ReLU networks are about twice "
            "the P, Q prediction at η = 0.02 (both falling like 1/n), so this panel is a check "
            "for smooth activations.",
            "note",
        ),
    ]
    return Section(
        "representation", "Representation learning at finite width", "".join(body), summary
    )


def _smooth(config: ReportConfig) -> str:
    """The report's activation if it is smooth, else tanh: the dNTK expansion of training
    (ΔĤ = −ηΣ(dĤ + dĤ)ε + …) misses the units that cross a kink during a finite step."""
    return "tanh" if activation(config.activation).kinks else config.activation


def _trained_mean(config: ReportConfig, x: np.ndarray, summary: list):
    """The trained ensemble's mean at O(1/n) (book §∞.2.2) against real networks at the two
    widths: rows for the table and the figure."""
    X_A, y_A = x[:2], np.array([1.0, -0.8])
    X_all = np.concatenate([X_A, report_inputs()[2:3]])
    fig, (ax, axv) = plt.subplots(1, 2, figsize=(9.0, 3.3))
    rows = []
    M = 2 * max(400, min(config.ensemble_size, 1000))
    idx = np.arange(X_all.shape[0])
    for j, w in enumerate(WIDTHS):
        # off criticality the 1/n shift of the trained mean is large enough to resolve
        net = MLP(_smooth(config), 3, w, 4, C_W=1.5, C_b=0.2)
        kw = dict(learning_rate=ETA, steps=TRAIN_STEPS)
        m_inf, s_inf = NTKRegressor(net, **kw).fit(X_A, y_A).predict(X_all, return_std=True)
        fw = NTKRegressor(net, finite_width=True, **kw).fit(X_A, y_A)
        m_fw, s_fw = fw.predict(X_all, return_std=True)
        v_inf, v_fw = s_inf**2, s_fw**2
        ens = train_ensemble(
            net,
            X_A,
            y_A,
            steps=TRAIN_STEPS,
            learning_rate=ETA,
            n_networks=M,
            seed=config.seed + 500 + j,
            X_test=X_all,
            antithetic=True,
            dtype="float64",
            device=config.device,
        )
        mean, err = ens.mean()
        mean, err = mean[:, 0], err[:, 0]
        var, var_err = (a[:, 0] for a in ens.variance())
        panels = (
            ("mean", ax, m_inf, m_fw, mean, err, m_fw - m_inf, "kernel prediction"),
            ("variance", axv, v_inf, v_fw, var, var_err, v_fw.max(), "infinite-width Σ(t)"),
        )
        for what, a, inf, fin, meas, e, scale, base in panels:
            if j == 0:
                a.plot(idx, w * (fin - inf), "k_", ms=22, mew=2, label="theory (× n)")
            a.errorbar(
                idx + offset(j, len(WIDTHS)),
                w * (meas - inf),
                yerr=w * e,
                fmt="o",
                color=f"C{j}",
                capsize=2,
                label=f"real networks, n = {w}",
            )
            frame = comparison_frame(f"trained_{what}", 3, fin, meas, e, scale=scale)
            summary.append(
                summary_row(
                    f"trained {what} at O(1/n), t={TRAIN_STEPS}, n={w}",
                    f"max |measured − 1/n theory| = {np.abs(meas - fin).max():.3g} "
                    f"({base} off by {np.abs(meas - inf).max():.3g})",
                    bool(agreement(frame, net).all()),
                )
            )
        for k in idx:
            rows.append(
                {
                    "width n": w,
                    "input": ("train 1", "train 2", "test")[k],
                    "kernel prediction": m_inf[k],
                    "1/n prediction": m_fw[k],
                    "measured": mean[k],
                    "error": err[k],
                    "Σ(t) (infinite width)": v_inf[k],
                    "1/n variance": v_fw[k],
                    "measured variance": var[k],
                    "error ": var_err[k],
                }
            )
    for a, what in ((ax, "mean − kernel prediction"), (axv, "variance − Σ(t)")):
        a.axhline(0, color="0.6", lw=0.8)
        a.set_xticks(idx, ["train 1", "train 2", "test"])
        a.set_ylabel(f"n · ({what})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return rows, fig
