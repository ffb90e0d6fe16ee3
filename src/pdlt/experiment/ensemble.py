"""Ensembles of real MLPs as one batched torch program.

M networks of one spec are sampled and run together: the weights of a chunk of B networks form a
(B, n_ℓ, n_{ℓ−1}) tensor per layer and the forward pass is a batched matmul. Chunks bound the
memory. Network m draws its parameters from its own stream (:func:`draw_parameters`), the same
numbers whatever the arithmetic dtype: its parameters are a function of (seed, m) only, so the
same seed gives the same networks whatever the chunking and the ensemble size, and a float32
network is the float64 one rounded (on the same device type).
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

from pdlt import _validation
from pdlt.network import MLP

Tensor = torch.Tensor

BLOCK = 8  # chunk sizes are rounded to a multiple of this (tidy batches)
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
    """The ensemble arguments every sampler shares (rules of :mod:`pdlt._validation`)."""
    n = _validation.integer("n_networks", n_networks)
    if n < 2:
        raise ValueError(f"n_networks must be ≥ 2 to give error bars, got {n}")
    _validation.seed("seed", seed)
    mem = _validation.integer("max_memory", max_memory)
    if mem < 2**20:
        raise ValueError(f"max_memory must be an int number of bytes ≥ 1 MiB, got {mem}")


def chunk_size(net: MLP, n_inputs: int, dtype: torch.dtype, max_memory: int) -> int:
    """Networks per chunk so that all layers' parameters (a chunk holds them), a work copy of the
    largest layer's weights, and all activations fit in max_memory."""
    itemsize = torch.finfo(dtype).bits // 8
    sizes = [a * b for a, b in zip(net.widths[:-1], net.widths[1:], strict=True)]
    params = sum(sizes) + sum(net.widths[1:])
    acts = sum(net.widths[1:]) * n_inputs * 3  # z, σ(z) and a float64 statistic per layer
    per_net = (params + max(sizes) + acts) * itemsize + 8 * net.depth * n_inputs**2
    b = max(1, max_memory // per_net)
    return int(b if b < BLOCK else (b // BLOCK) * BLOCK)


def chunk_entries(
    net: MLP, n_inputs: int, n_networks: int, dtype: torch.dtype, max_memory: int
) -> int:
    """Entries of the largest activation tensor of one chunk (networks × width × inputs): the
    size by which :func:`pdlt._threads.threads_for` decides whether a second thread pays."""
    B = min(chunk_size(net, n_inputs, dtype, max_memory), n_networks)
    return B * max(net.widths[1:]) * n_inputs


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def network_seeds(seed: int, start: int, size: int) -> np.ndarray:
    """Seeds of the streams of networks ``start … start+size−1`` of the ensemble ``seed``.

    Network m's seed is splitmix64 of (a key from ``SeedSequence(seed)``) + m·golden ratio: a
    function of (seed, m) only, distinct for distinct m, vectorised over the chunk.
    """
    key = np.random.SeedSequence(int(seed)).generate_state(2, np.uint64)
    m = np.arange(start, start + size, dtype=np.uint64)
    with np.errstate(over="ignore"):  # modular arithmetic on purpose
        z = key[0] + (m + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31)) ^ key[1]
    return z >> np.uint64(1)  # torch seeds are < 2**63 here, for any device's generator


def draw_parameters(
    net: MLP, seed: int, start: int, size: int, dtype, device: torch.device = CPU
) -> tuple[list[Tensor], list[Tensor]]:
    """W^{(ℓ)} (size, n_ℓ, n_{ℓ−1}) ~ N(0, C_W/n_{ℓ−1}) and b^{(ℓ)} (size, n_ℓ, 1) ~ N(0, C_b) of
    networks ``start … start+size−1`` of the ensemble ``seed`` (what forward_chunks draws).

    Network m reseeds one generator with :func:`network_seeds` and draws W^{(1)}, b^{(1)}, W^{(2)},
    … as float32 standard normals (:func:`draw_standard_parameters`); they are then scaled in
    float64 and cast to ``dtype`` (:func:`scale_parameters`). So network m is a
    function of (seed, m) only — the same in whatever chunk it falls, however many networks the
    ensemble holds — and a float32 network is the float64 one rounded, so that a float64 run
    isolates rounding. (float32 draws: torch draws float64 normals ~6x slower on CPU.) One Python
    step per network and layer (~1 µs) is small beside the forward pass.
    """
    Ws, bs = draw_standard_parameters(net, seed, start, size, device)
    return scale_parameters(net, Ws, bs, dtype)


def draw_standard_parameters(
    net: MLP, seed: int, start: int, size: int, device: torch.device = CPU
) -> tuple[list[Tensor], list[Tensor]]:
    """The float32 standard normals behind :func:`draw_parameters` (before the √(C_W/n_{ℓ−1})
    and √C_b scales): networks of the same widths and seed that differ only in C_W, C_b share
    them (the batched phase diagram draws them once for a whole row of C_W)."""
    shapes = [(net.widths[ell + 1], net.widths[ell]) for ell in range(net.depth)]
    Ws = [torch.empty((size, *s), dtype=torch.float32, device=device) for s in shapes]
    bs = [torch.empty((size, s[0], 1), dtype=torch.float32, device=device) for s in shapes]
    gen = torch.Generator(device=device)
    for i, s in enumerate(network_seeds(seed, start, size)):
        gen.manual_seed(int(s))
        for W, b in zip(Ws, bs, strict=True):
            W[i].normal_(generator=gen)
            b[i].normal_(generator=gen)
    return Ws, bs


def scale_parameters(
    net: MLP, Ws: list[Tensor], bs: list[Tensor], dtype
) -> tuple[list[Tensor], list[Tensor]]:
    """Standard normals → W^{(ℓ)} ~ N(0, C_W^{(ℓ)}/n_{ℓ−1}), b^{(ℓ)} ~ N(0, C_b^{(ℓ)}) of ``net``,
    scaled in float64 then rounded once to ``dtype`` (new tensors; the inputs are kept)."""
    # one layer at a time in float64: a small work copy
    Ws = [
        W.double().mul_(math.sqrt(net.C_W[ell] / net.widths[ell])).to(dtype)
        for ell, W in enumerate(Ws)
    ]
    bs = [b.double().mul_(math.sqrt(net.C_b[ell])).to(dtype) for ell, b in enumerate(bs)]
    return Ws, bs


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

    Network m draws, layer by layer, W^{(ℓ)} ~ N(0, C_W/n_{ℓ−1}) then b^{(ℓ)} ~ N(0, C_b) from its
    own stream (:func:`draw_parameters`): the same networks whatever ``max_memory``. Residual
    layers add γ^{(ℓ)} z^{(ℓ−1)} (book eq. B.3; ``net.skip``).
    """
    B = min(chunk_size(net, x.shape[0], dtype, max_memory), n_networks)
    xt = x.to(device=device, dtype=dtype).T  # (n_0, N)
    start = 0
    while start < n_networks:
        size = min(B, n_networks - start)
        Ws, bs = draw_parameters(net, seed, start, size, dtype, device)
        zs = []
        h = xt
        for ell in range(net.depth):
            W, b = Ws[ell], bs[ell]
            z = torch.baddbmm(b, W, h) if h.ndim == 3 else torch.matmul(W, h).add_(b)
            if net.skip[ell] != 0.0:  # residual layer (book eq. B.3): + γ z^{(ℓ−1)}
                z.add_(zs[-1], alpha=net.skip[ell])
            zs.append(z)
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
