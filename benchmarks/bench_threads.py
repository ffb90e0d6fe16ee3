"""Threads on a loaded machine: one vs two torch intra-op threads vs pdlt's own choice (issue 11).

pdlt's hot paths, each in its own process, with one busy background process running (another
Python doing float32 matmuls on one thread: the "loaded" 2-core machine the issue describes):

* ``kernel``: ``pdlt.ntk(net, x, layers="last")``, relu, N = 1000, depth 10 (the layer walk:
  elementwise passes over N² entries);
* ``kernel_small``: the same at N = 100 (passes too short to amortise a second thread);
* ``empirical_ntk``: ``pdlt.empirical_ntk`` of one network, width 512, 100 inputs, depth 10;
* ``measure``: ``pdlt.measure``, 256 networks, width 128, 8 inputs, depth 10, ``("K",)``.

Modes: ``1`` and ``2`` set ``torch.set_num_threads`` and ``PDLT_NUM_THREADS`` to that number
(and OMP/MKL); ``pdlt`` leaves torch at its default (one thread per core) and
``PDLT_NUM_THREADS`` unset, so the thread count is pdlt's own choice
(:func:`pdlt._threads.threads_for`). Processes are interleaved (mode by mode, round by round);
each reports the median of ``--repeats`` calls, and the table gives the median over rounds.

    .venv/bin/python benchmarks/bench_threads.py [--rounds 5] [--no-load]

Writes benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"
ROOT = Path(__file__).resolve().parents[1]
MODES = ("1", "2", "pdlt")

_CASE = r"""
import json, os, sys, time
import numpy as np, torch
mode, work, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode != "pdlt":
    torch.set_num_threads(int(mode))
import pdlt
rng = np.random.default_rng(0)
if work in ("kernel", "kernel_small"):
    N = 1000 if work == "kernel" else 100
    x = rng.normal(size=(N, 10))
    net = pdlt.MLP("relu", depth=10, width=512, input_dim=10, C_W=2.0, C_b=0.05)
    run = lambda: pdlt.ntk(net, x, layers="last")
elif work == "empirical_ntk":
    x = rng.normal(size=(100, 10))
    net = pdlt.MLP("tanh", depth=10, width=512, input_dim=10, C_W=1.0, C_b=0.05)
    run = lambda: pdlt.empirical_ntk(net, x, n_networks=1, seed=0)
else:
    x = rng.normal(size=(8, 10))
    net = pdlt.MLP("tanh", depth=10, width=128, input_dim=10, C_W=1.0, C_b=0.05)
    run = lambda: pdlt.measure(net, x, n_networks=256, seed=0, progress=False)
run()
ts = []
for _ in range(reps):
    t0 = time.perf_counter(); run(); ts.append(time.perf_counter() - t0)
print(json.dumps({"s": sorted(ts)[len(ts) // 2], "torch_threads": torch.get_num_threads()}))
"""

# one busy core: float32 matmuls on one thread, as another user's job would be
_BURN = (
    "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
    "while True:\n    a = torch.tanh(a @ a * 0.05)\n"
)

WORKS = ("kernel", "kernel_small", "empirical_ntk", "measure")


def _env(mode: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PDLT_NUM_THREADS"):
        env.pop(k, None)
        if mode != "pdlt":
            env[k] = mode
    return env


def _run(mode: str, work: str, reps: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CASE, mode, work, str(reps)],
        capture_output=True,
        text=True,
        env=_env(mode),
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5, help="interleaved processes per mode")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    p.add_argument("--no-load", action="store_true", help="no busy background process")
    p.add_argument("--works", nargs="+", default=list(WORKS), choices=WORKS)
    a = p.parse_args()
    loaded = not a.no_load
    burner = subprocess.Popen([sys.executable, "-c", _BURN]) if loaded else None
    rows = []
    try:
        for work in a.works:
            got: dict[str, list[dict]] = {m: [] for m in MODES}
            for _ in range(a.rounds):
                for mode in MODES:
                    got[mode].append(_run(mode, work, a.repeats))
            row: dict = {"work": work, "loaded": loaded, "load_avg_1min": os.getloadavg()[0]}
            for mode, runs in got.items():
                ok = [r["s"] for r in runs if "s" in r]
                row[f"threads_{mode}_s"] = statistics.median(ok) if ok else None
                if not ok:
                    row[f"threads_{mode}_error"] = runs[0].get("error")
            base = min(v for k, v in row.items() if k.endswith("_s") and v)
            row["pdlt_vs_best"] = row["threads_pdlt_s"] / base if row["threads_pdlt_s"] else None
            rows.append(row)
            print(
                f"{work:14s} 1 thread {row['threads_1_s']:.4f} s   2 threads "
                f"{row['threads_2_s']:.4f} s   pdlt's choice {row['threads_pdlt_s']:.4f} s "
                f"({row['pdlt_vs_best']:.2f}× the best)   load {row['load_avg_1min']:.1f}",
                flush=True,
            )
    finally:
        if burner is not None:
            burner.kill()
    RESULTS.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    keep = [r for r in old["rows"] if r.get("loaded") != loaded or r["work"] not in a.works]
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "rounds": a.rounds,
                "repeats": a.repeats,
                "rows": keep + rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
