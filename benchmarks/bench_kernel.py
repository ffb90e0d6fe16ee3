"""Benchmark: the infinite-width kernel and ensemble sampling (issue: foundation).

Prints a table and writes benchmarks/results/kernel.json. Each timing case runs in a fresh
subprocess so that its peak resident memory (ru_maxrss, minus the interpreter + imports
baseline) is its own. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/bench_kernel.py [--quick]

Measured:
1. ``pdlt.kernel`` time and peak memory, N = 100 and 1000 inputs, depth 10: relu (closed form),
   tanh (Mehler quadrature) and a user callable (autograd derivatives, quadrature).
2. Theory vs Monte Carlo for equal precision: the networks needed to bring the standard error of
   K^{(L)}_{αα} down to the theory's own accuracy would be astronomical, so we quote the MC time
   for a 1e-3 relative standard error (already coarser than theory by 7 orders).
3. Ensemble sampling throughput (pdlt.measure) vs a bare loop of torch.randn + bmm with the same
   shapes (the least any sampler must do).
4. neural-tangents' analytic kernel (stax.Erf/Relu, N = 1000, depth 10) if it is importable from
   the interpreter given by --nt-python.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "kernel.json"

_CASE = r"""
import resource, sys, time, json
import numpy as np, torch
torch.set_num_threads(2)
import pdlt
act_name, N, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
acts = {"relu": ("relu", 2.0), "tanh": ("tanh", 1.0),
        "user": (lambda z: torch.tanh(z) + 0.1 * torch.sin(3 * z), 1.0)}
act, cw = acts[act_name]
x = np.random.default_rng(0).normal(size=(N, 10))
net = pdlt.MLP(act, depth=depth, width=512, input_dim=10, C_W=cw, C_b=0.05)
pdlt.kernel(net, x[:4])  # warm caches (Gauss-Legendre rules)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); c0 = time.process_time()
K = pdlt.kernel(net, x).K
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": max(peak - base, 0) / 1024,
                  "finite": bool(np.isfinite(K).all())}))
"""

_NT = r"""
import time, json, sys
import numpy as np
from neural_tangents import stax
N, depth, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import jax.numpy as jnp
if kind == "relu":
    act = stax.Relu()
elif kind == "erf":
    act = stax.Erf()
else:  # tanh has no closed form in neural-tangents: its Gauss-Hermite numerical route
    act = stax.ElementwiseNumerical(jnp.tanh, deg=25)
layers = []
for _ in range(depth - 1):
    layers += [stax.Dense(512, W_std=2.0 ** 0.5 if kind == "relu" else 1.0, b_std=0.05 ** 0.5), act]
import resource
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
layers += [stax.Dense(1)]
_, _, kernel_fn = stax.serial(*layers)
x = np.random.default_rng(0).normal(size=(N, 10))
kernel_fn(x, None, "nngp").block_until_ready()  # compile for this shape
t0 = time.perf_counter(); import time as _t; c0 = _t.process_time()
kernel_fn(x, None, "nngp").block_until_ready()
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": _t.process_time() - c0,
                  "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def run_case(python: str, code: str, *args: object) -> dict:
    out = subprocess.run(
        [python, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_theory(quick: bool) -> list[dict]:
    rows = []
    for N in (100,) if quick else (100, 1000):
        for act in ("relu", "tanh", "user"):
            r = run_case(sys.executable, _CASE, act, N, 10)
            rows.append({"what": "pdlt.kernel", "activation": act, "N": N, "depth": 10, **r})
    return rows


def bench_theory_vs_mc() -> dict:
    import numpy as np
    import torch

    import pdlt

    torch.set_num_threads(2)
    net = pdlt.MLP("tanh", depth=10, width=256, input_dim=3)
    x = np.eye(3) * math.sqrt(3)
    t0 = time.perf_counter()
    th = pdlt.kernel(net, x)
    t_theory = time.perf_counter() - t0
    M = 400
    t0 = time.perf_counter()
    ms = pdlt.measure(net, x, n_networks=M, seed=0, progress=False)
    t_mc = time.perf_counter() - t0
    rel_err = float(ms.K_err[-1, 0, 0] / th.K[-1, 0, 0])
    target = 1e-3
    M_needed = M * (rel_err / target) ** 2
    t_needed = t_mc * M_needed / M
    return {
        "what": "theory vs MC, tanh depth 10 width 256, 3 inputs",
        "theory_s": t_theory,
        "mc_s_per_network": t_mc / M,
        "mc_rel_stderr_per_sqrt_network": rel_err * math.sqrt(M),
        "networks_for_1e-3": M_needed,
        "mc_s_for_1e-3": t_needed,
        "ratio_mc_over_theory": t_needed / t_theory,
    }


def bench_sampling(quick: bool) -> list[dict]:
    import torch

    import pdlt
    from pdlt.experiment.ensemble import forward_chunks

    torch.set_num_threads(2)
    rows = []
    for width in (128,) if quick else (128, 512):
        net = pdlt.MLP("tanh", depth=10, width=width, input_dim=16)
        x = torch.randn(32, 16, dtype=torch.float64)
        M = 256 if width == 128 else 64
        pdlt.measure(net, x, n_networks=16, seed=0, progress=False)  # warm-up
        t0 = time.perf_counter()
        pdlt.measure(net, x, n_networks=M, seed=0, progress=False)
        t_measure = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in forward_chunks(net, x, M, 0):
            pass
        t_forward = time.perf_counter() - t0
        # the bare loop: the same normals and batched matmuls, nothing else
        B = next(forward_chunks(net, x, M, 0)).size
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for start in range(0, M, B):
            b = min(B, M - start)
            h = x.float().T.expand(b, -1, -1)
            for n_in, n_out in zip(net.widths[:-1], net.widths[1:], strict=True):
                W = torch.randn(b, n_out, n_in, generator=g) * (1.0 / n_in) ** 0.5
                bias = torch.randn(b, n_out, 1, generator=g)
                h = torch.tanh(torch.baddbmm(bias, W, h))
        t_bare = time.perf_counter() - t0
        rows.append(
            {
                "what": "ensemble sampling",
                "width": width,
                "depth": 10,
                "N": 32,
                "networks": M,
                "bare_randn_bmm_s": t_bare,
                "forward_chunks_s": t_forward,
                "measure_K_s": t_measure,
                "forward_vs_bare": t_bare / t_forward,
                "measure_vs_bare": t_bare / t_measure,
                "networks_per_s": M / t_measure,
            }
        )
    return rows


def bench_nt(python: str | None, quick: bool) -> list[dict]:
    if not python:
        return [{"what": "neural-tangents", "error": "not run (pass --nt-python)"}]
    rows = []
    cases = (("relu", 1000), ("erf", 1000), ("tanh_numerical", 100), ("tanh_numerical", 300))
    for kind, N in cases[:3] if quick else cases:
        N = 100 if quick else N
        r = run_case(python, _NT, N, 10, kind)
        rows.append({"what": "neural-tangents nngp", "activation": kind, "N": N, **r})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nt-python", default=None, help="python with neural-tangents installed")
    args = parser.parse_args()
    theory = bench_theory(args.quick)
    ratio = bench_theory_vs_mc()
    sampling = bench_sampling(args.quick)
    nt = bench_nt(args.nt_python, args.quick)
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "theory": theory,
        "theory_vs_mc": ratio,
        "sampling": sampling,
        "neural_tangents": nt,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"{'case':<34}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}")
    for r in theory:
        name = f"kernel {r['activation']} N={r['N']} L={r['depth']}"
        if "error" in r:
            print(f"{name:<34} error: {r['error']}")
        else:
            print(f"{name:<34}{r['wall_s']:9.3f}{r['cpu_s']:9.3f}{r['peak_mb']:9.0f}")
    for r in nt:
        if "error" in r:
            print(f"{'neural-tangents':<34} {r['error']}")
        else:
            print(
                f"{'nt ' + r['activation'] + ' N=' + str(r['N']):<34}{r['wall_s']:9.3f}{r['cpu_s']:9.3f}"
            )
    print(
        f"\ntheory vs MC (tanh, L=10, n=256): theory {ratio['theory_s'] * 1e3:.1f} ms; MC needs "
        f"{ratio['networks_for_1e-3']:.0f} networks = {ratio['mc_s_for_1e-3']:.0f} s for a 1e-3 "
        f"relative error: ratio {ratio['ratio_mc_over_theory']:.0f}x"
    )
    for r in sampling:
        print(
            f"sampling width {r['width']}: {r['networks_per_s']:.0f} networks/s; measure at "
            f"{100 * r['measure_vs_bare']:.0f}% and forward at {100 * r['forward_vs_bare']:.0f}% "
            "of the bare randn+bmm loop"
        )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
