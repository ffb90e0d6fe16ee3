"""The network specification: an MLP in the book's conventions (book §2.1, eq. 2.5–2.6).

    z^{(1)}_{i;α}   = b^{(1)}_i   + Σ_j W^{(1)}_{ij} x_{j;α}
    z^{(ℓ+1)}_{i;α} = b^{(ℓ+1)}_i + Σ_j W^{(ℓ+1)}_{ij} σ(z^{(ℓ)}_{j;α}),      ℓ = 1, …, L−1

with W^{(ℓ)}_{ij} ~ N(0, C_W^{(ℓ)}/n_{ℓ−1}) and b^{(ℓ)}_i ~ N(0, C_b^{(ℓ)}). The output is z^{(L)}
(no activation on the last layer). ``depth`` is L, the number of weight layers.

A residual MLP (book App. B, eq. B.3 with ξ = 1) adds γ^{(ℓ+1)} z^{(ℓ)} to layer ℓ+1:

    z^{(ℓ+1)}_{i;α} = b^{(ℓ+1)}_i + Σ_j W^{(ℓ+1)}_{ij} σ(z^{(ℓ)}_{j;α}) + γ^{(ℓ+1)} z^{(ℓ)}_{i;α}

for the layers whose input and output widths agree (``skip``; γ = 0 is the plain MLP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pdlt import _validation
from pdlt.activations import Activation, TorchFn, activation

PerLayer = float | Sequence[float]


def _per_layer(name: str, value: PerLayer, depth: int, *, positive: bool) -> tuple[float, ...]:
    """A scalar or one value per layer → a tuple of ``depth`` validated floats (> 0 or ≥ 0)."""
    return _validation.per_layer(name, value, depth, min=0.0, min_inclusive=not positive)


def _positive_int(name: str, value: object) -> int:
    return _validation.integer(name, value, min=1)


@dataclass(frozen=True)
class MLP:
    """A multilayer perceptron at initialization, in the book's conventions. Frozen, validated.

    Parameters
    ----------
    activation:
        A built-in name (``"tanh"``, ``"relu"``, …), an :class:`~pdlt.activations.Activation`,
        or an elementwise torch callable.
    depth:
        L, the number of weight layers (so L − 1 hidden layers).
    width:
        The hidden widths n_1 … n_{L−1}: one int for all, or a sequence of L − 1 ints.
    input_dim:
        n_0.
    output_dim:
        n_L (default 1).
    C_b, C_W:
        Bias and weight variances, scalars or one per layer (ℓ = 1 … L).
    lambda_b, lambda_W:
        Learning-rate multipliers of the book's per-layer convention (ch. 8), scalars or per layer.
    skip:
        γ of the residual connection z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γ z^{(ℓ)} (book eq. B.3, ξ = 1).
        A scalar applies to every layer ℓ ≥ 2 whose input and output widths agree (hidden to
        hidden, and the output layer if output_dim equals the last hidden width); one value per
        layer (L values, the first 0 since layer 1 reads the input x; or the L − 1 values of
        layers 2…L), nonzero only where n_ℓ = n_{ℓ−1}. 0 (default) is the plain MLP. Stored as
        L floats (``skip[ℓ−1]`` = γ^{(ℓ)}).

    Examples
    --------
    >>> net = pdlt.MLP(activation="tanh", depth=10, width=256, input_dim=3, C_W=1.0)
    >>> net.widths
    (3, 256, 256, 256, 256, 256, 256, 256, 256, 256, 1)
    """

    activation: Activation | str | TorchFn
    depth: int
    width: int | Sequence[int]
    input_dim: int
    output_dim: int = 1
    C_b: PerLayer = 0.0
    C_W: PerLayer = 1.0
    lambda_b: PerLayer = 1.0
    lambda_W: PerLayer = 1.0
    skip: PerLayer = 0.0
    widths: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "activation", activation(self.activation))
        depth = _positive_int("depth", self.depth)
        set_(self, "depth", depth)
        set_(self, "input_dim", _positive_int("input_dim", self.input_dim))
        set_(self, "output_dim", _positive_int("output_dim", self.output_dim))
        if isinstance(self.width, (Sequence, np.ndarray)) and not isinstance(self.width, str):
            hidden = tuple(_positive_int("width", w) for w in self.width)
            if len(hidden) != depth - 1:
                raise ValueError(
                    f"width as a sequence needs the {depth - 1} hidden widths n_1..n_{depth - 1} "
                    f"of a depth-{depth} network, got {len(hidden)}"
                )
        else:
            hidden = (_positive_int("width", self.width),) * (depth - 1)
        if len(set(hidden)) > 1:
            set_(self, "width", hidden)
        elif hidden:
            set_(self, "width", hidden[0])
        set_(self, "widths", (self.input_dim, *hidden, self.output_dim))
        set_(self, "C_b", _per_layer("C_b", self.C_b, depth, positive=False))
        set_(self, "C_W", _per_layer("C_W", self.C_W, depth, positive=True))
        set_(self, "lambda_b", _per_layer("lambda_b", self.lambda_b, depth, positive=False))
        set_(self, "lambda_W", _per_layer("lambda_W", self.lambda_W, depth, positive=False))
        set_(self, "skip", _skips(self.skip, self.widths))

    def with_(self, **changes: object) -> MLP:
        """A copy with some fields changed (validated again)."""
        fields = {
            "activation": self.activation,
            "depth": self.depth,
            "width": self.width,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "C_b": self.C_b,
            "C_W": self.C_W,
            "lambda_b": self.lambda_b,
            "lambda_W": self.lambda_W,
            "skip": self.skip,
        }
        if "depth" in changes and "width" not in changes and not isinstance(self.width, int):
            raise ValueError("changing depth of a network with per-layer widths needs new widths")
        if "depth" in changes:
            for k in ("C_b", "C_W", "lambda_b", "lambda_W"):
                if k not in changes and len(set(fields[k])) == 1:
                    fields[k] = fields[k][0]

        if "skip" not in changes:
            fields["skip"] = _uniform_skip(self.skip, self.widths)
        fields.update(changes)
        return MLP(**fields)

    def describe(self) -> dict[str, object]:
        """The spec as a flat dict of printable values (for tables and reports)."""

        def short(v: tuple[float, ...]) -> object:
            return v[0] if len(set(v)) == 1 else list(v)

        return {
            "activation": repr(self.activation),
            "depth L": self.depth,
            "widths n_0..n_L": list(self.widths),
            "C_b": short(self.C_b),
            "C_W": short(self.C_W),
            "lambda_b": short(self.lambda_b),
            "lambda_W": short(self.lambda_W),
            "skip γ": _uniform_skip(self.skip, self.widths),
        }

    @property
    def residual(self) -> bool:
        """Whether any layer has a residual connection (γ ≠ 0)."""
        return any(g != 0.0 for g in self.skip)

    def torch_module(
        self, *, seed: int | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.nn.Sequential:
        """One real network of this spec as ``nn.Sequential`` of ``nn.Linear`` and the activation,
        initialized with W ~ N(0, C_W/n_{ℓ−1}), b ~ N(0, C_b). A residual layer (γ ≠ 0) is a
        :class:`ResidualBlock` whose forward is γ·z + Linear(σ(z)) (eq. B.3), so the Sequential
        is Linear, ResidualBlock, …; plain layers are Linear, activation, Linear, …."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        layers: list[torch.nn.Module] = []
        for ell in range(self.depth):
            n_in, n_out = self.widths[ell], self.widths[ell + 1]
            lin = torch.nn.Linear(n_in, n_out, dtype=dtype)
            with torch.no_grad():
                lin.weight.normal_(0.0, math.sqrt(self.C_W[ell] / n_in), generator=gen)
                lin.bias.normal_(0.0, math.sqrt(self.C_b[ell]), generator=gen)
            if self.skip[ell] != 0.0:
                # the block reads the previous preactivation: drop the activation just appended
                layers.pop()
                layers.append(ResidualBlock(lin, self.activation, self.skip[ell]))
            else:
                layers.append(lin)
            if ell < self.depth - 1:
                layers.append(_ActivationModule(self.activation))
        return torch.nn.Sequential(*layers)


def _skips(value: PerLayer, widths: tuple[int, ...]) -> tuple[float, ...]:
    """``skip`` → L floats γ^{(1)}…γ^{(L)}: a scalar on every layer ℓ ≥ 2 with n_ℓ = n_{ℓ−1};
    a sequence of L (first 0) or L − 1 (layers 2…L) values, nonzero only where widths agree."""
    depth = len(widths) - 1
    same = [ell >= 1 and widths[ell] == widths[ell + 1] for ell in range(depth)]
    if isinstance(value, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(value, str):
        n = len(value)
        if n == depth - 1 and depth > 1:
            value = [0.0, *list(value.tolist() if hasattr(value, "tolist") else value)]
        elif n != depth:
            raise ValueError(
                f"skip needs one value per layer ({depth}, the first 0) or per layer 2…L "
                f"({depth - 1}), got {n}"
            )
        gammas = _validation.per_layer("skip", value, depth)
        for ell, g in enumerate(gammas):
            if g != 0.0 and not same[ell]:
                where = (
                    "layer 1 reads the input x, not a preactivation"
                    if ell == 0
                    else f"n_{ell} = {widths[ell]} ≠ n_{ell + 1} = {widths[ell + 1]}"
                )
                raise ValueError(
                    f"skip[{ell}] = {g:g} (layer {ell + 1}) needs equal input and output widths, "
                    f"but {where}; use 0 there"
                )
        return gammas
    g = _validation.real("skip", value)
    return tuple(g if s else 0.0 for s in same)


def _uniform_skip(skip: tuple[float, ...], widths: tuple[int, ...]) -> PerLayer:
    """The scalar that ``skip`` came from when one reproduces it on ``widths``, else the tuple
    (so that ``with_(depth=…)`` keeps a scalar γ)."""
    nonzero = {g for g in skip if g != 0.0}
    g = nonzero.pop() if len(nonzero) == 1 else 0.0
    return g if not len(nonzero) and _skips(g, widths) == skip else list(skip)


class ResidualBlock(torch.nn.Module):
    """One residual layer z ↦ γ z + W σ(z) + b (book eq. B.3 with ξ = 1).

    ``linear`` holds W and b; ``gamma`` is a Python float (a fixed hyperparameter, not trained).
    :func:`pdlt.init.critical_` recognises this block.
    """

    def __init__(self, linear: torch.nn.Linear, act: Activation | TorchFn, gamma: float) -> None:
        super().__init__()
        self.linear = linear
        self.act = act
        self.gamma = float(gamma)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.act(z)) + self.gamma * z

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:g}, act={self.act!r}"


class _ActivationModule(torch.nn.Module):
    def __init__(self, act: Activation) -> None:
        super().__init__()
        self.act = act

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.act(z)

    def extra_repr(self) -> str:
        return repr(self.act)


def require_plain(net: MLP, what: str) -> None:
    """NotImplementedError when ``net`` has residual layers and ``what`` has no residual form yet."""
    if net.residual:
        raise NotImplementedError(
            f"{what} is not derived for residual MLPs yet (skip = {list(net.skip)}); "
            "kernel, four_point_vertex, kernel_correction, metric, ntk and (one input) "
            "ntk_fluctuations and dntk are"
        )


def validate_inputs(net: MLP, x: object) -> torch.Tensor:
    """Check an input set against a network and return it as a float64 (N, n_0) tensor
    (the rules of :func:`pdlt._validation.as_inputs`)."""
    return _validation.as_inputs(net.input_dim, x)
