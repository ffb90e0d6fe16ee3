"""Report section: learning at infinite width against real trained ensembles (book ch. 6, 10),
bias–variance and evidence across C_W, and the trainability phase diagram (the stored full grid of
`pdlt phase-diagram` when there is one, else a coarse grid trained here)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from pdlt.compare import agreement, comparison_frame
from pdlt.experiment.train import torch_threads, train_ensemble
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_C_b, report_C_W, report_net
from pdlt.report.render import figure, paragraph, summary_row, table, theory_and_measured
from pdlt.theory.learning import (
    kernel_prediction,
    log_evidence_from_kernel,
    nngp_posterior,
    output_kernels,
)


def _split(K: np.ndarray, n_A: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return K[:n_A, :n_A], K[n_A:, :n_A], K[n_A:, n_A:]


def _circle(theta: np.ndarray) -> np.ndarray:
    """Inputs on the circle of radius √2 in n_0 = 2 (|x|² = n_0)."""
    return math.sqrt(2) * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _target(theta: np.ndarray) -> np.ndarray:
    return np.sin(2 * theta) + 0.3 * np.cos(theta)


def _task(quick: bool):
    theta_A = np.linspace(-1.2, 1.2, 5)
    theta_B = np.linspace(-1.6, 1.6, 17 if quick else 33)
    return _circle(theta_A), _target(theta_A), theta_B


def _trained_vs_theory(config: ReportConfig):
    X_A, y_A, theta_B = _task(config.quick)
    X_B = _circle(theta_B)
    n_A = len(X_A)
    width = min(max(config.widths), 64 if config.quick else 128)
    net = report_net(config, width, input_dim=2)
    K, Theta = output_kernels(net, np.concatenate([X_A, X_B]))
    eta = 1.0 / np.linalg.eigvalsh(Theta[:n_A, :n_A]).max()
    steps = 40 if config.quick else 60
    Y = y_A[:, None]
    m_B, cov = kernel_prediction(
        *_split(Theta, n_A)[:2], *_split(K, n_A), Y, learning_rate=eta, steps=steps
    )
    g_B, gcov = nngp_posterior(*_split(K, n_A), Y, 1e-8)
    every = 2
    X_meas = X_B[::every]
    n_networks = min(config.ensemble_size, 64 if config.quick else 128)
    n_networks -= n_networks % 2
    ens = train_ensemble(
        net, X_A, y_A, steps=steps, learning_rate=eta, n_networks=n_networks,
        seed=config.seed, X_test=X_meas, antithetic=True, device=config.device,
    )  # fmt: skip
    mean, mean_err = (a[:, 0] for a in ens.mean())
    var, var_err = (a[:, 0] for a in ens.variance())
    return {
        "net": net, "X_A": X_A, "y_A": y_A, "theta_B": theta_B, "m_B": m_B[:, 0],
        "s_B": np.sqrt(np.clip(np.diag(cov), 0, None)), "g_B": g_B[:, 0],
        "gs_B": np.sqrt(np.clip(np.diag(gcov), 0, None)), "theta_meas": theta_B[::every],
        "mean": mean, "mean_err": mean_err, "var": var, "var_err": var_err, "steps": steps,
        "eta": eta, "width": width, "n_networks": n_networks,
    }  # fmt: skip


def _scan(config: ReportConfig) -> pd.DataFrame:
    """Bias², variance and log evidence of the fully trained infinite-width network vs C_W
    (book §10.3, §6.3.2), one kernel evaluation per C_W."""
    X_A, y_A, theta_B = _task(True)
    X_B, y_B = _circle(theta_B), _target(theta_B)
    n_A = len(X_A)
    c0 = report_C_W(config)
    grid = np.round(c0 * np.geomspace(0.6, 1.8, 5 if config.quick else 9), 4)
    rows = []
    for c in grid:
        K, Theta = output_kernels(
            report_net(config, 1, input_dim=2, C_W=float(c)), np.concatenate([X_A, X_B])
        )
        m, cov = kernel_prediction(*_split(Theta, n_A)[:2], *_split(K, n_A), y_A[:, None])
        bias2 = (m[:, 0] - y_B) ** 2
        var = np.clip(np.diag(cov), 0, None)
        rows.append(
            {
                "C_W": c,
                "bias2": bias2.mean(),
                "variance": var.mean(),
                "error": (bias2 + var).mean(),
                "log_evidence": log_evidence_from_kernel(K[:n_A, :n_A], y_A[:, None], 1e-6),
            }
        )
    return pd.DataFrame(rows)


def learning_section(config: ReportConfig) -> Section:
    with torch_threads(1):  # small tensors: one thread is fastest on a busy machine
        return _learning_section(config)


def _learning_section(config: ReportConfig) -> Section:
    r = _trained_vs_theory(config)
    m_meas = np.interp(r["theta_meas"], r["theta_B"], r["m_B"])
    v_meas = np.interp(r["theta_meas"], r["theta_B"], r["s_B"] ** 2)
    L, n = config.depth, r["width"]
    # the trained output is the last layer's (ℓ = L); its finite-width correction is O(L/n) of
    # the prediction's largest value
    scale = max(float(np.abs(r["m_B"]).max()), float(r["s_B"].max()))
    mean = comparison_frame("trained_mean", L, m_meas, r["mean"], r["mean_err"], scale=scale)
    var = comparison_frame(
        "trained_variance", L, v_meas, r["var"], r["var_err"], scale=float(v_meas.max())
    )
    ok_mean, ok_var = agreement(mean, n).to_numpy(), agreement(var, n).to_numpy()

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    th = r["theta_B"]
    ax.plot(th, _target(th), color="0.6", lw=1, ls=":", label="target function")
    ax.plot(th, r["m_B"], "k-", label=f"NTK prediction ({r['steps']} steps)")
    ax.fill_between(th, r["m_B"] - r["s_B"], r["m_B"] + r["s_B"], color="k", alpha=0.12)
    ax.plot(th, r["g_B"], "C2--", lw=1.2, label="NNGP posterior mean")
    theory_and_measured(
        ax, r["theta_meas"], None, r["mean"], r["mean_err"], color="C1",
        label=f"{r['n_networks']} trained nets, n = {n}",
    )  # fmt: skip
    ax.plot(r["theta_meas"], r["mean"] + np.sqrt(r["var"]), "_", color="C1", ms=8)
    ax.plot(r["theta_meas"], r["mean"] - np.sqrt(r["var"]), "_", color="C1", ms=8)
    ax.plot(np.linspace(-1.2, 1.2, 5), r["y_A"], "ks", ms=6, mfc="w", label="training data")
    ax.set_xlabel("input angle θ")
    ax.set_ylabel("network output")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(th, r["s_B"] ** 2, "k-", label="Σ(t) theory")
    ax.plot(th, r["gs_B"] ** 2, "C2--", lw=1.2, label="NNGP posterior variance")
    theory_and_measured(
        ax, r["theta_meas"], None, r["var"], r["var_err"], color="C1",
        label="trained ensemble variance",
    )  # fmt: skip
    ax.set_xlabel("input angle θ")
    ax.set_ylabel("variance over initializations")
    ax.legend(fontsize=7)
    fig.tight_layout()

    z_var = var.z_score.abs()
    z_var = z_var.where(np.isfinite(z_var), 0.0)
    scan = _scan(config)
    fig2, (b1, b2) = plt.subplots(1, 2, figsize=(11, 3.4))
    b1.plot(scan.C_W, scan.bias2, "o-", label="bias²")
    b1.plot(scan.C_W, scan.variance, "s-", label="variance")
    b1.plot(scan.C_W, scan.error, "k^-", label="bias² + variance")
    b1.set_yscale("log")
    b1.set_xlabel("C_W")
    b1.set_ylabel("test-set mean")
    b1.axvline(report_C_W(config), color="r", ls=":", lw=1)
    b1.legend(fontsize=7)
    b2.plot(scan.C_W, scan.log_evidence, "o-")
    b2.axvline(report_C_W(config), color="r", ls=":", lw=1, label="report's C_W")
    b2.set_xlabel("C_W")
    b2.set_ylabel("log evidence log p(y|H)")
    b2.legend(fontsize=7)
    fig2.tight_layout()

    summary = [
        summary_row(
            f"trained mean vs NTK prediction, {r['n_networks']} nets, n={n}",
            # the z-score alone would alarm: antithetic pairs make the error bars far smaller
            # than the O(L/n) finite-width shift the infinite-width prediction neglects
            f"max |Δ| = {np.abs(r['mean'] - m_meas).max():.3f} "
            f"(|z| ≤ {mean.z_score.abs().max():.1f}; 1/n allowance {L / n * scale:.3f})",
            bool(ok_mean.all()),
        ),
        summary_row(
            f"trained variance vs Σ(t), n={n}", f"max |z| = {z_var.max():.2f}", bool(ok_var.all())
        ),
    ]
    body = [
        paragraph(
            "At infinite width a network trained by gradient descent on the MSE loss is a kernel "
            "method with the frozen NTK Θ, plus the random initial function (book ch. 10): over "
            "initializations the trained output is Gaussian with mean Θ_BA Θ̃⁻¹[1 − (1 − ηΘ̃)^t] y "
            "and a covariance built from K and Θ. Bayesian inference with the same network "
            "(NNGP, ch. 6.3) uses K instead. Below, both predictions beside an ensemble of real "
            "networks trained with the book's per-layer learning rates for the same number of "
            "steps (antithetic pairs, so the mean's error bars are small)."
        ),
        paragraph(
            f"Task: 5 training inputs on a circle in n_0 = 2, targets sin 2θ + 0.3 cos θ; "
            f"{config.activation}, depth {config.depth}, C_W = {report_C_W(config):.4g}, "
            f"C_b = {report_C_b(config):.4g}; η = 1/λ_max(Θ̃) = {r['eta']:.3g}, {r['steps']} steps.",
            "note",
        ),
        figure(
            fig,
            "Left: prediction of the trained ensemble. Line and band: NTK theory mean ± one "
            "standard deviation over initializations; dashed: NNGP posterior mean; points: mean "
            "of real trained networks (error bar: standard error), dashes: ± one measured "
            "standard deviation. Right: the variance over initializations.",
        ),
        table(
            pd.DataFrame(
                {
                    "theta": r["theta_meas"],
                    "theory_mean": m_meas,
                    "measured_mean": r["mean"],
                    "mean_err": r["mean_err"],
                    "theory_var": v_meas,
                    "measured_var": r["var"],
                    "var_err": r["var_err"],
                    "within_bound": ok_mean & ok_var,
                }
            ),
            digits=4,
            scroll=True,
        ),
        paragraph(
            "within_bound: |measured − theory| ≤ 4·error + (L/n)·scale (pdlt.agreement; scale: "
            "the prediction's largest value), the statistical error plus the size of the neglected "
            "finite-width correction.",
            "note",
        ),
        "<h3>Generalization and evidence across C_W</h3>",
        paragraph(
            "The fully trained infinite-width network's test error splits into bias² (the "
            "ensemble mean's miss) and variance (instantiation to instantiation), book §10.3. "
            "The log evidence is the Bayesian score of the same network as a model of the "
            "training data (§6.3.2); away from criticality a deep network's kernel cannot fit "
            "the data's structure and both degrade."
        ),
        figure(fig2, "Bias², variance and log evidence against C_W (theory, infinite width)."),
        table(scan, digits=4),
    ]
    body.append("<h3>Trainability phase diagram</h3>")
    body.extend(_phase_diagram_part(summary, config))
    return Section(
        "learning", "Learning: kernel prediction and trained ensembles", "".join(body), summary
    )


# The coarse diagram the report trains itself when no full one is stored: 8 C_W × 4 depths,
# width 32, 128 digits, 200 steps (about 5 s of one core: each depth is one batched program).
REPORT_C_W = tuple(np.round(np.linspace(0.5, 4.0, 8), 4).tolist())
REPORT_DEPTHS = (4, 12, 24, 48)
REPORT_QUICK_DEPTHS = (4, 12, 24)
REPORT_SETTINGS = {"width": 32, "n_train": 128, "steps": 200}


def _phase_diagram_part(summary: list, config: ReportConfig) -> list[str]:
    from pdlt.experiment.trainability import DEFAULT_STORE, stored_trainability, trainability

    res = stored_trainability(DEFAULT_STORE)
    if res is None:
        depths = REPORT_QUICK_DEPTHS if config.quick else REPORT_DEPTHS
        res = trainability(
            REPORT_C_W, depths, seeds=(config.seed,), store=None, progress=False,
            device=config.device, **REPORT_SETTINGS,
        )  # fmt: skip
        source = (
            f"A coarse grid trained for this report ({len(REPORT_C_W)} C_W × {len(depths)} "
            f"depths, width {res.settings['width']}, {res.settings['n_train']} digits); "
            f"`pdlt phase-diagram` trains the full grid and keeps it in {DEFAULT_STORE}/, which "
            "the next report in this folder shows instead."
        )
    else:
        source = f"The full grid stored in {DEFAULT_STORE}/ by `pdlt phase-diagram`."
    agree = res.agreement()
    summary.append(
        summary_row("phase diagram: trained ⇔ depth ≤ 6ξ⊥", f"{agree:.0%} of cells", None)
    )
    fig = res.plot()
    return [
        paragraph(
            "Deep tanh networks trained on scikit-learn's digits for a fixed number of steps "
            "over a grid of C_W and depth at C_b = "
            f"{res.settings['C_b']}. The theory's order–chaos boundary (χ⊥ = 1) and the depth "
            "6·ξ⊥ beyond which signal propagation forgets the input (Schoenholz et al. 2016) "
            f"are overlaid. Trained (accuracy above midway to 1) agrees with depth ≤ 6ξ⊥ in "
            f"{agree:.0%} of the cells."
        ),
        paragraph(source, "note"),
        figure(fig, "Training accuracy after a fixed number of steps; white: 6·ξ⊥; red: χ⊥ = 1."),
    ]
