"""Benchmark: the structured empirical dNTK / ddNTKs against nested autograd (issue 12).

Prints a table and writes benchmarks/results/dntk.json. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/bench_dntk.py [--quick]

Measured, width 256, depth 5, output width 2, 2 inputs (K = 4 directions), float64, one thread:
seconds per network for the output-layer dNTK alone and for dNTK + dd_I + dd_II,
* structured: :func:`pdlt.experiment.dntk.chunk_dntk` on a batch of networks (forward pass
  included), i.e. backward signals, forward tangents and per-layer Gram products;
* nested autograd: torch.func on the flattened parameter vector of each network, with the
  learning-rate metric λ: v = Λ∇z (jacrev); Hess z·v_a by forward-over-reverse (jvp of jacrev,
  vmapped over the K directions); D³z[v_a, v_b, ·] by one more jvp (vmapped over K² pairs);
  then dĤ = (Hess z v)·v, dd_I = (D³z v v)·v, dd_II = (Hess z v)·Λ(Hess z v). This is the
  efficient way to get these tensors from autograd (a full Hessian would need P² entries).
and the largest deviation between the two (relative to the largest entry).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import jacrev, jvp, vmap

import pdlt
from pdlt.experiment.dntk import chunk_dntk
from pdlt.experiment.ensemble import Chunk, forward_chunks
from pdlt.network import validate_inputs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dntk.json"
WIDTH, DEPTH, N_INPUTS, OUT = 256, 5, 2, 2


def _net() -> pdlt.MLP:
    return pdlt.MLP(
        "tanh", DEPTH, WIDTH, 10, output_dim=OUT, C_W=1.0, C_b=0.05, lambda_b=0.5, lambda_W=1.0
    )


def _structured(net: pdlt.MLP, chunk: Chunk, ddntk: bool) -> dict[str, torch.Tensor]:
    """Forward pass of the chunk's weights, then the structured tensors (as a user runs it)."""
    z, h = [], chunk.x
    for ell in range(net.depth):
        zz = torch.baddbmm(chunk.b[ell], chunk.W[ell], h.expand(chunk.size, *h.shape[-2:]))
        z.append(zz)
        h = net.activation(zz)
    fresh = Chunk(z=tuple(z), W=chunk.W, b=chunk.b, x=chunk.x, start=chunk.start)
    return chunk_dntk(net, fresh, ddntk=ddntk)


def _autograd(net: pdlt.MLP, chunk: Chunk, m: int, x: torch.Tensor, ddntk: bool) -> dict:
    """Nested autograd on the flattened parameters of network m (directions a = i·N + δ)."""
    params, lam = [], []
    for ell in range(net.depth):
        W, b = chunk.W[ell][m], chunk.b[ell][m][:, 0]
        params += [W, b]
        lam += [
            torch.full((W.numel(),), net.lambda_W[ell] / net.widths[ell], dtype=W.dtype),
            torch.full((b.numel(),), net.lambda_b[ell], dtype=W.dtype),
        ]
    shapes = [p.shape for p in params]
    theta0, lam = torch.cat([p.reshape(-1) for p in params]), torch.cat(lam)

    def f(theta):
        h, off = x.T, 0
        for ell in range(net.depth):
            W = theta[off : off + shapes[2 * ell].numel()].view(shapes[2 * ell])
            off += W.numel()
            b = theta[off : off + shapes[2 * ell + 1].numel()]
            off += b.numel()
            z = W @ h + b[:, None]
            h = net.activation(z)
        return z.reshape(-1)  # a = i·N + δ

    J = jacrev(f)(theta0)
    v = J * lam

    def hvp(t):  # Hess z_a · t for all a: (K, P)
        return jvp(jacrev(f), (theta0,), (t,))[1]

    u = vmap(hvp)(v)  # [b, a, p] = (Hess z_a v_b)_p
    out = {"dH": torch.einsum("bap,cp->abc", u, v)}
    if ddntk:
        K = v.shape[0]

        def d3(s, t):  # D³z_a[s, t, ·] for all a: (K, P)
            return jvp(lambda th: jvp(jacrev(f), (th,), (s,))[1], (theta0,), (t,))[1]

        w = vmap(d3)(v.repeat_interleave(K, 0), v.repeat(K, 1))  # [(b, c), a, p]
        out["ddI"] = torch.einsum("bcap,dp->abcd", w.view(K, K, K, -1), v)
        out["ddII"] = torch.einsum("cap,dbp->abcd", u * lam, u)
    return out


def _book(t: torch.Tensor, k: int, N: int) -> torch.Tensor:
    r = t.ndim
    return t.reshape(*([k, N] * r)).permute(*range(0, 2 * r, 2), *range(1, 2 * r, 2))


def _timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = _net()
    x = validate_inputs(net, np.random.default_rng(0).normal(size=(N_INPUTS, 10)))
    M, M_ad = (8, 1) if args.quick else (32, 4)
    chunk = next(forward_chunks(net, x, M, seed=0, dtype=torch.float64))
    rows = []
    for ddntk in (False, True):
        _autograd(net, chunk, 0, x, ddntk)  # warm-up (torch.func's first-call costs excluded)
        s_struct = _timed(lambda d=ddntk: _structured(net, chunk, d), 3) / M
        s_ad = (
            _timed(lambda d=ddntk: [_autograd(net, chunk, m, x, d) for m in range(M_ad)], 2) / M_ad
        )
        mine = _structured(net, chunk, ddntk)
        dev = 0.0
        for m in range(M_ad):
            ref = _autograd(net, chunk, m, x, ddntk)
            for key, r in ref.items():
                want = _book(r, OUT, N_INPUTS)
                dev = max(dev, ((mine[key][m] - want).abs().max() / want.abs().max()).item())
        rows.append(
            {
                "tensors": "dNTK + ddNTKs" if ddntk else "dNTK",
                "structured_s_per_network": s_struct,
                "autograd_s_per_network": s_ad,
                "speedup": s_ad / s_struct,
                "max_rel_deviation_float64": dev,
            }
        )
    result = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": 1,
        "width": WIDTH,
        "depth": DEPTH,
        "inputs": N_INPUTS,
        "output_dim": OUT,
        "dtype": "float64",
        "networks_structured": M,
        "networks_autograd": M_ad,
        "rows": rows,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"Empirical dNTK/ddNTKs of the output layer, width {WIDTH}, depth {DEPTH}, "
        f"n_L = {OUT}, {N_INPUTS} inputs, float64, 1 thread (s per network)"
    )
    print(f"{'tensors':>14} {'structured':>11} {'autograd':>10} {'speedup':>8} {'max rel dev':>12}")
    for r in rows:
        print(
            f"{r['tensors']:>14} {r['structured_s_per_network']:>11.4f} "
            f"{r['autograd_s_per_network']:>10.4f} {r['speedup']:>8.1f} "
            f"{r['max_rel_deviation_float64']:>12.1e}"
        )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
