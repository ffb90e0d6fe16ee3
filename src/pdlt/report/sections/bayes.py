"""Report section: Bayesian learning at finite width (book §6.4) — the exact posterior of real
networks against the Gaussian process and the O(1/n) posterior, wiring, the representation
shift of the last hidden layer, and the evidence for criticality at finite width."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from matplotlib import pyplot as plt

from pdlt.experiment.bayes import measure_posterior
from pdlt.report import ReportConfig, Section
from pdlt.report.common import report_net
from pdlt.report.render import figure, paragraph, status, table
from pdlt.theory import bayes as B

NOISE = 1e-2
DEPTH = 3  # shallow: the section's point is 1/n, and deep tanh nets need ℓ/n ≪ 1 for it


def _task(config: ReportConfig):
    """3 training, 2 test inputs with |x|² = n_0 = 6; 2 outputs, targets at the kernel's scale."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 6))
    x *= np.sqrt(6) / np.linalg.norm(x, axis=1, keepdims=True)
    Y = np.array([[1.0, -0.5], [-0.8, 0.7], [0.4, 0.9]])
    return x[:3], Y, x[3:]


def _net(config: ReportConfig, width: int, **changes):
    return report_net(config, width).with_(depth=DEPTH, input_dim=6, output_dim=2, **changes)


def _scaled_targets(config: ReportConfig, Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Targets rescaled to the prior's output scale √K, so the posterior is not far in the tail."""
    K = B.prior_statistics(_net(config, 64), torch.from_numpy(X)).K
    return Y * np.sqrt(float(np.mean(np.diag(K))))


def bayes_section(config: ReportConfig) -> Section:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # narrow-width notes go in the text
        return _bayes_section(config)


def _bayes_section(config: ReportConfig) -> Section:
    X, Y, Xt = _task(config)
    Y = _scaled_targets(config, Y, X)
    widths = (16, 64)
    M = 3000 if config.quick else 8000
    rows, summary, parts = [], [], []
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    labels = [f"x{b + 1}, out {i + 1}" for b in range(2) for i in range(2)]
    for k, n in enumerate(widths):
        net = _net(config, n)
        th = B.bayesian_posterior(net, X, Y, Xt, noise=NOISE)
        ms = measure_posterior(net, X, Y, Xt, noise=NOISE, n_networks=M, seed=config.seed)
        d_gp = np.abs(ms.mean - th.gp_mean).max()
        d_1 = np.abs(ms.mean - th.mean).max()
        s_ex, s_th = ms.shift[-1], th.shift[-1]
        rows.append(
            {
                "width n": n,
                "ESS": round(ms.ess),
                "max|exact − GP| mean": d_gp,
                "max|exact − 1/n| mean": d_1,
                "MC error": float(ms.mean_err.max()),
                "max|exact − 1/n| cov": float(np.abs(ms.cov - th.cov).max()),
                "max|exact − GP| cov": float(np.abs(ms.cov - th.gp_cov).max()),
                "max|shift^(L)| exact": float(np.abs(s_ex).max()),
                "max|exact − 1/n| shift": float(np.abs(s_ex - s_th).max()),
                "log evidence exact": float(ms.log_evidence[0]),
                "± ": float(ms.log_evidence_err[0]),
                "log evidence 1/n": float(th.log_evidence[0]),
                "log evidence GP": th.gp_log_evidence,
            }
        )
        ax = axes[0]
        pos = np.arange(4) + 0.25 * k
        ax.errorbar(
            pos,
            (ms.mean - th.gp_mean).ravel(),
            yerr=ms.mean_err.ravel(),
            fmt="o",
            label=f"exact − GP, n={n}",
        )
        ax.plot(pos, (th.mean - th.gp_mean).ravel(), "x", ms=9, label=f"1/n theory − GP, n={n}")
        axes[2].errorbar(
            s_th.ravel(), s_ex.ravel(), yerr=ms.shift_err[-1].ravel(), fmt="o", ms=3, label=f"n={n}"
        )
        summary.append(
            {
                "section": "bayes",
                "check": f"1/n posterior closer to real networks than the GP (n={n})",
                "value": f"{d_1:.3g} vs {d_gp:.3g}"
                + ("" if d_1 < d_gp else " (GP residual within 3 se: not resolved at this n)"),
                "status": status(bool(d_1 < d_gp or d_gp < 3 * ms.mean_err.max())),
            }
        )
    axes[0].axhline(0, color="0.6", lw=0.8)
    axes[0].set_xticks(np.arange(4) + 0.125, labels, fontsize=8)
    axes[0].set_ylabel("posterior mean − GP mean")
    axes[0].set_title("posterior mean at finite width")
    axes[0].legend(fontsize=7)
    lim = float(np.abs(axes[2].get_xlim()).max())
    axes[2].plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    axes[2].set_xlabel("1/n theory E[Ĝ^(L)|y] − G^(L)")
    axes[2].set_ylabel("exact (real networks)")
    axes[2].set_title("representation shift, last hidden layer")
    axes[2].legend(fontsize=7)

    # wiring: output 1's prediction as output 2's targets are scaled
    n_w = widths[0]
    net = _net(config, n_w)
    scales = np.linspace(0.0, 2.0, 9)
    th_curve, gp_curve = [], []
    for s in scales:
        Ys = Y * np.array([1.0, s])
        p = B.bayesian_posterior(net, X, Ys, Xt, noise=NOISE)
        th_curve.append(p.mean[0, 0])
        gp_curve.append(p.gp_mean[0, 0])
    ax = axes[1]
    ax.plot(scales, th_curve, "C1-", label=f"1/n theory, n={n_w}")
    ax.plot(scales, gp_curve, "k--", label="GP (no wiring)")
    for s in (0.0, 2.0) if config.quick else (0.0, 1.0, 2.0):
        e = measure_posterior(
            net, X, Y * np.array([1.0, s]), Xt, noise=NOISE, n_networks=M, seed=config.seed
        )
        ax.errorbar([s], [e.mean[0, 0]], yerr=[e.mean_err[0, 0]], fmt="o", color="C0")
    ax.plot([], [], "o", color="C0", label="exact, real networks")
    ax.set_xlabel("scale of output 2's targets")
    ax.set_ylabel("posterior mean of output 1 at x1")
    ax.set_title("wiring (eq. 6.89)")
    ax.legend(fontsize=7)
    parts.append(
        paragraph(
            f"{config.activation} MLP of depth {DEPTH} with 2 outputs, C_W, C_b of the report, "
            f"3 training and 2 test inputs (n_0 = 6), noise ε² = {NOISE}. The exact posterior of "
            f"real networks weights each of {M} sampled networks by its likelihood given its "
            "last hidden layer (pdlt.measure_posterior); the theory is pdlt.bayesian_posterior "
            "(book §6.4, eqs. 6.87–6.89 for the mean; covariance and representation shift "
            "derived in pdlt.theory.bayes). At width 16 the 1/n expansion is rough (ℓ/n ≈ 0.2)."
        )
    )
    parts.append(figure(fig, "Posterior mean minus the GP mean, wiring, representation shift"))
    parts.append(table(__import__("pandas").DataFrame(rows)))

    # the evidence for criticality at finite width
    from pdlt.report.common import report_C_W

    C0 = report_C_W(config)
    grid = C0 * np.linspace(0.6, 1.5, 8)
    curves = {n: [] for n in (*widths, np.inf)}
    for cw in grid:
        stats = B.prior_statistics(_net(config, 64, C_W=float(cw)), torch.from_numpy(X))
        for n in widths:
            curves[n].append(B.evidence_from_statistics(stats, Y, NOISE, n)[0])
        curves[np.inf].append(B.evidence_from_statistics(stats, Y, NOISE, 64)[1])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for n, v in curves.items():
        ax.plot(
            grid, v, "k--" if n == np.inf else "-", label="n = ∞" if n == np.inf else f"n = {n}"
        )
    ax.axvline(C0, color="0.6", lw=0.8)
    ax.set_xlabel("C_W")
    ax.set_ylabel("log evidence")
    ax.legend(fontsize=8)
    parts.append(
        figure(
            fig,
            "Evidence for criticality at finite width: log p(y|C_W) through O(1/n) "
            "(the grey line is the report's C_W)",
        )
    )
    return Section("bayes", "Bayesian learning at finite width", "".join(parts), summary)
