"""The layer walk: every recursion of the theory, layer ℓ → ℓ+1, in one loop.

A network is a sequence of layer maps and every statistic of the book flows layer to layer
(book §4.1 on). A :class:`Recursion` is one family of those recursions — the kernel (§4.3), the
four-point vertex (§4.3), the 1/n kernel correction (§4.3), the NTK mean (eq. 8.50), the NTK
fluctuations (§8.3–8.4) — given by its first-layer values and one step function.
:func:`propagate` walks the layers once for any set of recursions: at each layer it builds one
:class:`~pdlt.gaussian.LayerMoments` on the kernel K^{(ℓ)}, so every Gaussian expectation is
computed once and shared by all the steps that need it.

Adding a recursion is adding one :class:`Recursion` (its first layer, its step, the recursions
it reads) and, if it needs a new Gaussian expectation, one property of ``LayerMoments``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pdlt import _validation
from pdlt.gaussian import LayerMoments
from pdlt.gaussian.rules import memory_limit
from pdlt.network import MLP

Tensor = torch.Tensor
DTYPE = torch.float64


@dataclass(frozen=True)
class LayerState:
    """The statistics of one layer ℓ: ``layer`` = ℓ and one float64 tensor per field
    (``K``, ``Theta``, ``V``, …, as the recursions in the walk define them)."""

    layer: int
    values: Mapping[str, Tensor]

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(
                f"layer state has no {name!r}; it holds {sorted(self.__dict__['values'])}"
            ) from None


@dataclass(frozen=True)
class Recursion:
    """One family of layer-to-layer recursions.

    Attributes
    ----------
    name:
        Its name (``"kernel"``, ``"vertex"``, …).
    first:
        ``first(net, gram)`` → the first-layer values {field: tensor}, from the input Gram
        matrix gram_αβ = x_α·x_β/n_0 (N, N). The first layer is Gaussian at any width.
    step:
        ``step(net, layer, prev, moments)`` → the values of layer ``layer`` = ℓ+1 from the state
        ``prev`` of layer ℓ and the Gaussian expectations ``moments`` under K^{(ℓ)}.
    requires:
        Recursions whose fields ``step`` reads (run first in the same walk).
    second_order:
        Whether ``step`` needs second derivatives of the kernel map (then
        ``moments.derivatives`` carries them, computed once with the first).
    reads_current:
        Whether ``step`` also reads fields of layer ℓ+1 computed by the recursions it
        requires; it is then called as ``step(net, layer, prev, moments, current)``.
    """

    name: str
    first: Callable[[MLP, Tensor], dict[str, Tensor]]
    step: Callable[..., dict[str, Tensor]]
    requires: tuple[Recursion, ...] = field(default=())
    second_order: bool = False
    reads_current: bool = False


@dataclass(frozen=True)
class Walk:
    """The states of layers 1…L, and the per-layer moments when kept (``moments[ℓ−1]`` under
    K^{(ℓ)}, ℓ = 1…L−1)."""

    states: tuple[LayerState, ...]
    moments: tuple[LayerMoments, ...] | None = None

    def stack(self, name: str) -> Tensor:
        """One field over the layers, (L, …)."""
        return torch.stack([getattr(s, name) for s in self.states])

    def numpy(self, name: str) -> np.ndarray:
        return self.stack(name).numpy()

    def __iter__(self) -> Iterator[LayerState]:
        return iter(self.states)


def _ordered(recursions: Sequence[Recursion]) -> list[Recursion]:
    """The recursions with everything they require, dependencies first, each once."""
    out: list[Recursion] = []

    def visit(r: Recursion) -> None:
        if any(o.name == r.name for o in out):
            return
        for dep in r.requires:
            visit(dep)
        out.append(r)

    for r in recursions:
        visit(r)
    return out


def width_ratio(net: MLP, layer: int) -> float:
    """r = n_ℓ/n_{ℓ−1} for the step into ``layer`` = ℓ+1: the factor by which the O(1/n)
    coefficients of layer ℓ, normalized by 1/n_{ℓ−1}, re-enter at layer ℓ+1 (normalized by
    1/n_ℓ)."""
    return net.widths[layer - 1] / net.widths[layer - 2]


def gram(x: Tensor) -> Tensor:
    """x_α·x_β/n_0, the inputs' Gram matrix per input dimension (N, N)."""
    return (x @ x.T) / x.shape[1]


@torch.no_grad()
def propagate(
    net: MLP,
    gram_matrix: Tensor,
    recursions: Sequence[Recursion],
    *,
    tol: float = 1e-7,
    keep_moments: bool = False,
    max_memory: int | None = None,
) -> Walk:
    """Walk layers 1…L of ``net`` once, running every recursion (and what it requires).

    Parameters
    ----------
    net:
        The network (per-layer C_b, C_W, λ's and widths are read by the steps).
    gram_matrix:
        x_α·x_β/n_0, float64 (N, N).
    recursions:
        The families to run.
    tol:
        Relative accuracy of the 3-/4-input Gaussian cubature, for the steps that need it.
    keep_moments:
        Also return each layer's :class:`~pdlt.gaussian.LayerMoments`.
    max_memory:
        Cap in bytes on the Gaussian engine's work arrays (default: the environment variable
        ``PDLT_MAX_MEMORY``, else 2 GiB); work that cannot fit raises a ValueError naming it.
    """
    with memory_limit(max_memory):
        return _walk(net, gram_matrix, recursions, tol, keep_moments)


def check_tol(tol: object) -> float:
    """The relative accuracy asked of the 3-/4-input cubature: a real number in (0, 1)."""
    return _validation.real("tol", tol, min=0.0, min_inclusive=False, max=1.0, max_inclusive=False)


def check_max_memory(max_memory: object) -> int | None:
    """A memory cap in bytes (an int ≥ 2²⁰), or None for the default."""
    if max_memory is None:
        return None
    return _validation.integer("max_memory", max_memory, min=2**20)


def _walk(
    net: MLP, gram_matrix: Tensor, recursions: Sequence[Recursion], tol: float, keep_moments: bool
) -> Walk:
    order = _ordered(recursions)
    second = any(r.second_order for r in order)
    values: dict[str, Tensor] = {}
    for r in order:
        values.update(r.first(net, gram_matrix))
    states = [LayerState(1, values)]
    _check_first_layer(states[0], gram_matrix)
    kept = []
    for layer in range(2, net.depth + 1):
        prev = states[-1]
        m = LayerMoments(net.activation, prev.K, tol=tol, layer=layer - 1, second_order=second)
        values = {}
        for r in order:
            if r.reads_current:
                values.update(r.step(net, layer, prev, m, LayerState(layer, dict(values))))
            else:
                values.update(r.step(net, layer, prev, m))
        states.append(LayerState(layer, values))
        if keep_moments:
            kept.append(m)
        _check_finite(states[-1])
    return Walk(tuple(states), tuple(kept) if keep_moments else None)


def _check_first_layer(state: LayerState, gram_matrix: Tensor) -> None:
    """Layer 1 is C_b + C_W x·x/n_0: a non-finite value there is the inputs' (or the spec's)
    fault, so say so before any Gaussian integral is attempted."""
    for name, t in state.values.items():
        if not torch.isfinite(t).all():
            big = float(torch.diagonal(gram_matrix).abs().max())
            raise ValueError(
                f"{name} overflows float64 at layer 1: the inputs' squared norm per dimension "
                f"|x|²/n_0 is {big:.3g} (times C_W, λ_W of layer 1); rescale the inputs "
                "(e.g. to |x|²/n_0 ~ 1) or use a smaller C_W"
            )


def _check_finite(state: LayerState) -> None:
    for name, t in state.values.items():
        if not torch.isfinite(t).all():
            raise FloatingPointError(
                f"{name} overflowed at layer {state.layer}: the network is far from criticality "
                "(try a critical C_W, fewer layers, or smaller learning rates)"
            )
