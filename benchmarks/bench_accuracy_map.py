"""Benchmark: pdlt.accuracy_map (NNGP) on the issue's grid, 15 × 11 C_W × C_b × depths (5, 20, 50),
1,000 training digits and the remaining 797 as test set (scikit-learn's digits have 1,797).
Target (issue 17): under a minute on 2 cores for ReLU and tanh.

Run: OMP_NUM_THREADS=2 python benchmarks/bench_accuracy_map.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from pdlt.experiment.accuracy_map import accuracy_map


def main() -> None:
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    rows = []
    for act in ("relu", "tanh"):
        t0 = time.perf_counter()
        am = accuracy_map(act)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "activation": act,
                "grid": list(am.accuracy.shape),
                "n_train": am.info["n_train"],
                "n_test": am.info["n_test"],
                "route": am.info["route"],
                "seconds": round(dt, 2),
                "kernel_error": float(am.kernel_error.max()),
                "best_accuracy": float(am.accuracy.max()),
                "degenerate_points": int(am.degenerate.sum()),
            }
        )
    print(f"{'activation':<10} {'grid':<12} {'train/test':<10} {'seconds':>8} {'kernel err':>11}")
    for r in rows:
        grid = "x".join(map(str, r["grid"]))
        tt = f"{r['n_train']}/{r['n_test']}"
        print(
            f"{r['activation']:<10} {grid:<12} {tt:<10} {r['seconds']:>8.1f} "
            f"{r['kernel_error']:>11.1e}"
        )
    out = Path(__file__).parent / "results" / "accuracy_map.json"
    out.write_text(
        json.dumps(
            {
                "threads": threads,
                "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "note": "shared machine: other jobs may have been running",
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
