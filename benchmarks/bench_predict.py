"""Benchmark: NNGPRegressor / NTKRegressor memory and time on 1000 train × 10 000 test inputs.

Random 784-dimensional inputs (MNIST-sized), depth 21, ReLU at criticality (C_W = 2). Each
case runs in a fresh subprocess; peak memory is that process's ru_maxrss (whole process,
interpreter and imports included). Writes benchmarks/results/predict.json.

    .venv/bin/python benchmarks/bench_predict.py [--threads 1]

Before issue 11 predict formed the full (11 000)² kernel of every layer: ~20 GB peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "predict.json"

_CASE = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
import pdlt
kind, act = sys.argv[1], sys.argv[3]
rng = np.random.default_rng(0)
X, y, Xt = rng.normal(size=(1000, 784)), rng.normal(size=1000), rng.normal(size=(10000, 784))
net = pdlt.MLP(act, depth=21, width=1, input_dim=784, C_W=2.0 if act == "relu" else 1.0, C_b=0.1)
model = (pdlt.NNGPRegressor(net, noise=1e-6) if kind == "nngp" else pdlt.NTKRegressor(net))
t0 = time.perf_counter(); model.fit(X, y); t_fit = time.perf_counter() - t0
t0 = time.perf_counter(); mean, std = model.predict(Xt, return_std=True)
t_pred = time.perf_counter() - t0
print(json.dumps({"fit_s": t_fit, "predict_s": t_pred,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "finite": bool(np.isfinite(mean).all() and np.isfinite(std).all())}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for kind in ("nngp", "ntk"):
        for act in ("relu", "gelu"):
            out = subprocess.run(
                [sys.executable, "-c", _CASE, kind, str(args.threads), act],
                capture_output=True,
                text=True,
            )
            r = (
                json.loads(out.stdout.strip().splitlines()[-1])
                if out.returncode == 0
                else {"error": out.stderr.strip().splitlines()[-1]}
            )
            rows.append({"regressor": kind, "activation": act, "threads": args.threads, **r})
            print(rows[-1], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"train": 1000, "test": 10000, "depth": 21, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
