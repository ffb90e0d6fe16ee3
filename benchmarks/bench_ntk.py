"""Benchmark: empirical NTKs of real networks, and the NTK theory vs Monte Carlo (issue 6).

Prints a table and writes benchmarks/results/ntk.json. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/bench_ntk.py [--quick] [--nt-python PATH]

Measured:
1. Empirical NTK throughput (networks × inputs per second) of the output NTK, width 512,
   depths 3, 5, 10, 100 inputs, float32, two threads: pdlt's structured method (forward
   activations × backpropagated signals, batched over networks; the forward pass is included)
   against the parameter-Jacobian NTK of ``torch.func.jacrev`` on the same networks (its
   forward and Jacobian, then J Λ Jᵀ), and their agreement.
2. Theory cost of the fluctuations (``pdlt.ntk_fluctuations``, single input, tanh, depth 10)
   against the Monte Carlo cost of measuring A^{(L)} and B^{(L)} to 1 % relative standard error
   at width 256 (time per network × networks needed, from a pilot ensemble). The MC estimate
   also carries an O(L/n) bias that no ensemble size removes.
3. neural-tangents' empirical NTK (``nt.empirical_ntk_fn``, jitted) and analytic NTK (``stax``
   with Erf, jitted; compile time excluded) on the same shapes, if importable from the
   interpreter given by --nt-python. A working separate environment (neural-tangents 0.6.5 needs
   an older jax than pip picks by default):

       python3 -m venv ntenv && ntenv/bin/pip install neural-tangents==0.6.5 \
           "jax[cpu]==0.4.30" tf2jax==0.3.6
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

import numpy as np
import torch
from torch.func import functional_call, jacrev

import pdlt
from pdlt.experiment.ensemble import forward_chunks
from pdlt.experiment.ntk import chunk_ntk
from pdlt.network import validate_inputs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ntk.json"
WIDTH, N_INPUTS = 512, 100


def _net(depth: int) -> pdlt.MLP:
    return pdlt.MLP("tanh", depth, WIDTH, 10, C_W=1.0, C_b=0.05, lambda_b=0.5, lambda_W=1.0)


def _structured(net: pdlt.MLP, chunk) -> torch.Tensor:
    """Forward pass of the chunk's weights, then the structured NTK (as a user would run it)."""
    z, h = [], chunk.x
    for ell in range(net.depth):
        zz = torch.baddbmm(chunk.b[ell], chunk.W[ell], h.expand(chunk.size, *h.shape[-2:]))
        z.append(zz)
        h = net.activation(zz)
    replay = type(chunk)(z=tuple(z), W=chunk.W, b=chunk.b, x=chunk.x, start=0)
    return chunk_ntk(net, replay)


def _jacobian_ntk(net: pdlt.MLP, chunk, m: int, x: torch.Tensor) -> torch.Tensor:
    module = net.torch_module()
    names = [k for k, v in module.named_children() if isinstance(v, torch.nn.Linear)]
    params = {}
    for ell, key in enumerate(names):
        params[f"{key}.weight"] = chunk.W[ell][m]
        params[f"{key}.bias"] = chunk.b[ell][m][:, 0]

    def f(p):
        return functional_call(module, p, (x,))  # (N, n_L)

    J = jacrev(f)(params)
    H = 0
    for key, jac in J.items():
        ell = names.index(key.split(".")[0])
        flat = jac.reshape(x.shape[0] * net.widths[-1], -1)
        lam = net.lambda_b[ell] if key.endswith("bias") else net.lambda_W[ell] / net.widths[ell]
        H = H + lam * flat @ flat.T
    return H


def bench_empirical(depths, n_struct: int, n_func: int) -> list[dict]:
    rows = []
    x = np.random.default_rng(0).normal(size=(N_INPUTS, 10))
    for depth in depths:
        net = _net(depth)
        xt = validate_inputs(net, x)
        chunk = next(forward_chunks(net, xt, n_struct, seed=1, max_memory=2**31))
        _structured(net, chunk)  # warm up
        t0 = time.perf_counter()
        H = _structured(net, chunk)
        t_struct = time.perf_counter() - t0
        xf = xt.float()
        t0 = time.perf_counter()
        Hf = [_jacobian_ntk(net, chunk, m, xf) for m in range(n_func)]
        t_func = time.perf_counter() - t0
        dev = max(
            float((H[m, 0, 0] - Hf[m]).abs().max() / Hf[m].abs().max()) for m in range(n_func)
        )
        rows.append(
            {
                "depth": depth,
                "width": WIDTH,
                "inputs": N_INPUTS,
                "structured_networks": n_struct,
                "structured_s": t_struct,
                "structured_net_inputs_per_s": n_struct * N_INPUTS / t_struct,
                "torch_func_networks": n_func,
                "torch_func_s": t_func,
                "torch_func_net_inputs_per_s": n_func * N_INPUTS / t_func,
                "speedup": (n_struct / t_struct) / (n_func / t_func),
                "max_rel_deviation_float32": dev,
            }
        )
    return rows


def bench_theory_vs_mc(quick: bool) -> dict:
    x = np.ones((1, 4))
    depth, width = 10, 256
    net = pdlt.MLP("tanh", depth, width, 4, output_dim=4, C_W=1.0)
    pdlt.ntk_fluctuations(net.with_(depth=2), x)  # warm quadrature caches
    t0 = time.perf_counter()
    fl = pdlt.ntk_fluctuations(net, x)
    t_theory = time.perf_counter() - t0
    M = 100 if quick else 400
    t0 = time.perf_counter()
    ms = pdlt.measure(net, x, M, seed=0, statistics=("ntk_fluctuations",))
    t_mc = time.perf_counter() - t0
    out = {"depth": depth, "width": width, "theory_s": t_theory, "pilot_networks": M}
    for s in ("A", "B"):
        th = float(getattr(fl, s)[-1, 0, 0, 0, 0])
        val = float(getattr(ms, s)[-1, 0, 0, 0, 0])
        rel_se = float(getattr(ms, s + "_err")[-1, 0, 0, 0, 0]) / abs(th)
        need = M * (rel_se / 0.01) ** 2
        out[s] = {
            "theory": th,
            "measured_pilot": val,
            "pilot_relative_se": rel_se,
            "networks_for_1pct": math.ceil(need),
            "mc_seconds_for_1pct": t_mc / M * need,
        }
    return out


_NT = r"""
import time, json, sys
import numpy as np
import jax, jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax
depth, width, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
layers = []
for _ in range(depth - 1):
    layers += [stax.Dense(width, W_std=1.0, b_std=0.05**0.5, parameterization="ntk"), stax.Erf()]
layers += [stax.Dense(1, W_std=1.0, b_std=0.05**0.5, parameterization="ntk")]
init_fn, apply_fn, kernel_fn = stax.serial(*layers)
x = jnp.asarray(np.random.default_rng(0).normal(size=(N, 10)), dtype=jnp.float32)
_, params = init_fn(jax.random.PRNGKey(0), x.shape)
ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0))
ntk_fn(x, None, params).block_until_ready()
t0 = time.perf_counter(); ntk_fn(x, None, params).block_until_ready(); t_emp = time.perf_counter() - t0
kfn = jax.jit(kernel_fn, static_argnames="get")
kfn(x, None, "ntk").block_until_ready()
t0 = time.perf_counter(); kfn(x, None, "ntk").block_until_ready(); t_an = time.perf_counter() - t0
print(json.dumps({"empirical_s_per_network": t_emp, "analytic_erf_s": t_an}))
"""


def bench_neural_tangents(nt_python: str | None, depths) -> list[dict]:
    if not nt_python:
        return [{"error": "not run (pass --nt-python)"}]
    rows = []
    for depth in depths:
        try:
            out = subprocess.run(
                [nt_python, "-c", _NT, str(depth), str(WIDTH), str(N_INPUTS)],
                capture_output=True,
                text=True,
                timeout=600,
                env={"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "2"},
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as exc:  # report, don't crash the benchmark
            r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        # pdlt's analytic NTK on the same shapes (erf: closed forms)
        net = pdlt.MLP("erf", depth, WIDTH, 10, C_W=1.0, C_b=0.05)
        x = np.random.default_rng(0).normal(size=(N_INPUTS, 10))
        pdlt.ntk(net, x)  # warm up (quadrature rules, closed-form dispatch)
        t0 = time.perf_counter()
        pdlt.ntk(net, x)
        r["pdlt_analytic_erf_s"] = time.perf_counter() - t0
        rows.append({"depth": depth, **r})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer networks and depths")
    parser.add_argument("--nt-python", default=None, help="python with neural-tangents installed")
    args = parser.parse_args()
    torch.set_num_threads(2)
    depths = (3, 5) if args.quick else (3, 5, 10)
    emp = bench_empirical(depths, n_struct=4 if args.quick else 16, n_func=1 if args.quick else 2)
    tvm = bench_theory_vs_mc(args.quick)
    nt = bench_neural_tangents(args.nt_python, depths)
    for r in nt:  # pdlt's structured empirical NTK per network, same shapes (tanh vs nt's erf)
        match = [e for e in emp if e["depth"] == r.get("depth")]
        if match:
            r["pdlt_structured_s_per_network"] = (
                match[0]["structured_s"] / match[0]["structured_networks"]
            )
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "empirical_ntk": emp,
        "theory_vs_mc": tvm,
        "neural_tangents": nt,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"Empirical NTK, width {WIDTH}, {N_INPUTS} inputs, float32 (networks × inputs / s)")
    print(f"{'depth':>5} {'structured':>12} {'torch.func':>12} {'speedup':>8} {'max rel dev':>12}")
    for r in emp:
        print(
            f"{r['depth']:>5} {r['structured_net_inputs_per_s']:>12.1f} "
            f"{r['torch_func_net_inputs_per_s']:>12.1f} {r['speedup']:>8.1f} "
            f"{r['max_rel_deviation_float32']:>12.1e}"
        )
    print(f"\nTheory vs Monte Carlo, tanh depth {tvm['depth']}, width {tvm['width']}:")
    print(f"  ntk_fluctuations (all layers, D F A B V): {tvm['theory_s']:.3f} s")
    for s in ("A", "B"):
        r = tvm[s]
        print(
            f"  {s}^(L): theory {r['theory']:.4g}, pilot MC {r['measured_pilot']:.4g} "
            f"(rel. SE {r['pilot_relative_se']:.3f}); 1% SE needs {r['networks_for_1pct']} "
            f"networks ≈ {r['mc_seconds_for_1pct']:.0f} s"
        )
    print("\nneural-tangents (s per network for the empirical NTK, s per call for the analytic):")
    for r in nt:
        if "error" in r:
            print(f"  {r}")
            continue
        print(
            f"  depth {r['depth']}: empirical nt {r['empirical_s_per_network']:.3f} vs pdlt "
            f"{r['pdlt_structured_s_per_network']:.3f}; analytic (erf) nt "
            f"{r['analytic_erf_s']:.4f} vs pdlt {r['pdlt_analytic_erf_s']:.4f}"
        )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
