"""Benchmark: the four-point vertex V^{(ℓ)} (issue 4).

Prints a table and writes benchmarks/results/vertex.json. Each case runs in a fresh subprocess so
that its peak resident memory (ru_maxrss minus the post-import baseline) is its own. Run on an
otherwise idle machine:

    .venv/bin/python benchmarks/bench_vertex.py [--quick] [--threads 1] [--partial-for relu]

Measured:
1. ``pdlt.four_point_vertex`` wall time and peak memory for N = 1, 4, 16 inputs, depth 50, for
   linear (Wick: closed form throughout), relu (truncated moments and orthant probabilities,
   :mod:`pdlt.gaussian.orthant`: no quadrature) and tanh (nested cubature for 3–4 distinct
   inputs). By default every case is timed at the full depth; ``--partial-for ACT`` times only
   the first ``--n16-depth`` layers of N = 16 for the named activations and extrapolates from
   the per-layer cost of the last timed layers (marked "extrapolated"). The load average
   (1 min) before and after each case is recorded: on a shared machine it says how much of the
   wall time was waiting.
2. Theory vs Monte Carlo for equal precision: single input, tanh at criticality, depth 10, width
   64: the networks M needed for a 1 % relative standard error on V^{(10)} (M ≈ Var of the sample
   variance / (0.01·V)², measured from a pilot ensemble) times the measured per-network cost,
   against the theory's time (which is accurate to ~1e-8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "vertex.json"

_CASE = r"""
import resource, sys, time, json
import numpy as np, torch
act_name, N, depth, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
import pdlt
acts = {"linear": ("linear", 1.0), "relu": ("relu", 2.0), "tanh": ("tanh", 1.0)}
act, cw = acts[act_name]
x = np.random.default_rng(0).normal(size=(N, 8))
warm = pdlt.MLP(act, depth=2, width=64, input_dim=8, C_W=cw)
pdlt.four_point_vertex(warm, x[:2])  # warm caches (quadrature rules)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
net = pdlt.MLP(act, depth=depth, width=64, input_dim=8, C_W=cw)
t0, c0 = time.perf_counter(), time.process_time()
fw = pdlt.four_point_vertex(net, x)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
assert np.isfinite(fw.V).all()
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mib": peak, "V_last": float(fw.V[-1, 0, 0, 0, 0])}))
"""

_MC = r"""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
import pdlt
net = pdlt.MLP("tanh", depth=10, width=64, input_dim=1)
x = [[1.0]]
t0 = time.perf_counter(); fw = pdlt.four_point_vertex(net, x); theory = time.perf_counter() - t0
M = int(sys.argv[1])
t0 = time.perf_counter()
ms = pdlt.measure(net, x, n_networks=M, seed=0, statistics=("V",))
mc = time.perf_counter() - t0
V, err = ms.V[-1, 0, 0, 0, 0], ms.V_err[-1, 0, 0, 0, 0]
need = M * (err / (0.01 * V)) ** 2
print(json.dumps({"theory_s": theory, "mc_s_pilot": mc, "M_pilot": M, "V_theory": float(fw.V[-1, 0, 0, 0, 0]),
                  "V_measured": float(V), "V_err": float(err), "M_for_1pct": need,
                  "mc_s_for_1pct": mc / M * need}))
"""


def run(code: str, *args: object) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="depth 10 instead of 50")
    ap.add_argument(
        "--partial-for",
        nargs="*",
        default=[],
        help="activations whose N = 16 case is extrapolated from --n16-depth layers",
    )
    ap.add_argument("--n16-depth", type=int, default=4)
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (use 1 on a loaded machine: 2 threads on busy cores spin-wait)",
    )
    args = ap.parse_args()
    depth = 10 if args.quick else 50
    rows = []
    for act in ("linear", "relu", "tanh"):
        for N in (1, 4, 16):
            partial = N == 16 and act in args.partial_for
            load_before = os.getloadavg()[0]
            if partial:
                # per-layer cost from the difference of two short runs (first-layer cost apart)
                d1, d2 = max(2, args.n16_depth // 2), args.n16_depth
                r1, r2 = run(_CASE, act, N, d1, args.threads), run(_CASE, act, N, d2, args.threads)
                per_layer = max(r2["wall_s"] - r1["wall_s"], 0.0) / (d2 - d1)
                wall = r2["wall_s"] + per_layer * (depth - d2)
                r = dict(r2, wall_s=wall, cpu_s=None, timed_depth=d2, per_layer_s=per_layer)
                r["extrapolated"] = True
            else:
                r = dict(
                    run(_CASE, act, N, depth, args.threads), timed_depth=depth, extrapolated=False
                )
            r.update(
                activation=act,
                N=N,
                depth=depth,
                load_before=load_before,
                load_after=os.getloadavg()[0],
            )
            rows.append(r)
            flag = " (extrapolated)" if r["extrapolated"] else ""
            print(
                f"{act:7s} N={N:3d} depth={depth}: {r['wall_s']:9.2f} s{flag} "
                f"(cpu {r['cpu_s'] or float('nan'):.2f} s), peak "
                f"{r['peak_mib']:7.1f} MiB  (load {load_before:.1f} → {r['load_after']:.1f})",
                flush=True,
            )
    mc = run(_MC, 2000 if args.quick else 10000, args.threads)
    ratio = mc["mc_s_for_1pct"] / mc["theory_s"]
    print(
        f"\ntanh depth 10, n = 64, single input: theory {mc['theory_s']:.2f} s (V = {mc['V_theory']:.5f}); "
        f"MC {mc['M_pilot']} nets: V = {mc['V_measured']:.5f} ± {mc['V_err']:.5f} in {mc['mc_s_pilot']:.2f} s; "
        f"1% precision needs ≈{mc['M_for_1pct']:.0f} nets ≈ {mc['mc_s_for_1pct']:.1f} s → MC/theory = {ratio:.1f}×"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "vertex": rows,
                "theory_vs_mc": dict(mc, ratio=ratio),
                "target": "N = 16, depth 50 in ≤ 10 s (issue 11: 1 thread)",
                "load_average_end": os.getloadavg(),
                "cpu_count": os.cpu_count(),
                "threads": args.threads,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
