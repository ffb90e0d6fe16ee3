"""Ensembles of real MLPs as one batched torch program.

M networks of one spec are sampled and run together: the weights of a chunk of B networks form a
(B, n_ℓ, n_{ℓ−1}) tensor per layer and the forward pass is a batched matmul. Chunks bound the
memory. Randomness is drawn per *block* of networks from generators seeded by
``numpy.random.SeedSequence(seed).spawn``, so the same seed gives the same networks whatever the
chunk size (on the same device type).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from pdlt.network import MLP

Tensor = torch.Tensor

BLOCK = 8  # networks per random stream
DEFAULT_MAX_MEMORY = 512 * 2**20
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Chunk:
    """A chunk of B sampled networks and their preactivations on the N inputs.

    Attributes
    ----------
    z:
        ``z[l-1]`` is z^{(l)}, shape (B, n_l, N): network, neuron, input.
    W, b:
        ``W[l-1]`` (B, n_l, n_{l-1}) and ``b[l-1]`` (B, n_l, 1): the parameters of layer l.
    x:
        The inputs as (n_0, N) in the chunk's dtype and device.
    start:
        Index of the chunk's first network in the ensemble.
    """

    z: tuple[Tensor, ...]
    W: tuple[Tensor, ...]
    b: tuple[Tensor, ...]
    x: Tensor
    start: int

    @property
    def size(self) -> int:
        return self.z[0].shape[0]


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, str):
        if dtype not in table:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        return table[dtype]
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


def check_ensemble_args(n_networks: object, seed: object, max_memory: object) -> None:
    if isinstance(n_networks, bool) or not isinstance(n_networks, (int, np.integer)):
        raise TypeError(f"n_networks must be an int, got {n_networks!r}")
    if n_networks < 2:
        raise ValueError(f"n_networks must be ≥ 2 to give error bars, got {n_networks}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    if (
        isinstance(max_memory, bool)
        or not isinstance(max_memory, (int, np.integer))
        or max_memory < 2**20
    ):
        raise ValueError(f"max_memory must be an int number of bytes ≥ 1 MiB, got {max_memory!r}")


def chunk_size(net: MLP, n_inputs: int, dtype: torch.dtype, max_memory: int) -> int:
    """Networks per chunk so that one layer's weights plus all activations fit in max_memory."""
    itemsize = torch.finfo(dtype).bits // 8
    w = max(a * b for a, b in zip(net.widths[:-1], net.widths[1:], strict=True))
    acts = sum(net.widths[1:]) * n_inputs * 3  # z, σ(z) and a float64 statistic per layer
    per_net = (2 * w + acts) * itemsize + 8 * net.depth * n_inputs**2
    b = max(1, max_memory // per_net)
    return int(b if b < BLOCK else (b // BLOCK) * BLOCK)


def _generators(seed: int, n_networks: int, device: torch.device) -> list[torch.Generator]:
    n_blocks = math.ceil(n_networks / BLOCK)
    states = np.random.SeedSequence(seed).spawn(n_blocks)
    return [
        torch.Generator(device=device).manual_seed(int(s.generate_state(1, np.uint64)[0] >> 1))
        for s in states
    ]


def _draw(
    gens: list[torch.Generator], start: int, size: int, shape: tuple[int, ...], dtype, device
) -> Tensor:
    """Standard normals of shape (size, *shape) for networks start…start+size−1, block by block."""
    out = torch.empty((size, *shape), dtype=dtype, device=device)
    # Filled in place slice by slice: torch.cat of the blocks costs more than drawing them.
    for net_idx in range(start, start + size, BLOCK):
        lo = net_idx - start
        out[lo : lo + BLOCK].normal_(generator=gens[net_idx // BLOCK])
    return out


def forward_chunks(
    net: MLP,
    x: Tensor,
    n_networks: int,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device = CPU,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Iterator[Chunk]:
    """Sample ``n_networks`` networks of ``net`` and yield their preactivations chunk by chunk.

    Layer ℓ draws W^{(ℓ)} ~ N(0, C_W/n_{ℓ−1}) then b^{(ℓ)} ~ N(0, C_b) from each block's stream.
    """
    # A multiple of BLOCK (unless one network alone exceeds it), so no stream is split.
    B = min(chunk_size(net, x.shape[0], dtype, max_memory), n_networks)
    gens = _generators(seed, n_networks, device)
    xt = x.to(device=device, dtype=dtype).T  # (n_0, N)
    start = 0
    while start < n_networks:
        size = min(B, n_networks - start)
        zs, Ws, bs = [], [], []
        h = xt
        for ell in range(net.depth):
            n_in, n_out = net.widths[ell], net.widths[ell + 1]
            W = _draw(gens, start, size, (n_out, n_in), dtype, device)
            W.mul_(math.sqrt(net.C_W[ell] / n_in))
            b = _draw(gens, start, size, (n_out, 1), dtype, device)
            b.mul_(math.sqrt(net.C_b[ell]))
            z = torch.baddbmm(b, W, h) if h.ndim == 3 else torch.matmul(W, h).add_(b)
            zs.append(z)
            Ws.append(W)
            bs.append(b)
            if ell < net.depth - 1:
                h = net.activation(z)
        yield Chunk(z=tuple(zs), W=tuple(Ws), b=tuple(bs), x=xt, start=start)
        start += size


def progress_enabled(progress: bool | None) -> bool:
    """Progress bars on an interactive terminal only; never in CI logs or when asked not to."""
    if progress is False:
        return False
    if os.environ.get("CI"):
        return False
    return bool(progress) or sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int, enabled: bool):
    """A rich progress bar yielding ``advance(n)``; a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
