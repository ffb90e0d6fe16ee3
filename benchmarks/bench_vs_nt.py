"""Side by side: pdlt vs neural-tangents 0.6.5, infinite-width NNGP + NTK, depth 10.

Both engines compute the kernel AND the NTK of the output layer, float64, same inputs
(N × 10 standard normals, seed 0), same convention (nt's W_std² = C_W = λ_W, b_std² = C_b =
λ_b; pdlt with λ's set to match). neural-tangents is jitted (compile time excluded,
``block_until_ready``); pdlt is timed for ``pdlt.ntk(net, x, layers="last")`` (what nt
returns) and for all layers (default). Each (engine, case) runs in its own process,
processes interleaved, medians of ``--repeats`` runs per process and over processes.

Threads: ``--threads k`` gives each engine k threads — ``torch.set_num_threads(k)`` and
OMP/MKL/OPENBLAS = k for pdlt, ``XLA_FLAGS`` intra-op parallelism k for neural-tangents — and
leaves ``PDLT_NUM_THREADS`` unset, so pdlt uses them as it chooses (its layer walks stay on one
thread below ~4·10⁶ entries per pass, :mod:`pdlt._threads`), as a user with k cores gets by
default. ``--load`` runs one busy Python process in the background (the "loaded machine").
Each row records the 1-minute load average when it finished.

    .venv/bin/python benchmarks/bench_vs_nt.py --nt-python nt-venv/bin/python

Writes benchmarks/results/vs_nt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "vs_nt.json"
ROOT = Path(__file__).resolve().parents[1]

_PDLT = r"""
import json, sys, time
import numpy as np, torch
import pdlt
act, N, reps, which = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(int(sys.argv[5]))
cw = {"relu": 2.0}.get(act, 1.0)
x = np.random.default_rng(0).normal(size=(N, 10))
net = pdlt.MLP(act, depth=10, width=512, input_dim=10, C_W=cw, C_b=0.05, lambda_W=cw,
               lambda_b=0.05)
layers = "last" if which == "last" else None
pdlt.ntk(net, x[:8], layers=layers)
ts = []
for _ in range(reps):
    t0 = time.perf_counter(); r = pdlt.ntk(net, x, layers=layers); ts.append(time.perf_counter() - t0)
print(json.dumps({"s": sorted(ts)[len(ts) // 2], "Theta": float(r.Theta[-1, 0, 1]),
                  "K": float(r.K[-1, 0, 1])}))
"""

_NT = r"""
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from neural_tangents import stax
act, N, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cw = {"relu": 2.0}.get(act, 1.0)
if act == "relu": a = stax.Relu()
elif act == "erf": a = stax.Erf()
elif act == "gelu": a = stax.Gelu(approximate=False)
elif act == "tanh": a = stax.ElementwiseNumerical(jnp.tanh, deg=25)
elif act == "swish": a = stax.ElementwiseNumerical(jax.nn.silu, deg=25)
layers = []
for _ in range(9):
    layers += [stax.Dense(512, W_std=cw ** 0.5, b_std=0.05 ** 0.5, parameterization="ntk"), a]
layers += [stax.Dense(1, W_std=cw ** 0.5, b_std=0.05 ** 0.5, parameterization="ntk")]
_, _, kfn = stax.serial(*layers)
kfn = jax.jit(kfn, static_argnames="get")
x = np.random.default_rng(0).normal(size=(N, 10))
r = kfn(x, None, ("nngp", "ntk")); r[1].block_until_ready()
ts = []
for _ in range(reps):
    t0 = time.perf_counter(); r = kfn(x, None, ("nngp", "ntk")); r[1].block_until_ready()
    ts.append(time.perf_counter() - t0)
print(json.dumps({"s": sorted(ts)[len(ts) // 2], "Theta": float(r[1][0, 1]), "K": float(r[0][0, 1])}))
"""

_BURN = "import time\nwhile True: sum(i * i for i in range(10000))"


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env.pop("PDLT_NUM_THREADS", None)  # pdlt's own choice within the k threads
    multi = "true" if threads > 1 else "false"
    env["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}"
    )
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


def _run(python: str, code: str, args: list, threads: int) -> dict:
    out = subprocess.run(
        [python, "-c", code, *map(str, args)], capture_output=True, text=True, env=_env(threads)
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nt-python", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5, help="interleaved processes per engine")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--load", action="store_true", help="one busy process in the background")
    p.add_argument("--cases", nargs="+", default=None, help="act:N, e.g. relu:1000")
    a = p.parse_args()
    cases = (
        [c.split(":") for c in a.cases]
        if a.cases
        else [(act, n) for n in (100, 1000) for act in ("relu", "erf", "gelu")]
        + [("tanh", 300), ("swish", 300)]
    )
    burner = subprocess.Popen([sys.executable, "-c", _BURN]) if a.load else None
    rows = []
    try:
        for act, N in cases:
            for th in a.threads:
                got: dict[str, list] = {"nt": [], "pdlt_last": [], "pdlt_all": []}
                for _ in range(a.rounds):  # interleaved
                    got["nt"].append(_run(a.nt_python, _NT, [act, N, a.repeats], th))
                    got["pdlt_last"].append(
                        _run(sys.executable, _PDLT, [act, N, a.repeats, "last", th], th)
                    )
                    got["pdlt_all"].append(
                        _run(sys.executable, _PDLT, [act, N, a.repeats, "all", th], th)
                    )
                row = {"activation": act, "N": int(N), "depth": 10, "threads": th, "loaded": a.load}
                row["load_avg_1min"] = os.getloadavg()[0]
                row["rounds"], row["repeats"] = a.rounds, a.repeats
                for k, v in got.items():
                    ok = [r["s"] for r in v if "s" in r]
                    row[f"{k}_s"] = statistics.median(ok) if ok else None
                    if not ok:
                        row[f"{k}_error"] = v[0].get("error")
                nt0, pd0 = got["nt"][0], got["pdlt_last"][0]
                if "Theta" in nt0 and "Theta" in pd0:
                    row["rel_diff_Theta01"] = abs(nt0["Theta"] - pd0["Theta"]) / abs(pd0["Theta"])
                if row["nt_s"] and row["pdlt_last_s"]:
                    row["speedup_last_vs_nt"] = row["nt_s"] / row["pdlt_last_s"]
                    row["speedup_all_vs_nt"] = row["nt_s"] / row["pdlt_all_s"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if burner is not None:
            burner.kill()
    RESULTS.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    done = {(r["activation"], r["N"], r["threads"], r["loaded"]) for r in rows}
    keep = [
        r
        for r in old["rows"]
        if (r["activation"], r["N"], r["threads"], r.get("loaded")) not in done
    ]
    RESULTS.write_text(json.dumps({"rows": keep + rows}, indent=2))


if __name__ == "__main__":
    main()
