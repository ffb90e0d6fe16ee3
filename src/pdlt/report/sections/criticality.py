"""Report section: criticality of the report's activation (book ch. 5, (5.51)–(5.56)).

The (C_W, C_b) phase diagram (χ_⊥ heat map, order–chaos boundary, the book's critical point),
the critical points and classes of every built-in activation, torch's gains against them, and
the measured decay of the correlation of two inputs in one ordered and one chaotic setting
against the infinite-width recursion and its depth scale ξ_⊥.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt

from pdlt.activations import BUILTIN_ACTIVATIONS
from pdlt.compare import agreement, comparison_frame
from pdlt.experiment.ensemble import forward_chunks, resolve_device
from pdlt.init import compare_gains
from pdlt.network import MLP
from pdlt.report import ReportConfig, Section
from pdlt.report.render import figure, paragraph, summary_row, table, theory_and_measured
from pdlt.theory.criticality import critical_line, critical_point, criticality, phase_diagram
from pdlt.theory.kernel import kernel
from pdlt.theory.vertex import metric

_DECAY_DEPTH = 31  # hidden layers 1..30 are compared


def _classes_table() -> pd.DataFrame:
    rows = []
    for name in BUILTIN_ACTIVATIONS:
        cp = critical_point(name)
        rows.append(
            {
                "activation": name,
                "class": cp.universality_class,
                "C_b": cp.C_b,
                "C_W": cp.C_W,
                "K*": cp.K_star,
                "stability": cp.stability or "—",
                "ν (V/nK² ≈ νℓ/n)": cp.vertex_growth,
            }
        )
    return pd.DataFrame(rows)


def _settings(name: str) -> list[tuple[str, float, float]]:
    """One ordered and one chaotic (C_b, C_W) with a finite K* > 0 and ξ_⊥ of a few layers."""
    C_b = 0.3
    line = critical_line(name, C_b)
    if not line.exists or not math.isfinite(line.C_W):
        return []
    out = []
    for phase, factor in (("ordered", 0.8), ("chaotic", 1.6)):
        c = criticality(name, C_b, factor * line.C_W)
        if c.phase == phase and math.isfinite(c.K_star) and c.K_star > 0 and c.xi_perp < 40:
            out.append((phase, C_b, factor * line.C_W))
    return out


def _inputs(cos: float) -> np.ndarray:
    x = np.zeros((2, 4))
    x[0, 0] = 1.0
    x[1, 0], x[1, 1] = cos, math.sqrt(1 - cos * cos)
    return x * 2.0


def _measured_correlation(
    net: MLP, x: np.ndarray, M: int, seed: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """c^{(ℓ)} = E[z_a z_b]/√(E z_a² E z_b²) over M real networks, delta-method standard error."""
    parts = []
    for ch in forward_chunks(net, torch.as_tensor(x), M, seed, device=resolve_device(device)):
        rows = []
        for z in ch.z[:-1]:
            zd = z.double()
            a, b = zd[:, :, 0], zd[:, :, 1]
            rows.append(torch.stack([(a * a).mean(1), (b * b).mean(1), (a * b).mean(1)], 1))
        parts.append(torch.stack(rows, 1).cpu())
    S = torch.cat(parts).numpy()
    aa, bb, ab = S[:, :, 0].mean(0), S[:, :, 1].mean(0), S[:, :, 2].mean(0)
    c = ab / np.sqrt(aa * bb)
    infl = S[:, :, 2] / np.sqrt(aa * bb) - c / 2 * (S[:, :, 0] / aa + S[:, :, 1] / bb)
    return c, infl.std(0, ddof=1) / math.sqrt(M)


def criticality_section(config: ReportConfig) -> Section:
    name = config.activation
    cp = critical_point(name)
    summary = []
    body = [
        paragraph(
            "Signals in a deep network at initialization are governed by the single-input kernel "
            "map K → C_b + C_W⟨σ²⟩_K and two susceptibilities at its fixed point K*: χ_∥ "
            "(how perturbations of the norm evolve) and χ_⊥ (how the angle between two inputs "
            "evolves, and how much the squared gradient grows per layer going backwards). "
            "χ_⊥ < 1 is the ordered phase (inputs become parallel, gradients vanish), χ_⊥ > 1 the "
            "chaotic phase (nearby inputs decorrelate, gradients explode); both approach their "
            "fixed points on depth scales ξ = 1/|log χ|. The book's criticality is χ_∥ = χ_⊥ = 1 "
            "(book §5.1–5.3; Poole et al. 2016, Schoenholz et al. 2016)."
        ),
        paragraph(f"{name}: {cp.note}", "note"),
    ]

    # phase diagram
    quick = config.quick
    cb = np.linspace(0.0, 1.0, 11 if quick else 21)
    cw_max = 4.0 if not cp.exists or cp.C_W is None else max(4.0, 2.2 * cp.C_W)
    cw = np.linspace(0.1 * cw_max, cw_max, 16 if quick else 31)
    pdg = phase_diagram(name, C_b=cb, C_W=cw)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    chi = np.log(np.clip(pdg.chi_perp, 1e-3, None))
    lim = float(np.abs(chi).max()) or 1.0
    mesh = ax.pcolormesh(cw, cb, chi, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    fig.colorbar(mesh, ax=ax, label="log χ_⊥(K*)  (< 0 ordered, > 0 chaotic)")
    line = pdg.boundary
    ok = np.asarray(line.exists) & np.isfinite(np.asarray(line.C_W, dtype=float))
    ax.plot(np.asarray(line.C_W)[ok], cb[ok], "k-", lw=2, label="order–chaos boundary χ_⊥ = 1")
    if cp.exists:
        ax.plot([cp.C_W], [cp.C_b], "*", color="gold", ms=16, mec="k", label="critical point")
    ax.set_xlabel("C_W")
    ax.set_ylabel("C_b")
    ax.set_xlim(cw[0], cw[-1])
    ax.legend(fontsize=8, loc="upper left")
    body.append(
        figure(
            fig,
            f"Phase diagram of {name}: colour is log χ_⊥ at the fixed point the kernel flows to "
            "from K^(1) = C_b + C_W (blue ordered, red chaotic); black line χ_⊥ = 1; star the "
            "book's critical point (χ_∥ = χ_⊥ = 1) where one exists.",
        )
    )
    counts = pd.Series(pdg.phase.reshape(-1)).value_counts()
    summary.append(
        summary_row(
            f"phase diagram {pdg.phase.size} points",
            ", ".join(f"{k} {v}" for k, v in counts.items()),
            True,
        )
    )
    summary.append(
        summary_row(
            f"critical point of {name}",
            f"{cp.universality_class}: C_b={cp.C_b:.6g}, C_W={cp.C_W:.6g}"
            if cp.exists
            else "none (no χ_∥ = χ_⊥ = 1 with C_b ≥ 0)",
            True,
        )
    )

    body.append("<h3>Critical points and universality classes of the built-in activations</h3>")
    body.append(
        paragraph(
            "scale-invariant: χ_∥ = χ_⊥ = C_W A_2 at every K (book §5.2); K*=0: C_b = 0, "
            "C_W = 1/σ'(0)², the kernel decays as a power law (§5.3.3); half-stable: a nonzero K* "
            "stable from one side only (§5.3.4); none: no C_b ≥ 0 makes both χ equal 1 (§5.3.2). "
            "ν is the growth of the normalized four-point vertex, V/(nK²) ≈ νℓ/n (§5.4).",
            "note",
        )
    )
    body.append(table(_classes_table(), digits=6))
    body.append("<h3>Is torch's recommended initialization critical?</h3>")
    body.append(
        paragraph(
            "torch.nn.init.calculate_gain gives a gain g for Kaiming/Xavier-style inits "
            "(W ~ g/√fan_in, i.e. C_W = g²; biases usually zero). Beside it: the critical C_W, and "
            "χ_⊥ and the phase at torch's choice.",
            "note",
        )
    )
    body.append(table(compare_gains(), digits=5))

    # measured correlation decay
    settings = _settings(name)
    if not settings:
        body.append(
            paragraph(
                f"No ordered and chaotic settings with a finite K* > 0 were found for {name} near "
                "C_b = 0.3, so no correlation-decay measurement is shown.",
                "note",
            )
        )
        return Section("criticality", "Criticality", "".join(body), summary)
    width = min(max(config.widths), 64 if quick else 128)
    M = min(config.ensemble_size, 150 if quick else 400)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.6))
    axes = np.atleast_1d(axes)
    rows = []
    ell = np.arange(1, _DECAY_DEPTH)
    for k, (phase, C_b, C_W) in enumerate(settings):
        crit = criticality(name, C_b, C_W)
        cos = 0.2 if phase == "ordered" else 0.9
        x = _inputs(cos)
        net = MLP(name, depth=_DECAY_DEPTH, width=width, input_dim=4, C_b=C_b, C_W=C_W)
        K = kernel(net, x).K[:-1]
        c_th = K[:, 0, 1] / np.sqrt(K[:, 0, 0] * K[:, 1, 1])
        c_ms, c_se = _measured_correlation(net, x, M, config.seed + 17 + k, config.device)
        # K + K1/n, the finite-width section's 1/n correction (~10 s here: skipped when quick)
        G = K if quick else metric(net, x).G[:-1]
        c_fw = G[:, 0, 1] / np.sqrt(G[:, 0, 0] * G[:, 1, 1])
        d_th, d_ms = np.abs(c_th - crit.c_star), np.abs(c_ms - crit.c_star)
        ax = axes[k]
        ax.semilogy(ell, d_th, "k-", lw=1.5, label="theory (n = ∞)")
        if not quick:
            ax.semilogy(
                ell, np.abs(c_fw - crit.c_star), "k:", lw=1.5, label=f"theory + 1/n, n = {width}"
            )
        theory_and_measured(ax, ell, None, d_ms, c_se, color="C0", label=f"measured, n = {width}")
        anchor = len(ell) // 2
        ax.semilogy(
            ell,
            d_th[anchor] * np.exp(-(ell - ell[anchor]) / crit.xi_perp),
            "--",
            color="tab:red",
            label=f"e^(−ℓ/ξ_⊥), ξ_⊥ = {crit.xi_perp:.2f}",
        )
        ax.set_title(f"{phase}: C_b = {C_b:.2f}, C_W = {C_W:.2f}, c* = {crit.c_star:.3f}")
        ax.set_xlabel("layer ℓ")
        ax.set_ylabel("|c^(ℓ) − c*|")
        ax.legend(fontsize=8)
        # the finite-width correction of a correlation grows like (ℓ/n)·q off criticality too,
        # q = 1 − c (ordered) or c (chaotic): the scale of the "correlation" rule
        q = 1 - c_th if phase == "ordered" else c_th
        corr = comparison_frame("correlation", ell, c_th, c_ms, c_se, scale=q)
        agree = bool(agreement(corr, width).all())
        rows.append(
            {
                "phase": phase,
                "C_b": C_b,
                "C_W": C_W,
                "K*": crit.K_star,
                "χ_⊥(K*)": crit.chi_perp,
                "c*": crit.c_star,
                "ξ_⊥": crit.xi_perp,
                "max |z| (c)": float(corr.z_score.abs().max()),
                "max |z| vs K + K1/n": float(np.max(np.abs(c_ms - c_fw) / c_se)),
                "within bound": agree,
            }
        )
        summary.append(
            summary_row(
                f"correlation decay, {phase}, n={width}, {M} nets",
                f"ξ_⊥ = {crit.xi_perp:.2f}, max |z| = {rows[-1]['max |z| (c)']:.2f}",
                agree,
            )
        )
    fig.tight_layout()
    body.append("<h3>Correlation of two inputs: ordered and chaotic</h3>")
    body.append(
        figure(
            fig,
            "Distance of the correlation c^(ℓ) of two inputs from its fixed point c* (1 in the "
            "ordered phase), per layer of depth-31 networks. Line: infinite-width recursion; "
            "dotted: with its 1/n correction (the metric K + K1/n of the finite-width section); "
            "points: real networks (one-standard-error bars); dashed: the depth scale ξ_⊥.",
        )
    )
    body.append(
        paragraph(
            "within bound: |measured − theory| ≤ 4·error + 3(ℓ/n)·|q| at every layer (q = 1 − c "
            "ordered, c chaotic; pdlt.agreement): the statistical error plus the size of the "
            "finite-width correction, which grows like ℓ/n (the infinite-width theory is drawn).",
            "note",
        )
    )
    body.append(table(pd.DataFrame(rows), digits=4))
    return Section("criticality", "Criticality", "".join(body), summary)
