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

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pdlt import _validation
from pdlt._threads import walk_threads
from pdlt.activations import Activation
from pdlt.gaussian import LayerMoments
from pdlt.gaussian.pairs import cross_expectation, diagonal_expectation
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
    entrywise:
        Whether each entry (α, β) of every field depends only on the same entry of the previous
        layer and the variances of α and β (the kernel, the NTK mean): then ``first`` and
        ``step`` also work on a rectangle of pairs or on the diagonal alone, and
        :func:`propagate_blocks` can walk the layers in blocks of inputs.
    """

    name: str
    first: Callable[[MLP, Tensor], dict[str, Tensor]]
    step: Callable[[MLP, int, LayerState, LayerMoments], dict[str, Tensor]]
    requires: tuple[Recursion, ...] = field(default=())
    second_order: bool = False
    reads_current: bool = False
    entrywise: bool = False


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
    """x_α·x_β/n_0, the inputs' Gram matrix per input dimension (N, N), on the walk's
    threads (:func:`pdlt._threads.threads_for`): a small matmul on two threads of a busy
    machine waits milliseconds for the second core."""
    with walk_threads(x.shape[0] ** 2):
        return (x @ x.T) / x.shape[1]


def propagate(
    net: MLP,
    gram_matrix: Tensor,
    recursions: Sequence[Recursion],
    *,
    tol: float = 1e-7,
    keep_moments: bool = False,
    layers: Sequence[int] | None = None,
    max_memory: int | None = None,
) -> Walk:
    """Walk layers 1…L of ``net`` once, running every recursion (and what it requires), on
    the threads :func:`pdlt._threads.threads_for` picks (one below ~4·10⁶ entries, or
    ``PDLT_NUM_THREADS``), with the Gaussian engine's work arrays capped at ``max_memory``
    bytes (default: the environment variable ``PDLT_MAX_MEMORY``, else 2 GiB; work that
    cannot fit raises a ValueError naming it). Other parameters as :func:`_propagate`."""
    with walk_threads(gram_matrix.numel()), memory_limit(max_memory):
        return _propagate(
            net, gram_matrix, recursions, tol=tol, keep_moments=keep_moments, layers=layers
        )


def check_tol(tol: object) -> float:
    """The relative accuracy asked of the 3-/4-input cubature: a real number in (0, 1)."""
    return _validation.real("tol", tol, min=0.0, min_inclusive=False, max=1.0, max_inclusive=False)


def check_max_memory(max_memory: object) -> int | None:
    """A memory cap in bytes (an int ≥ 2²⁰), or None for the default."""
    if max_memory is None:
        return None
    return _validation.integer("max_memory", max_memory, min=2**20)


@torch.no_grad()
def _propagate(
    net: MLP,
    gram_matrix: Tensor,
    recursions: Sequence[Recursion],
    *,
    tol: float = 1e-7,
    keep_moments: bool = False,
    layers: Sequence[int] | None = None,
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
    layers:
        The layers ℓ (1…L, increasing) whose states to keep (default all); the others are
        dropped as soon as the next layer is computed.
    """
    keep = _kept(net, layers)
    order = _ordered(recursions)
    second = any(r.second_order for r in order)
    values: dict[str, Tensor] = {}
    for r in order:
        values.update(r.first(net, gram_matrix))
    prev = LayerState(1, values)
    _check_first_layer(prev, gram_matrix)
    states = [prev] if 1 in keep else []
    kept = []
    for layer in range(2, net.depth + 1):
        m = LayerMoments(net.activation, prev.K, tol=tol, layer=layer - 1, second_order=second)
        values = {}
        for r in order:
            if r.reads_current:
                values.update(r.step(net, layer, prev, m, LayerState(layer, dict(values))))
            else:
                values.update(r.step(net, layer, prev, m))
        prev = LayerState(layer, values)
        _check_finite(prev)
        if layer in keep:
            states.append(prev)
        if keep_moments:
            kept.append(m)
    return Walk(tuple(states), tuple(kept) if keep_moments else None)


def _kept(net: MLP, layers: Sequence[int] | None) -> frozenset[int]:
    if layers is None:
        return frozenset(range(1, net.depth + 1))
    return frozenset(int(x) for x in layers)


def layer_selection(net: MLP, layers: object) -> tuple[int, ...]:
    """The validated ``layers=`` argument of the kernel functions: ``None`` (all), ``"last"``,
    an int ℓ, or increasing ints in 1…L (negative ints count from the end, −1 = L)."""
    L = net.depth
    if layers is None:
        return tuple(range(1, L + 1))
    if isinstance(layers, str):
        if layers != "last":
            raise ValueError(
                f"layers must be None, 'last', an int or a list of ints; got {layers!r}"
            )
        return (L,)
    items = [layers] if isinstance(layers, int | np.integer) else list(layers)  # type: ignore[arg-type]
    out = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int | np.integer):
            raise TypeError(f"layers must hold ints (1…{L}, or −{L}…−1); got {x!r}")
        ell = int(x) + L + 1 if x < 0 else int(x)
        if not 1 <= ell <= L:
            raise ValueError(f"layer {x} is out of range: the network has layers 1…{L}")
        out.append(ell)
    if not out or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"layers must be a non-empty increasing list in 1…{L}; got {layers!r}")
    return tuple(out)


def _check_first_layer(state: LayerState, gram_matrix: Tensor) -> None:
    """Layer 1 is C_b + C_W x·x/n_0: a non-finite value there is the inputs' (or the spec's)
    fault, so say so before any Gaussian integral is attempted."""
    for name, t in state.values.items():
        if not math.isfinite(t.sum().item()):
            big = float(torch.diagonal(gram_matrix).abs().max())
            raise ValueError(
                f"{name} overflows float64 at layer 1: the inputs' squared norm per dimension "
                f"|x|²/n_0 is {big:.3g} (times C_W, λ_W of layer 1); rescale the inputs "
                "(e.g. to |x|²/n_0 ~ 1) or use a smaller C_W"
            )


def _check_finite(state: LayerState) -> None:
    for name, t in state.values.items():
        # one reduction: a sum is finite only if every entry is (see gaussian.pairs.finite)
        if not math.isfinite(t.sum().item()) and not bool(torch.isfinite(t).all()):
            raise FloatingPointError(
                f"{name} overflowed at layer {state.layer}: the network is far from criticality "
                "(try a critical C_W, fewer layers, or smaller learning rates)"
            )


# --------------------------------------------------------------------------------------------
# entrywise recursions in blocks: the diagonal, and rectangles of input pairs

# Working set of one entrywise layer step, in float64 entries per pair: the previous and new
# fields, ⟨σσ⟩, ⟨σ'σ'⟩ and the closed forms' or Mehler series' temporaries.
_ENTRIES_PER_PAIR = 24


class _EntryMoments:
    """``ss`` = ⟨σ_aσ_b⟩ and ``dd`` = ⟨σ'_aσ'_b⟩ — all an entrywise step reads from
    :class:`~pdlt.gaussian.LayerMoments` — over a rectangle of pairs (row variances ``d_a``,
    column variances ``d_b``, cross-covariances ``K_ab``) or, with ``d_b=None``, over the
    diagonal (variances ``d_a``)."""

    def __init__(
        self, act: Activation, d_a: Tensor, d_b: Tensor | None, K_ab: Tensor | None
    ) -> None:
        self.act, self.d_a, self.d_b, self.K_ab = act, d_a, d_b, K_ab
        self._cache: dict[tuple[int, int], Tensor] = {}
        self._shared: dict = {}  # the closed forms' intermediates (θ, …), shared by ss, dd

    def _get(self, orders: tuple[int, int]) -> Tensor:
        if orders not in self._cache:
            if self.d_b is None:
                self._cache[orders] = diagonal_expectation(
                    self.act, self.d_a, orders, shared=self._shared
                )
            else:
                self._cache[orders] = cross_expectation(
                    self.act, self.d_a, self.d_b, self.K_ab, orders, shared=self._shared
                )
        return self._cache[orders]

    @property
    def ss(self) -> Tensor:
        return self._get((0, 0))

    @property
    def dd(self) -> Tensor:
        return self._get((1, 1))


def _entrywise(recursions: Sequence[Recursion]) -> list[Recursion]:
    order = _ordered(recursions)
    bad = [r.name for r in order if not r.entrywise]
    if bad:
        raise ValueError(
            f"recursions {bad} are not entrywise (they couple more than two inputs); only the "
            "kernel and the NTK mean can be computed in blocks"
        )
    return order


@torch.no_grad()
def propagate_diagonal(net: MLP, x: Tensor, recursions: Sequence[Recursion]) -> Walk:
    """The diagonal (α = β) of every field of the entrywise ``recursions``, every layer: (N,)
    per field, from 1-D Gaussian expectations alone (O(N) per layer)."""
    order = _entrywise(recursions)
    g = (x * x).sum(dim=1) / x.shape[1]
    values: dict[str, Tensor] = {}
    for r in order:
        values.update(r.first(net, g))
    prev = LayerState(1, values)
    states = [prev]
    for layer in range(2, net.depth + 1):
        m = _EntryMoments(net.activation, prev.K, None, None)
        values = {}
        for r in order:
            values.update(r.step(net, layer, prev, m))
        prev = LayerState(layer, values)
        _check_finite(prev)
        states.append(prev)
    return Walk(tuple(states))


def block_size(n_rows: int, max_memory: int | None, n_fields: int) -> int:
    """Columns per block so that one block's working set (plus its kept fields) stays within
    ``max_memory`` bytes; all columns when there is no cap."""
    if max_memory is None:
        return 1 << 62
    per_column = 8 * n_rows * (_ENTRIES_PER_PAIR + n_fields)
    return max(1, int(max_memory) // per_column)


def propagate_cross(
    net: MLP,
    x_a: Tensor,
    x_b: Tensor,
    recursions: Sequence[Recursion],
    *,
    layers: Sequence[int] | None = None,
    max_memory: int | None = None,
    diag_a: Walk | None = None,
    diag_b: Walk | None = None,
) -> Walk:
    """The entrywise fields between inputs ``x_a`` and ``x_b`` (:func:`_propagate_cross`),
    on the threads :func:`pdlt._threads.threads_for` picks."""
    with walk_threads(x_a.shape[0] * x_b.shape[0]):
        return _propagate_cross(
            net,
            x_a,
            x_b,
            recursions,
            layers=layers,
            max_memory=max_memory,
            diag_a=diag_a,
            diag_b=diag_b,
        )


@torch.no_grad()
def _propagate_cross(
    net: MLP,
    x_a: Tensor,
    x_b: Tensor,
    recursions: Sequence[Recursion],
    *,
    layers: Sequence[int] | None = None,
    max_memory: int | None = None,
    diag_a: Walk | None = None,
    diag_b: Walk | None = None,
) -> Walk:
    """The fields of the entrywise ``recursions`` between inputs ``x_a`` (rows) and ``x_b``
    (columns), (n_a, n_b) per field, for the kept ``layers``.

    Each entry needs only its own previous value and the two inputs' variances (the pair map
    is entrywise given the diagonals), so the columns are walked through all layers in blocks
    whose working set stays within ``max_memory`` bytes; only the kept layers' outputs are
    held whole. ``diag_a``/``diag_b``: the inputs' :func:`propagate_diagonal`, if known.
    """
    order = _entrywise(recursions)
    keep = sorted(_kept(net, layers))
    diag_a = diag_a if diag_a is not None else propagate_diagonal(net, x_a, order)
    diag_b = diag_b if diag_b is not None else propagate_diagonal(net, x_b, order)
    n_a, n_b = x_a.shape[0], x_b.shape[0]
    out: dict[int, dict[str, Tensor]] = {ell: {} for ell in keep}
    step = min(n_b, block_size(n_a, max_memory, len(order) * len(keep)))
    for lo in range(0, n_b, step):
        cols = slice(lo, min(n_b, lo + step))
        g = (x_a @ x_b[cols].T) / x_a.shape[1]
        values: dict[str, Tensor] = {}
        for r in order:
            values.update(r.first(net, g))
        prev = LayerState(1, values)
        for layer in range(1, net.depth + 1):
            if layer > 1:
                m = _EntryMoments(
                    net.activation,
                    diag_a.states[layer - 2].K,
                    diag_b.states[layer - 2].K[cols],
                    prev.K,
                )
                values = {}
                for r in order:
                    values.update(r.step(net, layer, prev, m))
                prev = LayerState(layer, values)
                _check_finite(prev)
            if layer in out:
                for name, t in prev.values.items():
                    if name not in out[layer]:
                        out[layer][name] = torch.empty((n_a, n_b), dtype=DTYPE)
                    out[layer][name][:, cols] = t
    return Walk(tuple(LayerState(ell, out[ell]) for ell in keep))


def propagate_blocks(
    net: MLP,
    x: Tensor,
    recursions: Sequence[Recursion],
    *,
    layers: Sequence[int] | None = None,
    max_memory: int | None = None,
) -> Walk:
    """The (N, N) fields of the entrywise ``recursions`` on inputs x, computed in blocks of
    columns within ``max_memory`` bytes of working set (:func:`propagate_cross` of x with
    itself); the diagonal comes from the 1-D walk, as in :func:`propagate`."""
    diag = propagate_diagonal(net, x, recursions)
    walk = propagate_cross(
        net, x, x, recursions, layers=layers, max_memory=max_memory, diag_a=diag, diag_b=diag
    )
    idx = torch.arange(x.shape[0])
    for state in walk.states:
        for name, t in state.values.items():
            t[idx, idx] = diag.states[state.layer - 1].values[name]
    return walk
