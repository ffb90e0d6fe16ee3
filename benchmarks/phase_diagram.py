"""Time the default trainability phase diagram (``pdlt phase-diagram`` defaults) on this machine.

Prints a table and writes benchmarks/results/phase_diagram.json. The load average is recorded
because on a shared machine it dominates the wall time.

    python benchmarks/phase_diagram.py [--workers 2] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from pdlt.experiment.trainability import DEFAULT_C_W, DEFAULT_DEPTHS, trainability

    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", type=Path, default=None)
    args = ap.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="pdlt-pd-bench-"))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    res = trainability(store=store, scheduler="processes", n_workers=args.workers, progress=False)
    seconds = time.perf_counter() - t0
    row = {
        "cells": int(len(res.cells)),
        "C_W": list(DEFAULT_C_W),
        "depths": list(DEFAULT_DEPTHS),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
        "seconds": round(seconds, 1),
        "cell_seconds_sum": round(float(res.cells["seconds"].sum()), 1),
        # CPU time of all cells / workers: the wall time the grid needs on idle cores
        "cpu_seconds_per_worker": round(float(res.cells["cpu_seconds"].sum()) / args.workers, 1),
        "agreement_with_6_xi": round(res.agreement(), 3),
        "critical_C_W": res.theory["critical_C_W"],
        "max_accuracy": float(np.nanmax(res.accuracy)),
    }
    for k, v in row.items():
        if not isinstance(v, list):
            print(f"{k:>24}  {v}")
    out = Path(__file__).parent / "results" / "phase_diagram.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
