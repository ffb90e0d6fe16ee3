"""The infinite-width kernel K^{(ℓ)} (book §4.1–4.3).

At infinite width the preactivations of every layer are Gaussian, independent across neurons,
with covariance δ_ij K^{(ℓ)}_{αβ} over the inputs. The first layer is exact at any width,

    K^{(1)}_{αβ} = C_b^{(1)} + C_W^{(1)} (1/n_0) Σ_j x_{j;α} x_{j;β}             (§4.1)

and each layer follows from the last by the kernel map

    K^{(ℓ+1)}_{αβ} = C_b^{(ℓ+1)} + C_W^{(ℓ+1)} ⟨σ(z_α) σ(z_β)⟩_{K^{(ℓ)}}       (§4.3)

A residual layer z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γ z^{(ℓ)} adds γ² K^{(ℓ)} (book eq. B.11, ξ = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt import _validation
from pdlt._tables import long_frame
from pdlt._threads import walk_threads
from pdlt.gaussian import LayerMoments
from pdlt.network import MLP, validate_inputs
from pdlt.theory.layers import (
    LayerState,
    Recursion,
    Walk,
    gram,
    layer_selection,
    propagate,
    propagate_blocks,
)

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class Kernel:
    """The infinite-width kernel of every layer.

    Attributes
    ----------
    K:
        float64 array (depth, N, N); ``K[l-1]`` is K^{(l)} over the N inputs.
    net:
        The network it was computed for.
    x:
        The inputs, float64 array (N, n_0).
    layers:
        The layers ℓ held, in order (all, 1…L, unless ``layers=`` chose some): ``K[i]`` is
        K^{(layers[i])}.
    """

    K: np.ndarray
    net: MLP
    x: np.ndarray
    layers: tuple[int, ...] | None = None

    statistics = ("K",)

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per layer and unordered input pair (a ≤ b)."""
        return relabel_layers(long_frame({"K": self.K}), self.layers)

    def __repr__(self) -> str:
        L, N, _ = self.K.shape
        return f"Kernel(depth={L}, inputs={N}, K^(L)_diag={np.round(np.diag(self.K[-1]), 6)})"


def first_layer_kernel(x: Tensor, C_b: float, C_W: float) -> Tensor:
    """K^{(1)}_{αβ} = C_b + C_W x_α·x_β / n_0 (book §4.1); exact at any width."""
    return C_b + C_W * gram(x)


def kernel_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """The kernel map K^{(ℓ)} → K^{(ℓ+1)} (book §4.3), ``layer`` = ℓ+1:
    K^{(ℓ+1)}_{αβ} = C_b^{(ℓ+1)} + C_W^{(ℓ+1)} ⟨σ(z_α) σ(z_β)⟩_{K^{(ℓ)}} + γ² K^{(ℓ)}_{αβ},
    the last term for a residual layer (γ = ``net.skip[ℓ]``, book eq. B.11 with ξ = 1)."""
    i = layer - 1
    K = torch.mul(m.ss, net.C_W[i]).add_(net.C_b[i])  # in place: N² entries per layer
    gamma = net.skip[i]
    if gamma != 0.0:  # a residual layer adds γ² K (eq. B.11)
        K.add_(prev.K, alpha=gamma**2)
    return {"K": K}


KERNEL = Recursion(
    "kernel",
    first=lambda net, g: {"K": net.C_b[0] + net.C_W[0] * g},
    step=kernel_step,
    entrywise=True,
)


def kernel_layers(net: MLP, x: Tensor) -> list[Tensor]:
    """[K^{(1)}, …, K^{(L)}] as float64 tensors."""
    return list(propagate(net, gram(x), [KERNEL]).stack("K"))


def relabel_layers(frame: pd.DataFrame, layers: tuple[int, ...] | None) -> pd.DataFrame:
    """A long frame's ``layer`` column (positions 1, 2, …) as the layers actually held."""
    if layers is not None:
        frame["layer"] = np.asarray(layers)[frame["layer"].to_numpy() - 1]
    return frame


def walk_entrywise(
    net: MLP,
    xt: Tensor,
    recursions: list[Recursion],
    layers: object,
    max_memory: object,
) -> tuple[tuple[int, ...], Walk]:
    """The kept layers and their walk for :func:`kernel` / :func:`pdlt.ntk`: one walk of the
    full kernels, or — under a memory cap — a walk in blocks of inputs."""
    kept = layer_selection(net, layers)
    mem = None if max_memory is None else _validation.integer("max_memory", max_memory)
    if mem is not None and mem < 2**20:
        raise ValueError(f"max_memory must be an int number of bytes ≥ 1 MiB, got {mem}")
    # the Gram matrix too on the walk's threads: a tiny matmul on two threads of a busy
    # machine costs ~5 ms of waiting, more than the whole walk at N = 100
    with walk_threads(xt.shape[0] ** 2):
        if mem is None:
            return kept, propagate(net, gram(xt), recursions, layers=kept)
        return kept, propagate_blocks(net, xt, recursions, layers=kept, max_memory=mem)


def kernel(
    net: MLP,
    x: np.ndarray | Tensor,
    *,
    layers: int | str | Sequence[int] | None = None,
    max_memory: int | None = None,
) -> Kernel:
    """The infinite-width kernel K^{(ℓ)}_{αβ} of every layer ℓ = 1…L (book §4.1–4.3).

    Parameters
    ----------
    net:
        The network spec.
    x:
        Inputs, (N, n_0) numpy array or torch tensor.
    layers:
        Which layers to return: ``None`` (all, 1…L), ``"last"`` (= L), an int ℓ, or an
        increasing list (negative ints count from the end). The others are not kept: memory
        is O(len(layers)·N²), not O(L·N²).
    max_memory:
        A cap in bytes (≥ 1 MiB) on the working memory beyond the returned arrays: the kernel
        is then computed in blocks of inputs (each entry needs only its own past and the
        inputs' variances), at about the same speed. ``None``: one pass over all N² pairs.

    Returns
    -------
    Kernel
        ``.K`` is a float64 array (len(layers), N, N) with ``K[i] = K^{(layers[i])}``; with
        the default, (L, N, N) with ``K[l-1] = K^{(l)}``.

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=10, width=256, input_dim=3)
    >>> pdlt.kernel(net, np.eye(3)).K.shape
    (10, 3, 3)
    """
    xt = validate_inputs(net, x)
    kept, walk = walk_entrywise(net, xt, [KERNEL], layers, max_memory)
    return Kernel(K=walk.numpy("K"), net=net, x=xt.numpy(), layers=kept)
