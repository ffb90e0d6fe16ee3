"""Measurement: ν(γ), the growth rate of V/K² at residual ReLU criticality — the book's B.29,
pdlt's path recursion and Monte Carlo on real torch networks (issue 14).

For each γ: critical ReLU (C_W = 2(1 − γ²), C_b = 0), one input, depth 10, widths 128, 256 and
512; V/K² per layer measured with pdlt.measure and extrapolated to n → ∞ by a weighted fit
V(n) = V_∞ + b/n over the three widths (at γ ≤ 0.5 and n = 128, νℓ/n ≈ 0.5: the 1/n² terms are
large there, hence the wide widths); the slope of V_∞ over layers 4…10 (weighted least squares)
against the recursion's slope over the same layers, the recursion's deep slope ν(γ)
(pdlt.critical_point) and the book's (1 − γ²)(5 − γ²). Prints a table and writes
results/residual_nu.json.

Run: OMP_NUM_THREADS=1 python benchmarks/residual_nu.py   (~5 min on one core)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import pdlt

GAMMAS = (0.25, 0.5, 0.75, 0.9)
DEPTH, WIDTHS, FIT = 10, (128, 256, 512), slice(3, 10)
NETWORKS = {128: 3000, 256: 2000, 512: 1000}


def _slope(layers: np.ndarray, y: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    A = np.stack([np.ones_like(layers), layers], 1) / err[:, None]
    cov = np.linalg.inv(A.T @ A)
    coef = cov @ A.T @ (y / err)
    return float(coef[1]), float(np.sqrt(cov[1, 1]))


def _extrapolate(meas: dict) -> tuple[np.ndarray, np.ndarray]:
    """V_∞ and its error per layer from a weighted fit V(n) = V_∞ + b/n over the widths."""
    inv = 1.0 / np.array(WIDTHS, dtype=float)
    v = np.array([meas[n][0] for n in WIDTHS])
    e = np.array([meas[n][1] for n in WIDTHS])
    out, err = np.zeros(DEPTH), np.zeros(DEPTH)
    for ell in range(1, DEPTH):
        A = np.stack([np.ones_like(inv), inv], 1) / e[:, ell, None]
        cov = np.linalg.inv(A.T @ A)
        out[ell] = (cov @ A.T @ (v[:, ell] / e[:, ell]))[0]
        err[ell] = np.sqrt(cov[0, 0])
    return out, err


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    x = np.array([[np.sqrt(2.0)]])
    rows = []
    for g in GAMMAS:
        t0 = time.perf_counter()
        cp = pdlt.critical_point("relu", skip=g)
        meas = {}
        for n in WIDTHS:
            net = pdlt.MLP(
                "relu", depth=DEPTH, width=n, input_dim=1, output_dim=n, C_W=cp.C_W, skip=g
            )
            ms = pdlt.measure(net, x, n_networks=NETWORKS[n], seed=1000 + n, statistics=("V",))
            th = pdlt.four_point_vertex(net, x)
            K2 = th.K[:, 0, 0] ** 2
            meas[n] = (ms.V[:, 0, 0, 0, 0] / K2, ms.V_err[:, 0, 0, 0, 0] / K2)
        v_inf, e_inf = _extrapolate(meas)
        layers = np.arange(1, DEPTH + 1, dtype=float)
        mc, mc_err = _slope(layers[FIT], v_inf[FIT], e_inf[FIT])
        local = float(np.polyfit(layers[FIT], th.normalized[FIT, 0], 1)[0])
        rows.append(
            {
                "gamma": g,
                "nu_book": (1 - g * g) * (5 - g * g),
                "nu_recursion_deep": cp.vertex_growth,
                "slope_recursion_layers_4_10": local,
                "slope_mc_layers_4_10": mc,
                "slope_mc_error": mc_err,
                "V_over_K2_last_layer": {
                    "recursion": float(th.normalized[-1, 0]),
                    "book": (1 - g * g) * (5 - g * g) * (DEPTH - 1),
                    "mc_extrapolated": float(v_inf[-1]),
                    "mc_error": float(e_inf[-1]),
                    **{f"mc_n{n}": float(meas[n][0][-1]) for n in WIDTHS},
                },
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        r = rows[-1]
        print(
            f"γ = {g:4.2f}: ν book {r['nu_book']:.3f} | recursion deep {r['nu_recursion_deep']:.3f}, "
            f"slope ℓ=4…10 {local:.3f} | MC slope {mc:.3f} ± {mc_err:.3f} "
            f"| V/K²(10): rec {r['V_over_K2_last_layer']['recursion']:.2f}, "
            f"book {r['V_over_K2_last_layer']['book']:.2f}, MC {v_inf[-1]:.2f} ± {e_inf[-1]:.2f} "
            f"({r['seconds']} s)",
            flush=True,
        )
    out = Path(__file__).parent / "results" / "residual_nu.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
