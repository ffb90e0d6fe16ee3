"""Benchmark: the O(1/n) trained-ensemble mean, theory (NTKRegressor(finite_width=True)) vs the
Monte Carlo it replaces (issue 12): tanh depth 3, width 64, two training inputs and one test
input, η = 0.02, t = 200 steps. The Monte Carlo needs n_networks ≈ (se·n / target)² networks
for the 1/n coefficient to a given standard error; its time is measured for 1000 antithetic
networks and scaled to the precision of the theory's own neglected order, (ℓ/n)·|correction|.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_trained_mean.py
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import pdlt

X_A = np.array([[1.0, 0.4, -0.3, 0.2], [0.2, -0.9, 0.5, 0.6]])
X_ALL = np.concatenate([X_A, [[0.5, 0.1, 0.3, -0.2]]])
Y = np.array([1.0, -0.8])
WIDTH, STEPS, ETA, M = 64, 200, 0.02, 1000


def main() -> None:
    torch.set_num_threads(1)
    net = pdlt.MLP("tanh", 3, WIDTH, 4, C_W=1.5, C_b=0.2)
    t0 = time.perf_counter()
    reg = pdlt.NTKRegressor(net, learning_rate=ETA, steps=STEPS, finite_width=True)
    m_fw = reg.fit(X_A, Y).predict(X_ALL)
    t_theory = time.perf_counter() - t0
    m_inf = pdlt.NTKRegressor(net, learning_rate=ETA, steps=STEPS).fit(X_A, Y).predict(X_ALL)
    t0 = time.perf_counter()
    ens = pdlt.train_ensemble(
        net,
        X_A,
        Y,
        steps=STEPS,
        learning_rate=ETA,
        n_networks=M,
        seed=0,
        X_test=X_ALL,
        antithetic=True,
        dtype="float64",
    )
    t_mc = time.perf_counter() - t0
    _, err = ens.mean()
    target = 3 / WIDTH * np.abs(m_fw - m_inf)[0]  # the theory's neglected order, input 0
    m_needed = M * (err[0, 0] / target) ** 2
    row = {
        "width": WIDTH,
        "steps": STEPS,
        "theory_seconds": round(t_theory, 3),
        "mc_seconds_per_1000_networks": round(t_mc, 2),
        "mc_networks_for_equal_precision": int(m_needed),
        "mc_seconds_for_equal_precision": round(t_mc * m_needed / M, 1),
        "correction_input0": float((m_fw - m_inf)[0]),
    }
    print(json.dumps(row, indent=1))
    out = Path(__file__).parent / "results" / "trained_mean.json"
    out.write_text(json.dumps({"machine": platform.processor(), **row}, indent=1))


if __name__ == "__main__":
    main()
